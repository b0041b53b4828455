"""Multi-process training through the real torchrun entry point (2 CPU processes, Gloo), and its pieces.

What must hold on every CPU: with BatchNorm over the global batch and each rank's loss scaled to its share of
the global batch, the 2-process step is the same arithmetic as the 1-process step; only the order of
floating-point sums differs (per-shard convolutions and reductions, the all-reduce). So the *first* step's loss
and gradients are compared, before any update can amplify that rounding (float32: ~1e-6 relative; allowed
1e-4), and masks and counts exactly. A whole epoch at lr 0.1 amplifies rounding by a factor that depends on the
CPU's kernels, so no whole-epoch float is compared.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from harness import config as config_module, data, distributed, loop, methods
import pruning
from harness.distributed import World
from harness.run import make_run
from helpers import ROOT, N_PRUNABLE, read_json, strip_times, tiny as tiny_run, torchrun

slow = pytest.mark.slow  # several processes


def tiny(data_dir, out, *extra: str) -> list[str]:
    return tiny_run(data_dir, out, "--target-sparsity", "0.5", *extra)  # epochs: given by each test


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


@slow
def test_different_masks_on_two_ranks_stop_both(tmp_path):
    mp.spawn(_mismatch_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        assert "the ranks' masks differ in the test" in (tmp_path / f"rank{rank}").read_text()


@slow
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
    assert two["mask_checks"][0]["checksums"][0] == one["mask_checks"][0]["checksums"][0]  # same (dense) mask
    assert two["params_nonzero"] == one["params_nonzero"] and len(two["history"]) == len(one["history"])


def first_step(rank: int, size: int, data_dir: str, init_file: str | None) -> dict:
    """The harness's first training step (forward_backward on the first global batch) in a world of ``size``:
    the global batch's mean loss and every parameter's gradient (DDP's average over ranks)."""
    world = World()
    if size > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
        world = World(rank, size, rank, "gloo")
    config = config_module.Config(dataset="mnist", method="progressive", width=8, batch_size=32, seed=42,
                                  data_dir=data_dir, no_download=True, val_fraction=0.1, device="cpu",
                                  options=methods.Progressive.Options())
    config = methods.complete(config).replace(precision="fp32")
    run = make_run(config, methods.create(config), torch.device("cpu"), {"checkpoint": ""}, world)
    run.train_net.train()
    x, y = next(data.iterate_batches(*run.data.train, 32, run.data.train_transform, data.epoch_generator(42, 0)))
    loss, _, shard = loop.forward_backward(run, x, y)
    total = distributed.all_reduce_sum((loss * shard.shape[0] / y.shape[0]).double().reshape(1), world)
    grads = {name: p.grad.clone() for name, p in run.model.named_parameters()}
    if size > 1:
        torch.distributed.destroy_process_group()
    return {"loss": float(total), "grads": grads}


def _first_step_worker(rank: int, data_dir: str, init_file: str, out: str) -> None:
    torch.save(first_step(rank, 2, data_dir, init_file), Path(out, f"rank{rank}.pt"))


@slow
def test_the_first_step_on_two_processes_is_the_one_process_step(mnist_idx_dir, tmp_path):
    mp.spawn(_first_step_worker, args=(mnist_idx_dir, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    one = first_step(0, 1, mnist_idx_dir, None)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["loss"] == ranks[1]["loss"] == pytest.approx(one["loss"], rel=1e-5)
    for name, grad in one["grads"].items():
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name  # DDP: the same on every rank
        scale = float(grad.abs().max())
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-4, atol=1e-4 * scale, msg=name)


def _empty_shard_worker(rank: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    images = torch.randn(3, 4, 5, 5)
    bn = distributed.GlobalBatchNorm2d(4)
    x = (images if rank == 0 else images[:0]).requires_grad_()  # rank 1: an empty shard
    out_ = bn(x)
    (out_.square().sum() if rank == 0 else out_.sum() * 0.0).backward()
    torch.save({"stats": (bn.running_mean, bn.running_var), "grad": (bn.weight.grad, bn.bias.grad), "out": out_.detach()},
               Path(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@slow
def test_an_empty_shard_adds_nothing_to_global_batchnorm(tmp_path):
    mp.spawn(_empty_shard_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    images = torch.randn(3, 4, 5, 5)
    plain = nn.BatchNorm2d(4)
    out = plain(images)
    out.square().sum().backward()
    got = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for rank in (0, 1):
        torch.testing.assert_close(got[rank]["stats"][0], plain.running_mean)
        torch.testing.assert_close(got[rank]["stats"][1], plain.running_var)  # no copied image in the statistics
    for i, param in enumerate((plain.weight, plain.bias)):  # DDP sums the ranks' parameter gradients
        torch.testing.assert_close(got[0]["grad"][i] + got[1]["grad"][i], param.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0]["out"], out.detach())
    assert got[1]["out"].shape == (0, 4, 5, 5)


@slow
def test_a_last_global_batch_smaller_than_the_world_trains(mnist_idx_dir, tmp_path):
    # 97 training images at batch 32: a last global batch of 1, so rank 1's shard of it is empty.
    done = torchrun(*tiny(mnist_idx_dir, tmp_path, "--epochs", "1", "--train-subset", "97", "--val-fraction", "0"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(read_json(next(tmp_path.rglob("seed42.json")))["mask_checks"][0]["checksums"]) == 2


FOLDER = "progressive-every4-end0.7-0.5"


@slow
def test_a_killed_torchrun_job_resumes_to_the_same_result(mnist_idx_dir, tmp_path):
    # a step schedule: masks change inside epochs, and every rank's masks are compared after each event
    args = ("--epochs", "5", "--seed", "3", "--prune-every", "4", "--prune-end", "0.7")
    whole = torchrun(*tiny(mnist_idx_dir, tmp_path / "whole", *args))
    assert whole.returncode == 0, whole.stderr[-2000:]
    job = torchrun(*tiny(mnist_idx_dir, tmp_path / "killed", *args), wait=False)
    ckpt = tmp_path / "killed" / "mnist" / FOLDER / "seed3.ckpt.pt"
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
    a = read_json(tmp_path / "whole" / "mnist" / FOLDER / "seed3.json")
    b = read_json(tmp_path / "killed" / "mnist" / FOLDER / "seed3.json")
    assert strip_times(a["history"]) == strip_times(b["history"]) and a["test_loss"] == b["test_loss"]
    assert a["mask_checks"] == b["mask_checks"] and a["mask_events"] == b["mask_events"]
    assert all(len(m["checksums"]) == 2 and len(set(m["checksums"])) == 1 for m in a["mask_checks"])
    assert [e["step"] for e in a["mask_events"]] == [0, 4, 8, 12, 16, 20, 21]  # end: round(0.7 * 30)
    assert len({m["checksums"][0] for m in a["mask_checks"]}) == 4  # masks moved inside epochs 1-4, then stayed


OTHER_METHODS = {  # flags of every method not run under torchrun elsewhere in this file (progressive, rigl)
    "dense": [], "oneshot": ["--epochs", "2"], "snip": [], "random": ["--distribution", "erk"],
    "imp": ["--rounds", "1"], "set": ["--update-every", "2", "--epochs", "2"], "ticket": [], "grasp": [],
}


@slow
def test_every_method_runs_under_torchrun(mnist_data, tmp_path):
    assert set(OTHER_METHODS) | {"progressive", "rigl"} == set(methods.METHODS)  # every method, here or below
    donor = tmp_path / "mnist" / "progressive-0.5" / "seed42.json"  # the ticket's, made first in the same launch
    runs = [["--method", "progressive", "--target-sparsity", "0.5"]]
    for method, extra in OTHER_METHODS.items():
        target = [] if method in ("dense", "ticket") else ["--target-sparsity", "0.5"]
        runs.append(["--method", method, *target, *extra, *(["--mask-from", str(donor)] if method == "ticket" else [])])
    argv = [arg for run in runs for arg in ["--next", "--dataset", "mnist", *tiny_run(mnist_data, tmp_path, epochs=1),
                                            *run]][1:]
    done = torchrun(*argv, script="tests/several_runs.py")  # one launch: the per-launch start-up paid once
    assert done.returncode == 0, done.stderr[-2000:]
    found = {read_json(p)["method"]: read_json(p) for p in (tmp_path / "mnist").rglob("seed42.json")}
    assert set(found) == set(OTHER_METHODS) | {"progressive"}
    for method, result in found.items():
        target = 0.0 if method == "dense" else 0.5
        assert result["world_size"] == 2 and result["final_sparsity"] == round(target * N_PRUNABLE) / N_PRUNABLE, method
        assert all(len(m["checksums"]) == 2 and len(set(m["checksums"])) == 1 for m in result["mask_checks"]), method
    assert found["imp"]["rounds"] == 2 and [e["kind"] for e in found["ticket"]["mask_events"]] == ["load"]


@slow
def test_rigl_under_torchrun_keeps_identical_masks_through_its_updates(mnist_idx_dir, tmp_path):
    # RigL's dense-gradient scores are all-reduced before ranking; every rank's masks are compared after each
    # update (a mismatch stops the run: test_different_masks_on_two_ranks_stop_both) and before every checkpoint
    done = torchrun("--dataset", "mnist", "--method", "rigl", "--update-every", "2",
                    *tiny(mnist_idx_dir, tmp_path, "--epochs", "2"), script="train_baseline.py")
    assert done.returncode == 0, done.stderr[-2000:]
    result = read_json(tmp_path / "mnist" / "rigl-every2-0.5" / "seed42.json")
    assert [e["step"] for e in result["mask_events"]] == [0, 2, 4, 6, 8]
    assert all(len(m["checksums"]) == 2 and len(set(m["checksums"])) == 1 for m in result["mask_checks"])
    assert result["mask_checks"][0]["checksums"] != result["mask_checks"][1]["checksums"]  # the mask moved
    assert sum(row["regrown"] for row in result["history"]) > 0


@slow
def test_a_global_batch_the_processes_cannot_share_is_refused(mnist_idx_dir, tmp_path):
    done = torchrun(*tiny(mnist_idx_dir, tmp_path, "--epochs", "1", "--batch-size", "33"))
    assert done.returncode != 0
    assert "error: --batch-size 33 (the global batch) is not divisible by the 2 processes" in done.stderr
    assert not list(tmp_path.rglob("*.json"))
