"""Helpers the test modules share (no test module imports another): the tiny run's flags, running a script in
this process, reading what a run wrote, and killing a run right after one of its checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from harness import loop, runfolder
import train_baseline
from pruning import expand_state_dict

ROOT = Path(__file__).resolve().parent.parent
N_PRUNABLE = 175_048  # ResNet-18 width 8, one input channel
STEP_BUDGET = ["--dataset", "mnist", "--dummy", "--train-subset", "100", "--val-fraction", "0.1", "--batch-size", "10",
               "--arch", "lenet300", "--device", "cpu", "--steps", "20", "--lr-schedule", "step", "--lr-milestones",
               "5,12", "--lr-decay", "0.5"]  # 90 training images: 9 steps an epoch; 20 steps are 9 + 9 + 2


def tiny(data_dir, out, *extra: str, epochs: int = 3) -> list[str]:
    """Flags of the tiny run: width 8, batch 32, on the CPU (also on a GPU machine: resume must be bit-identical,
    which CUDA kernels do not promise)."""
    return ["--data-dir", str(data_dir), "--no-download", "--width", "8", "--epochs", str(epochs), "--batch-size",
            "32", "--val-fraction", "0.1", "--out", str(out), "--device", "cpu", *extra]


def baseline(method: str, data_dir, out, *extra: str, epochs: int = 3) -> list[str]:
    """train_baseline.py's flags for ``method`` on the tiny MNIST-format data."""
    return ["--dataset", "mnist", "--method", method, *tiny(data_dir, out, *extra, epochs=epochs)]


def run(*argv: str, script: loop.Script = train_baseline.SCRIPT) -> int:
    """A training script's exit code, run in this process (so tests can patch the harness)."""
    return loop.main(script, list(argv))


def script(*argv: str, name: str = "train_dense.py", **kwargs) -> subprocess.CompletedProcess:
    """A training script in its own process."""
    return subprocess.run([sys.executable, name, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          **kwargs)


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def load_model(path) -> dict[str, torch.Tensor]:
    """A run's final model file as a plain state dict."""
    return expand_state_dict(torch.load(path, weights_only=True))


def strip_times(rows: list[dict]) -> list[dict]:
    """History rows without their wall-clock seconds: what a resumed run must reproduce exactly."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def masked(target: float) -> float:
    """The sparsity the tiny network measures at ``target``: round(target * N) / N."""
    return round(target * N_PRUNABLE) / N_PRUNABLE


def kill_after_checkpoint(monkeypatch, when=lambda state: True):
    """From now on, a run raises KeyboardInterrupt right after writing a checkpoint whose state satisfies
    ``when`` (as a kill would leave it); returns the function that stops that."""
    real_save = runfolder.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if when(state):
            raise KeyboardInterrupt
    monkeypatch.setattr(runfolder, "save_checkpoint", save_then_die)
    return lambda: monkeypatch.setattr(runfolder, "save_checkpoint", real_save)


def whole_and_resumed(monkeypatch, tmp_path, argv, folder: tuple, seed: int, kill_when, script=train_baseline.SCRIPT):
    """Run ``argv(out)`` uninterrupted (out = tmp_path/whole), then again killed right after the checkpoint whose
    state satisfies ``kill_when`` and rerun to the end (tmp_path/killed); (whole, resumed) results and models."""
    assert run(*argv(tmp_path / "whole"), script=script) == 0
    restore = kill_after_checkpoint(monkeypatch, kill_when)
    assert run(*argv(tmp_path / "killed"), script=script) == 130
    restore()
    assert run(*argv(tmp_path / "killed"), script=script) == 0
    found = [read_json(tmp_path.joinpath(k, *folder, f"seed{seed}.json")) for k in ("whole", "killed")]
    models = [load_model(tmp_path.joinpath(k, *folder, f"seed{seed}.model.pt")) for k in ("whole", "killed")]
    return (*found, *models)


def assert_bit_identical(whole: dict, resumed: dict, a: dict, b: dict) -> None:
    """Two runs' results agree in everything but wall-clock times, and their final models bit for bit."""
    for key in ("test_accuracy", "test_loss", "final_sparsity", "params_nonzero", "best_val_accuracy", "per_layer",
                "mask_events"):
        assert whole[key] == resumed[key], key
    assert strip_times(whole["history"]) == strip_times(resumed["history"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def one_error_line(capsys, code: int, expected_code: int, message: str) -> str:
    """Check that a command ended with ``expected_code`` and said ``message`` on one stderr line, no traceback."""
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def config_of(method: str, dataset: str = "mnist", epochs: int = 3, **options):
    """The completed config of ``method`` with these options (as its flags would give them)."""
    from harness import config, methods
    return methods.complete(config.Config(dataset=dataset, method=method, epochs=epochs, batch_size=32,
                                          options=methods.METHODS[method].Options(**options)))


def folder_of(method: str, **options) -> str:
    """The results folder a run of ``method`` with these options writes to."""
    from harness import methods
    return methods.create(config_of(method, **options)).folder()


def torchrun(*argv: str, script: str = "train_mnist.py", nproc: int = 2, wait: bool = True):
    """A training script under the real torchrun entry point: ``nproc`` CPU processes, one thread each."""
    import os
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
