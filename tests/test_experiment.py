"""End-to-end runs of the three scripts on tiny data in the real on-disk formats: the result JSON, exact
resume after a kill, refusals of bad input, and a short real-data run on Fashion-MNIST when it is installed."""

import json
import os

import pytest
import torch

import experiment
import pruning
from pruning import expand_state_dict
import results
import train_cifar10
import train_dense
import train_mnist
from conftest import FASHION_MNIST_DIR, write_mnist_idx_folder
from model import ResNet18

SCRIPTS = {"cifar10": train_cifar10.SCRIPT, "mnist": train_mnist.SCRIPT, "dense": train_dense.SCRIPT}
REQUIRED_KEYS = {
    "schema", "script", "dataset", "method", "seed", "target_sparsity", "final_sparsity", "test_accuracy",
    "test_loss", "best_val_accuracy", "best_val_epoch", "params_total", "params_prunable", "params_nonzero",
    "per_layer", "epochs", "history", "config", "wall_time_s", "device", "versions", "git_commit",
    "label", "epochs_trained", "rounds", "precision",
}
HISTORY_KEYS = set(results.HISTORY_KEYS)


def run(script: str, *argv: str) -> int:
    return experiment.main(SCRIPTS[script], list(argv))


def tiny(data_dir: str, out: str, *extra: str) -> list[str]:
    # CPU by default, also on a GPU machine: resume must be bit-identical, which CUDA kernels do not promise.
    return ["--data-dir", data_dir, "--no-download", "--width", "8", "--epochs", "2", "--batch-size", "32",
            "--val-fraction", "0.1", "--out", str(out), "--device", "cpu", *extra]


def load_model(path):
    return expand_state_dict(torch.load(path, weights_only=True))


def read_json(path):
    with open(path) as f:
        return json.load(f)


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
    assert result["history"][1]["target_sparsity"] == pytest.approx(0.744 * (1 - 0.5 ** 3))


def test_kill_and_resume_gives_the_same_result(cifar10_root, tmp_path, monkeypatch):
    args = ["--epochs", "3", "--seed", "7"]
    assert run("cifar10", *tiny(cifar10_root, tmp_path / "whole", *args)) == 0
    real_save = experiment.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after the checkpoint of epoch 2
    monkeypatch.setattr(experiment, "save_checkpoint", save_then_die)
    assert run("cifar10", *tiny(cifar10_root, tmp_path / "killed", *args)) == 130
    monkeypatch.setattr(experiment, "save_checkpoint", real_save)
    ckpt = tmp_path / "killed" / "cifar10" / "progressive-0.796" / "seed7.ckpt.pt"
    assert ckpt.exists() and not ckpt.with_name("seed7.json").exists()
    assert run("cifar10", *tiny(cifar10_root, tmp_path / "killed", *args)) == 0
    whole = read_json(tmp_path / "whole" / "cifar10" / "progressive-0.796" / "seed7.json")
    resumed = read_json(tmp_path / "killed" / "cifar10" / "progressive-0.796" / "seed7.json")
    for key in ("test_accuracy", "test_loss", "final_sparsity", "params_nonzero", "best_val_accuracy", "per_layer"):
        assert whole[key] == resumed[key], key
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(whole["history"]) == strip(resumed["history"])  # bit-identical on CPU
    a = load_model(tmp_path / "whole" / "cifar10" / "progressive-0.796" / "seed7.model.pt")
    b = load_model(tmp_path / "killed" / "cifar10" / "progressive-0.796" / "seed7.model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


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
    real_train = experiment.train_one_epoch

    def train(run, epoch):
        if epoch == at_epoch and what == "before":
            with torch.no_grad():
                next(run.model.parameters()).fill_(float("nan"))
        out = real_train(run, epoch)
        if epoch == at_epoch and what == "after":  # a finite loss, but the weights end non-finite
            with torch.no_grad():
                run.model.linear.bias.fill_(float("inf"))
        return out
    monkeypatch.setattr(experiment, "train_one_epoch", train)


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


@pytest.mark.parametrize("bad, message", [
    (["--target-sparsity", "1.0"], "--target-sparsity must be in [0, 1)"),
    (["--target-sparsity", "-0.1"], "--target-sparsity must be in [0, 1)"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--batch-size", "-4"], "--batch-size must be positive"),
    (["--lr", "0"], "--lr must be positive"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
    (["--seed", str(2**32)], "--seed must be in [0, 2**32)"),
    (["--seed", "-1"], "--seed must be in [0, 2**32)"),
    (["--momentum", "-0.1"], "--momentum must be >= 0"),
    (["--weight-decay=-1e-4"], "--weight-decay must be >= 0"),
    (["--label-smoothing", "nan"], "--label-smoothing must be in [0, 1), got nan"),
    (["--label-smoothing", "1.0"], "--label-smoothing must be in [0, 1)"),
    (["--lr", "inf"], "--lr must be positive"),
    (["--train-subset", "20", "--val-fraction", "0.98"], "leaves an empty split"),
])
def test_bad_arguments_are_one_line_errors_and_touch_nothing(mnist_idx_dir, tmp_path, capsys, bad, message):
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 0
    path = tmp_path / "mnist" / "progressive-0.744" / "seed42.json"
    before = path.read_bytes()
    capsys.readouterr()
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path), *bad) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert path.read_bytes() == before


@pytest.mark.parametrize("bad, message", [
    (["--train-subset", "10", "--val-fraction", "0.1"], "the validation split would hold 1 image(s) of 1 class(es)"),
    (["--train-subset", "1", "--val-fraction", "0"], "the training split would hold 1 image(s) of 1 class(es)"),
])
def test_splits_too_small_to_learn_or_measure_are_refused(mnist_idx_dir, tmp_path, capsys, bad, message):
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path), *bad) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not list(tmp_path.rglob("*.json"))


