"""What must never happen to a run or a result: a crash of the CPU kernels, two processes in one run folder, a
result mislabelled or lost, a traceback for bad input or a failed write, a folder or partial file left behind."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from harness import config, data, loop, runfolder
from harness.run import build_model
import train_dense
import train_mnist
from helpers import ROOT, baseline as baseline_run, kill_after_checkpoint, run, script, tiny as tiny_run, torchrun


def tiny(data_dir, out, *extra: str) -> list[str]:
    return tiny_run(data_dir, out, *extra, epochs=2)  # the write-failure tests count the checkpoints


def baseline(method: str, data_dir, out, *extra: str) -> list[str]:
    return baseline_run(method, data_dir, out, *extra, epochs=2)


# ----------------------------------------------------------------------------------------------------------
# The CPU memory layout

@pytest.mark.slow  # its own processes
@pytest.mark.parametrize("width", ["4", "8"])
def test_thin_cpu_runs_with_an_odd_last_batch_finish_and_compile_is_refused(tmp_path, capsys, width):
    # 300 images -> 267 training images at batch 32: a last batch of 11. With channels_last this very run hung
    # (width 4, AVX2) or crashed (SIGSEGV, AVX512). Its own process: a heap corruption must not take pytest down.
    argv = ["--dataset", "mnist", "--dummy", "--width", width, "--epochs", "1", "--train-subset", "300",
            "--device", "cpu", "--out", str(tmp_path)]
    done = script(*argv)
    assert done.returncode == 0, done.stderr[-2000:]
    assert run(*argv, "--compile", "--force", script=train_dense.SCRIPT) == 2
    err = capsys.readouterr().err
    assert "--compile is refused on the CPU" in err and err.count("\n") == 1


def test_the_cpu_layout_is_contiguous_unless_asked(mnist_idx_dir):
    cfg = config.Config(dataset="mnist", method="dense", width=8)
    d = data.prepare_data("mnist", mnist_idx_dir, download=False, dummy=False, val_fraction=0.1,
                                     train_subset=None, seed=0, device=torch.device("cpu"))
    cpu = torch.device("cpu")
    model, _ = build_model(cfg, d, cpu, prunes=False)
    assert all(p.is_contiguous() for p in model.parameters())
    model, _ = build_model(cfg.replace(channels_last=True), d, cpu, prunes=False)
    kernel = model.layer1[0].conv1.weight  # 8 -> 8 channels, 3x3: the two layouts differ
    assert kernel.is_contiguous(memory_format=torch.channels_last) and not kernel.is_contiguous()


# ----------------------------------------------------------------------------------------------------------
# One process per run folder

def wait_for(predicate, seconds: float = 120.0) -> None:
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow  # its own processes
def test_a_second_process_for_the_same_run_is_refused_and_a_killed_holder_leaves_no_lock(mnist_idx_dir, tmp_path):
    argv = [*tiny(mnist_idx_dir, tmp_path, "--epochs", "40")]
    first = subprocess.Popen([sys.executable, "train_mnist.py", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "mnist" / "progressive-0.744" / "seed42.lock"
    try:
        wait_for(lambda: lock.exists() and "pid" in lock.read_text())
        for extra in ((), ("--lr", "0.05")):  # the same command, and another recipe in the same folder
            second = script(*argv, *extra, name="train_mnist.py")
            assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
            assert f"another process is running this run (pid {first.pid} on" in second.stderr
        assert first.poll() is None  # the first was never disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    fd = runfolder.acquire_lock(str(lock))  # kill -9 left the file, not the lock
    runfolder.release_lock(str(lock), fd)
    assert not lock.exists()


@pytest.mark.slow  # its own processes
def test_under_torchrun_every_rank_stops_when_the_run_is_held(mnist_idx_dir, tmp_path):
    folder = tmp_path / "mnist" / "progressive-0.5"
    folder.mkdir(parents=True)
    fd = runfolder.acquire_lock(str(folder / "seed42.lock"))
    try:
        done = torchrun(*tiny_run(mnist_idx_dir, tmp_path, "--target-sparsity", "0.5", epochs=1))
    finally:
        runfolder.release_lock(str(folder / "seed42.lock"), fd)
    assert done.returncode != 0 and done.stderr.count("another process is running this run") == 1, done.stderr
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.pt"))


def test_a_result_of_another_recipe_that_appears_meanwhile_is_not_overwritten(mnist_idx_dir, tmp_path, capsys,
                                                                            monkeypatch):
    path = tmp_path / "mnist" / "progressive-0.744" / "seed42.json"
    real = loop.evaluate

    def other_run_finishes_first(run_, split):  # the test-set evaluation is the last step before writing
        if split is run_.data.test and not path.exists():
            path.write_text(json.dumps({"schema": 2, "config": {**run_.config.to_dict(), "lr": 0.05}}))
        return real(run_, split)
    monkeypatch.setattr(loop, "evaluate", other_run_finishes_first)
    assert run(*tiny(mnist_idx_dir, tmp_path), script=train_mnist.SCRIPT) == 1
    err = capsys.readouterr().err
    assert "not writing this run's result" in err and "lr 0.05 vs 0.1" in err and err.count("\n") == 1
    assert json.loads(path.read_text())["config"]["lr"] == 0.05
    assert "is intact" in err and path.with_name("seed42.ckpt.pt").exists()


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing left behind (the single-process cases: test_bad_input.py)

@pytest.mark.slow  # its own processes
def test_bad_flag_under_torchrun_is_printed_once(mnist_idx_dir, tmp_path):
    done = torchrun(*tiny_run(mnist_idx_dir, tmp_path, epochs=0))
    assert done.returncode != 0 and done.stderr.count("error: --epochs must be positive, got 0") == 1, done.stderr


# ----------------------------------------------------------------------------------------------------------
# Failed writes and partial files

def failing_fsync(monkeypatch, fail_at: int, code: int):
    """os.fsync that fails with ``code`` (ENOSPC, EIO) on its ``fail_at``-th call (1-based) and after."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= fail_at:
            raise OSError(code, os.strerror(code))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_one(mnist_idx_dir, tmp_path, capsys,
                                                                         monkeypatch, code):
    failing_fsync(monkeypatch, fail_at=2, code=code)  # the checkpoint after epoch 2
    assert run(*tiny(mnist_idx_dir, tmp_path), script=train_mnist.SCRIPT) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"could not write {tmp_path}/mnist/progressive-0.744/seed42.ckpt.pt ({os.strerror(code)})" in err
    assert "the last good checkpoint" in err and "after 1 epochs) is intact" in err
    folder = tmp_path / "mnist" / "progressive-0.744"
    assert torch.load(folder / "seed42.ckpt.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["seed42.ckpt.pt"]  # no partial file, no lock


def test_a_failed_result_write_keeps_the_checkpoint_and_a_rerun_writes_it(mnist_idx_dir, tmp_path, capsys,
                                                                         monkeypatch):
    failing_fsync(monkeypatch, fail_at=4, code=errno.ENOSPC)  # 2 checkpoints, the model file, then the JSON
    assert run(*tiny(mnist_idx_dir, tmp_path), script=train_mnist.SCRIPT) == 1
    assert "seed42.json (No space left on device)" in capsys.readouterr().err
    monkeypatch.undo()
    assert run(*tiny(mnist_idx_dir, tmp_path), script=train_mnist.SCRIPT) == 0
    assert "resuming" in capsys.readouterr().out
    folder = tmp_path / "mnist" / "progressive-0.744"
    assert sorted(p.name for p in folder.iterdir()) == ["seed42.json", "seed42.model.pt"]


def test_stale_temp_files_of_this_run_are_removed_and_others_kept(mnist_idx_dir, tmp_path):
    folder = tmp_path / "mnist" / "progressive-0.744"
    folder.mkdir(parents=True)
    mine = [folder / ".tmp-abcd1234seed42.ckpt.pt", folder / ".tmp-wxyz0000seed42.json"]
    theirs = [folder / ".tmp-abcd1234seed142.ckpt.pt", folder / ".tmp-abcd1234seed4.json", folder / "notes.txt"]
    for path in mine + theirs:
        path.write_bytes(b"partial")
    assert run(*tiny(mnist_idx_dir, tmp_path, "--epochs", "1"), script=train_mnist.SCRIPT) == 0
    assert not any(p.exists() for p in mine) and all(p.exists() for p in theirs)


def test_an_error_after_the_folder_was_made_removes_only_what_it_made(mnist_idx_dir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("a user's file")
    assert run(*baseline("snip", mnist_idx_dir, tmp_path / "out", "--score-batches", "99")) == 2
    assert "--score-batches 99 is more than" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


# ----------------------------------------------------------------------------------------------------------
# The ticket's donor is part of its recipe

@pytest.fixture(scope="module")
def two_donors(mnist_data, tmp_path_factory):
    """Two finished progressive runs (seeds 42 and 43) to take masks from: made once, copied by each test."""
    out = tmp_path_factory.mktemp("donors")
    for seed in ("42", "43"):
        assert run(*tiny(mnist_data, out, "--target-sparsity", "0.7", "--seed", seed), script=train_mnist.SCRIPT) == 0
    return out / "mnist" / "progressive-0.7"


@pytest.fixture
def donors(two_donors, tmp_path):
    """This test's own copy of the two donors (a test may damage one)."""
    folder = shutil.copytree(two_donors, tmp_path / "donor")
    return folder / "seed42.json", folder / "seed43.json"


def test_another_donor_never_resumes_or_skips_a_ticket(mnist_idx_dir, tmp_path, donors, capsys, monkeypatch):
    first, other = donors
    ticket = lambda donor: baseline("ticket", mnist_idx_dir, tmp_path / "t", "--mask-from", str(donor))  # noqa: E731
    restore = kill_after_checkpoint(monkeypatch)
    assert run(*ticket(first)) == 130
    restore()
    capsys.readouterr()
    assert run(*ticket(other)) == 2  # a checkpoint of the seed-42 mask is not resumed with the seed-43 mask
    err = capsys.readouterr().err
    assert "different config (donor_id 'seed42-mask-" in err and "vs 'seed43-mask-" in err
    assert run(*ticket(first)) == 0 and "resuming" in capsys.readouterr().out
    result = json.loads((tmp_path / "t" / "mnist" / "ticket-donor-progressive-0.7" / "seed42.json").read_text())
    assert result["config"]["donor_id"].startswith("seed42-mask-")
    assert run(*ticket(other)) == 2  # nor is the finished one skipped
    assert "holds a finished run with a different config (donor_id" in capsys.readouterr().err


def test_a_damaged_donor_model_is_one_line(mnist_idx_dir, tmp_path, donors, capsys):
    donor = donors[0]
    model = donor.with_name("seed42.model.pt")
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated
    assert run(*baseline("ticket", mnist_idx_dir, tmp_path / "t", "--mask-from", str(donor))) == 2
    err = capsys.readouterr().err
    assert f"--mask-from {donor}: its model file {model} is unreadable" in err and err.count("\n") == 1, err
    assert not (tmp_path / "t").exists()

