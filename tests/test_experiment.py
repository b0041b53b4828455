"""End-to-end runs of the three scripts on tiny data in the real on-disk formats: the result JSON, exact
resume after a kill, refusals of bad input, and a short real-data run on Fashion-MNIST when it is installed."""

import json
import os

import pytest
import torch

import pruning
from harness import loop, results
import train_baseline
import train_cifar10
import train_dense
import train_mnist
from conftest import FASHION_MNIST_DIR
from helpers import (STEP_BUDGET, assert_bit_identical, kill_after_checkpoint, load_model, read_json,
                     tiny as tiny_run, whole_and_resumed)
from harness.networks import ResNet18

SCRIPTS = {"cifar10": train_cifar10.SCRIPT, "mnist": train_mnist.SCRIPT, "dense": train_dense.SCRIPT}
REQUIRED_KEYS = {
    "schema", "script", "dataset", "method", "seed", "target_sparsity", "final_sparsity", "test_accuracy",
    "test_loss", "best_val_accuracy", "best_val_epoch", "params_total", "params_prunable", "params_nonzero",
    "per_layer", "epochs", "history", "config", "wall_time_s", "device", "versions", "git_commit",
    "label", "epochs_trained", "rounds", "precision",
}
HISTORY_KEYS = set(results.HISTORY_KEYS)


def run(script: str, *argv: str) -> int:
    return loop.main(SCRIPTS[script], list(argv))


def tiny(data_dir, out, *extra: str) -> list[str]:
    return tiny_run(data_dir, out, *extra, epochs=2)


def check_result(result: dict, epochs: int) -> None:
    assert REQUIRED_KEYS <= set(result)
    assert result["schema"] == results.SCHEMA and result["epochs"] == epochs
    assert len(result["history"]) == result["epochs_trained"] == epochs * result["rounds"]
    assert result["config"]["precision"] in ("fp32", "bf16") and result["config"]["precision"] == result["precision"]
    assert all(HISTORY_KEYS <= set(row) for row in result["history"])
    assert 0.0 <= result["test_accuracy"] <= 100.0 and result["test_loss"] > 0
    assert result["versions"]["torch"] == torch.__version__
    assert {"seed", "epochs", "batch_size", "lr", "width", "data_dir", "out"} <= set(result["config"])
    n = result["params_prunable"]
    # Final sparsity equals the target to the weight: exactly round(target * N) masked.
    assert n - result["params_nonzero"] == round(result["target_sparsity"] * n)
    assert result["final_sparsity"] == pytest.approx(round(result["target_sparsity"] * n) / n, abs=1e-12)
    assert result["history"][0]["sparsity"] == 0.0  # the first epoch is dense


def test_train_cifar10_end_to_end(cifar10_root, tmp_path):
    assert run("cifar10", *tiny(cifar10_root, tmp_path)) == 0
    folder = tmp_path / "cifar10" / "progressive-0.796"
    result = read_json(folder / "seed42.json")
    check_result(result, epochs=2)
    assert result["dataset"] == "cifar10" and result["method"] == "progressive" and result["target_sparsity"] == 0.796
    assert result["history"][-1]["sparsity"] == result["final_sparsity"]  # the last epoch trains at the target
    assert not (folder / "seed42.ckpt.pt").exists()
    # The final model has pruning made permanent: it loads strictly into a plain ResNet-18.
    plain = ResNet18(in_channels=3, width=8)
    plain.load_state_dict(load_model(folder / "seed42.model.pt"))  # the two lines README shows
    zeros = sum(int((m.weight == 0).sum()) for m, _ in pruning.prunable_parameters(plain))
    assert zeros == result["params_prunable"] - result["params_nonzero"]


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_train_mnist_end_to_end(mnist_idx_dir, tmp_path, dataset):
    assert run("mnist", "--dataset", dataset, *tiny(mnist_idx_dir, tmp_path, "--target-sparsity", "0.5")) == 0
    result = read_json(tmp_path / dataset / "progressive-0.5" / "seed42.json")
    check_result(result, epochs=2)
    assert result["dataset"] == dataset and result["per_layer"][0]["shape"] == [8, 1, 3, 3]


def test_train_dense_end_to_end(cifar10_root, tmp_path):
    assert run("dense", "--dataset", "cifar10", *tiny(cifar10_root, tmp_path)) == 0
    result = read_json(tmp_path / "cifar10" / "dense" / "seed42.json")
    check_result(result, epochs=2)
    assert result["method"] == "dense" and result["final_sparsity"] == 0.0
    assert result["params_nonzero"] == result["params_prunable"]
    # Dense and pruned runs differ in the pruning only: same init, data and batches, so their first
    # (still dense) epoch is identical.
    assert run("cifar10", *tiny(cifar10_root, tmp_path)) == 0
    pruned = read_json(tmp_path / "cifar10" / "progressive-0.796" / "seed42.json")
    first = lambda r: {k: v for k, v in r["history"][0].items() if k != "seconds"}  # noqa: E731
    assert first(pruned) == first(result)


