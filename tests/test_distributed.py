"""Multi-process training through the real torchrun entry point (2 CPU processes, Gloo), and its pieces.

Tolerance against the 1-process run: with BatchNorm over the global batch and each rank's loss scaled to its
share of the global batch, the 2-process step is the same arithmetic as the 1-process step; only the order of
floating-point sums differs (per-shard convolutions and reductions, the all-reduce, 1 thread per process
instead of 2). Over one epoch of a few steps that moves float32 results by ~1e-6 relative; we allow 1e-4.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import distributed
import pruning
from distributed import World

ROOT = Path(__file__).resolve().parent.parent


def torchrun(*argv: str, script: str = "train_mnist.py", nproc: int = 2, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def tiny(data_dir, out, *extra: str) -> list[str]:
    return ["--data-dir", str(data_dir), "--no-download", "--width", "8", "--batch-size", "32", "--val-fraction",
            "0.1", "--out", str(out), "--device", "cpu", "--target-sparsity", "0.5", *extra]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def test_shards_partition_every_batch():
    for n in (0, 1, 5, 32, 33):
        for size in (1, 2, 3, 4):
            parts = [distributed.shard(n, World(rank, size)) for rank in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


def test_mask_checksum_sees_a_moved_entry():
    net = nn.Linear(6, 4)
    params = [(net, "weight")]
    pruning.global_magnitude_prune(params, 0.5)
    before = distributed.mask_checksum(params)
    with torch.no_grad():
        flat = net.weight_mask.view(-1)
        on, off = int(torch.nonzero(flat)[0]), int(torch.nonzero(flat == 0)[0])
        flat[on], flat[off] = 0.0, 1.0  # same count, another entry
    assert distributed.mask_checksum(params) != before


def _mismatch_worker(rank: int, init_file: str, results: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    net = nn.Linear(4, 4)
    with torch.no_grad():
        order = torch.arange(16.0) if rank == 0 else torch.arange(16.0).flip(0)
        net.weight.copy_(order.view(4, 4) + 1.0)
    params = [(net, "weight")]
    pruning.global_magnitude_prune(params, 0.5)  # rank 1's weights rank differently: another mask
    try:
        distributed.check_masks(params, World(rank, 2, rank, "gloo"), "in the test")
        outcome = "passed"
    except distributed.MaskMismatch as e:
        outcome = str(e)
    Path(results, f"rank{rank}").write_text(outcome)
    torch.distributed.destroy_process_group()


def test_different_masks_on_two_ranks_stop_both(tmp_path):
    mp.spawn(_mismatch_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        assert "the ranks' masks differ in the test" in (tmp_path / f"rank{rank}").read_text()


def test_two_processes_train_one_run_like_one_process(mnist_idx_dir, tmp_path):
    done = torchrun(*tiny(mnist_idx_dir, tmp_path / "two", "--epochs", "2"))
    assert done.returncode == 0, done.stderr[-2000:]
    results = list((tmp_path / "two").rglob("*.json"))
    assert [p.name for p in results] == ["seed42.json"]  # one result, written by rank 0
    two = read_json(results[0])
    assert (two["world_size"], two["backend"], two["batchnorm"]) == (2, "gloo", "global batch")
    n = two["params_prunable"]
    assert n - two["params_nonzero"] == round(0.5 * n)  # exact final sparsity
    assert len(two["mask_checks"]) == 2 and all(len(set(m["checksums"])) == 1 and len(m["checksums"]) == 2
                                                for m in two["mask_checks"])
    one = subprocess.run([sys.executable, "train_mnist.py", *tiny(mnist_idx_dir, tmp_path / "one", "--epochs", "2")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    one = read_json(next((tmp_path / "one").rglob("*.json")))
    assert one["world_size"] == 1 and one["backend"] == "none"
    assert two["history"][0]["train_loss"] == pytest.approx(one["history"][0]["train_loss"], rel=1e-4)
    assert two["history"][0]["train_accuracy"] == pytest.approx(one["history"][0]["train_accuracy"], abs=1.0)
    assert two["mask_checks"][0]["checksums"][0] == one["mask_checks"][0]["checksums"][0]  # same (dense) mask


def test_a_killed_torchrun_job_resumes_to_the_same_result(mnist_idx_dir, tmp_path):
    args = ("--epochs", "5", "--seed", "3")
    whole = torchrun(*tiny(mnist_idx_dir, tmp_path / "whole", *args))
    assert whole.returncode == 0, whole.stderr[-2000:]
    job = torchrun(*tiny(mnist_idx_dir, tmp_path / "killed", *args), wait=False)
    ckpt = tmp_path / "killed" / "mnist" / "progressive-0.5" / "seed3.ckpt.pt"
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] >= 1:
            job.send_signal(signal.SIGTERM)  # as a scheduler stops a job: torchrun stops both workers
            break
        time.sleep(0.05)
    job.wait()
    time.sleep(2)  # had a worker survived, it would write its result now
    assert job.returncode != 0 and not ckpt.with_name("seed3.json").exists() and ckpt.exists()
    again = torchrun(*tiny(mnist_idx_dir, tmp_path / "killed", *args))
    assert again.returncode == 0 and "resuming" in again.stdout, again.stderr[-2000:]
    a = read_json(tmp_path / "whole" / "mnist" / "progressive-0.5" / "seed3.json")
    b = read_json(tmp_path / "killed" / "mnist" / "progressive-0.5" / "seed3.json")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"]) and a["test_loss"] == b["test_loss"]
    assert a["mask_checks"] == b["mask_checks"]


def test_every_method_runs_under_torchrun(mnist_idx_dir, tmp_path):
    done = torchrun("--dataset", "mnist", "--method", "snip", *tiny(mnist_idx_dir, tmp_path, "--epochs", "1"),
                    script="train_baseline.py")
    assert done.returncode == 0, done.stderr[-2000:]
    result = read_json(tmp_path / "mnist" / "snip-0.5" / "seed42.json")
    assert result["world_size"] == 2 and result["history"][0]["sparsity"] == round(0.5 * 175_048) / 175_048


def test_a_global_batch_the_processes_cannot_share_is_refused(mnist_idx_dir, tmp_path):
    done = torchrun(*tiny(mnist_idx_dir, tmp_path, "--epochs", "1", "--batch-size", "33"))
    assert done.returncode != 0
    assert "error: --batch-size 33 (the global batch) is not divisible by the 2 processes" in done.stderr
    assert not list(tmp_path.rglob("*.json"))