def test_subset_larger_than_the_data(mnist_idx_dir, tmp_path, capsys):
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--train-subset", "100000")) == 2
    assert "--train-subset must be between 1 and 200" in capsys.readouterr().err


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
    restore = kill_after_first_checkpoint(monkeypatch)
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


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason=f"{FASHION_MNIST_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_training_beats_chance(tmp_path):
    argv = ["--dataset", "fashion-mnist", "--data-dir", FASHION_MNIST_DIR, "--no-download", "--width", "8",
            "--epochs", "3", "--train-subset", "3000", "--out", str(tmp_path)]
    assert run("mnist", *argv) == 0
    result = read_json(tmp_path / "fashion-mnist" / "progressive-0.744" / "seed42.json")
    assert result["test_accuracy"] > 60.0  # chance is 10%; measured 77.19% with this config on the CPU
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


def kill_after_first_checkpoint(monkeypatch):
    real_save = experiment.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt
    monkeypatch.setattr(experiment, "save_checkpoint", save_then_die)
    return lambda: monkeypatch.setattr(experiment, "save_checkpoint", real_save)


def test_a_run_started_in_fp32_is_not_resumed_in_bf16(mnist_idx_dir, tmp_path, monkeypatch, capsys):
    restore = kill_after_first_checkpoint(monkeypatch)
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path)) == 130  # auto on the CPU: fp32
    restore()
    capsys.readouterr()
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--precision", "bf16")) == 2
    assert "different config (precision 'fp32' vs 'bf16')" in capsys.readouterr().err
    assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--precision", "fp32")) == 0  # same as auto here: resumes
    assert read_json(tmp_path / "mnist" / "progressive-0.744" / "seed42.json")["config"]["precision"] == "fp32"


def test_real_runs_aggregate(mnist_idx_dir, tmp_path, capsys):
    import aggregate
    for seed in ("1", "2"):
        assert run("dense", "--dataset", "mnist", *tiny(mnist_idx_dir, tmp_path, "--seed", seed)) == 0
        assert run("mnist", *tiny(mnist_idx_dir, tmp_path, "--seed", seed, "--target-sparsity", "0.5")) == 0
    capsys.readouterr()
    assert aggregate.main([str(tmp_path), "--strict", "--format", "json", "-o", str(tmp_path / "t.json")]) == 0
    tables = read_json(tmp_path / "t.json")["tables"]
    assert [(r["method"], r["n"], r["epochs_trained"]) for r in tables["main"]] == [("dense", 2, 2), ("progressive", 2, 2)]
    (row,) = tables["comparison"]
    assert row["method"] == "progressive" and row["dense_n"] == 2 and row["target_sparsity"] == 0.5
    assert row["dense_welch_p"] is None or 0.0 <= row["dense_welch_p"] <= 1.0


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from types import SimpleNamespace

    from distributed import World
    run_ = SimpleNamespace(world=World())
    batches = iter(range(3))
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert experiment.progress(batches, run_, 3, "epoch 1") is batches  # logs and CI: unchanged lines
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    bar = experiment.progress(batches, run_, 3, "epoch 1")
    assert type(bar).__name__ == "tqdm" and bar.total == 3
    bar.close()
    assert experiment.progress(batches, SimpleNamespace(world=World(rank=1, size=2)), 3, "x") is batches