def test_cubic_schedule_reaches_the_target(mnist_idx_dir, tmp_path):
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--schedule", "cubic", "--epochs", "3")) == 0
    result = read_json(tmp_path / "mnist" / "progressive-cubic-0.744" / "seed42.json")  # not the linear run's folder
    check_result(result, epochs=3)
    assert result["label"] == "progressive-cubic" and result["config"]["schedule"] == "cubic"
    assert result["history"][1]["scheduled_sparsity"] == pytest.approx(0.744 * (1 - 0.5 ** 3))


RESUMES = {  # a run killed right after a checkpoint and rerun ends bit-identical to one never killed (on the CPU)
    # case: (data fixture, script, its flags, results folder, seed, the checkpoint it is killed after)
    "the paper's CIFAR-10 script, after epoch 2 of 3": (
        "cifar10_root", train_cifar10.SCRIPT, ["--epochs", "3", "--seed", "7"], ("cifar10", "progressive-0.796"), 7,
        lambda state: state["epoch"] == 2),
    "half-way up a step ramp (6 events, at steps 0..15)": (
        "mnist_idx_dir", train_baseline.SCRIPT, ["--dataset", "mnist", "--method", "progressive", "--epochs", "3",
                                                 "--target-sparsity", "0.8", "--prune-every", "3", "--prune-end", "0.8",
                                                 "--seed", "5"],
        ("mnist", "progressive-every3-end0.8-0.8"), 5, lambda state: state["epoch"] == 1),
    "inside IMP's round 1": (
        "mnist_idx_dir", train_baseline.SCRIPT, ["--dataset", "mnist", "--method", "imp", "--epochs", "2", "--rounds",
                                                 "2", "--target-sparsity", "0.6", "--seed", "3"],
        ("mnist", "imp-r2-0.6"), 3, lambda state: (state["round"], state["epoch"]) == (1, 1)),
    "in the middle of RigL's updates": (
        "mnist_idx_dir", train_baseline.SCRIPT, ["--dataset", "mnist", "--method", "rigl", "--update-every", "2",
                                                 "--epochs", "3", "--seed", "4", "--target-sparsity", "0.5"],
        ("mnist", "rigl-every2-0.5"), 4, lambda state: state["epoch"] == 1),
    "mid-way through a step budget": (
        None, train_baseline.SCRIPT, [*STEP_BUDGET, "--method", "progressive", "--target-sparsity", "0.5"],
        ("mnist", "lenet300-progressive-0.5"), 42, lambda state: state["epoch"] == 1),
}


@pytest.mark.parametrize("case", RESUMES)
def test_a_killed_run_resumes_bit_identically(case, request, tmp_path, monkeypatch):
    fixture, script, flags, folder, seed, kill_when = RESUMES[case]
    if fixture is None:
        argv = lambda out: [*flags, "--out", str(out)]  # noqa: E731
    else:
        data = request.getfixturevalue(fixture)
        argv = lambda out: [*tiny_run(data, out, epochs=3), *flags]  # noqa: E731
    whole, resumed, a, b = whole_and_resumed(monkeypatch, tmp_path, argv, folder, seed, kill_when, script=script)
    assert_bit_identical(whole, resumed, a, b)
    assert whole["early_mask_overlap"] == resumed["early_mask_overlap"]


def test_finished_run_is_skipped_and_force_reruns(mnist_idx_dir, tmp_path, capsys):
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 0
    path = tmp_path / "mnist" / "progressive-0.744" / "seed42.json"
    before = path.read_bytes()
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 0
    assert "skipping" in capsys.readouterr().out and path.read_bytes() == before
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--force")) == 0
    assert read_json(path)["test_accuracy"] == json.loads(before)["test_accuracy"]  # same seed, same result


def poison(monkeypatch, at_epoch: int, what: str):
    """Make epoch ``at_epoch`` (0-based) diverge: NaN weights before training, or NaN weights after it."""
    real_train = loop.train_one_epoch

    def train(run, epoch):
        if epoch == at_epoch and what == "before":
            with torch.no_grad():
                next(run.model.parameters()).fill_(float("nan"))
        out = real_train(run, epoch)
        if epoch == at_epoch and what == "after":  # a finite loss, but the weights end non-finite
            with torch.no_grad():
                run.model.linear.bias.fill_(float("inf"))
        return out
    monkeypatch.setattr(loop, "train_one_epoch", train)


def test_divergence_stops_with_the_last_good_checkpoint_kept(mnist_idx_dir, tmp_path, monkeypatch, capsys):
    poison(monkeypatch, 1, "before")
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "training loss became nan in epoch 2" in err and "checkpoint" in err and "after 1 epochs) is intact" in err
    folder = tmp_path / "mnist" / "progressive-0.744"
    assert not (folder / "seed42.json").exists()
    assert torch.load(folder / "seed42.ckpt.pt", weights_only=True)["epoch"] == 1  # epoch 1's, intact


def test_non_finite_weights_stop_the_run_and_are_never_checkpointed(mnist_idx_dir, tmp_path, monkeypatch, capsys):
    poison(monkeypatch, 0, "after")
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "in epoch 1" in err and "no checkpoint was written" in err and "is intact" not in err
    assert not (tmp_path / "mnist" / "progressive-0.744" / "seed42.ckpt.pt").exists()


def test_missing_data_offline(tmp_path, capsys):
    assert run("cifar10", *tiny(str(tmp_path / "empty"), tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "cifar10 not found under" in err and "--data-dir" in err and err.count("\n") == 1


def test_unwritable_out(mnist_idx_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path / "file")) == 2
    assert "cannot write results to" in capsys.readouterr().err


def test_corrupt_or_foreign_checkpoint_is_refused(mnist_idx_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "mnist" / "progressive-0.744"
    folder.mkdir(parents=True)
    (folder / "seed42.ckpt.pt").write_bytes(b"\x00garbage")
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 2
    assert "is unreadable" in capsys.readouterr().err
    assert (folder / "seed42.ckpt.pt").read_bytes() == b"\x00garbage"  # not deleted behind the user's back
    # A checkpoint of another config (here: another width) is refused, never mixed in.
    (folder / "seed42.ckpt.pt").unlink()
    restore = kill_after_checkpoint(monkeypatch)
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 130
    restore()
    capsys.readouterr()
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--width", "16")) == 2
    assert "different config (width 8 vs 16)" in capsys.readouterr().err


def test_finished_result_of_another_config_is_not_overwritten(mnist_idx_dir, tmp_path, capsys):
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 0
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--epochs", "3")) == 2
    assert "holds a finished run with a different config (epochs 2 vs 3)" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(mnist_idx_dir, tmp_path, capsys):
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--device", "cuda")) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_dense_requires_a_dataset(capsys):
    assert run("dense", "--epochs", "1") == 2
    assert "--dataset" in capsys.readouterr().err


@pytest.mark.slow  # real data, 3 epochs
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason=f"{FASHION_MNIST_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_training_beats_chance(tmp_path):
    argv = ["--dataset", "fashion-mnist", "--data-dir", FASHION_MNIST_DIR, "--no-download", "--width", "8",
            "--epochs", "3", "--train-subset", "3000", "--out", str(tmp_path)]
    assert run("mnist", *argv) == 0
    result = read_json(tmp_path / "fashion-mnist" / "progressive-0.744" / "seed42.json")
    assert result["test_accuracy"] > 60.0  # chance is 10%; measured 76.00-77.19% on the CPUs tried
    assert result["params_prunable"] - result["params_nonzero"] == round(0.744 * result["params_prunable"])


def test_bf16_autocast_path_runs_on_cpu(mnist_idx_dir, tmp_path):
    # The CUDA default (bf16 autocast) exercised on the CPU, so the path is tested without a GPU.
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--precision", "bf16")) == 0
    result = read_json(tmp_path / "mnist" / "progressive-0.744" / "seed42.json")
    check_result(result, epochs=2)
    assert result["precision"] == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_cuda_end_to_end(cifar10_root, tmp_path):
    assert run("cifar10", *tiny(cifar10_root, tmp_path, "--device", "cuda")) == 0  # the later flag wins
    result = read_json(tmp_path / "cifar10" / "progressive-0.796" / "seed42.json")
    check_result(result, epochs=2)
    assert result["precision"] == "bf16" and result["device"].startswith("cuda")


def test_a_run_started_in_fp32_is_not_resumed_in_bf16(mnist_idx_dir, tmp_path, monkeypatch, capsys):
    restore = kill_after_checkpoint(monkeypatch)
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 130  # auto on the CPU: fp32
    restore()
    capsys.readouterr()
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--precision", "bf16")) == 2
    assert "different config (precision 'fp32' vs 'bf16')" in capsys.readouterr().err
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--precision", "fp32")) == 0  # same as auto here: resumes
    assert read_json(tmp_path / "mnist" / "progressive-0.744" / "seed42.json")["config"]["precision"] == "fp32"


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from types import SimpleNamespace

    from harness.distributed import World
    run_ = SimpleNamespace(world=World())
    batches = iter(range(3))
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert loop.progress(batches, run_, 3, "epoch 1") is batches  # logs and CI: unchanged lines
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    bar = loop.progress(batches, run_, 3, "epoch 1")
    assert type(bar).__name__ == "tqdm" and bar.total == 3
    bar.close()
    assert loop.progress(batches, SimpleNamespace(world=World(rank=1, size=2)), 3, "x") is batches
