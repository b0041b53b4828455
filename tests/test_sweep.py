"""sweep.py: the grid's commands, bad input, and a sweep that is interrupted and rerun to completion."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sweep

ROOT = Path(__file__).resolve().parent.parent


def tiny(out, data_dir=None) -> list[str]:
    """The runs' flags: the tiny MNIST-format files when given (100 test images), else --dummy data."""
    data = ["--data-dir", str(data_dir), "--no-download", "--val-fraction", "0.1"] if data_dir else ["--dummy"]
    return ["--dataset", "mnist", *data, "--width", "4", "--epochs", "2", "--train-subset", "200", "--out", str(out)]


def test_print_array_lines_are_the_dry_run_commands(tmp_path, capsys):
    grid = ["--methods", "progressive,dense,ticket", "--targets", "0.5,0.8", "--seeds", "1,2",
            "--set", "schedule=linear,cubic", "--set", "reinit=donor,random"]
    assert sweep.main([*grid, "--dry-run", "--", *tiny(tmp_path)]) == 0
    dry = capsys.readouterr().out.splitlines()
    assert sweep.main([*grid, "--print-array", "--", *tiny(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == dry
    assert len(dry) == 2 * 2 * 2 + 2 + 2 * 2 * 2  # progressive x schedules, dense once per seed, tickets x reinit
    assert all("--schedule" not in line for line in dry if "--method progressive" not in line)  # only where it applies
    assert dry[-1].endswith(f"--method ticket --seed 2 --reinit random --mask-from "
                            f"{tmp_path}/mnist/progressive-0.8/seed2.json {' '.join(tiny(tmp_path))}")
    assert not tmp_path.joinpath("logs").exists()  # nothing started


@pytest.mark.parametrize("argv, message", [
    (["--methods", "prog"], "--methods: unknown method 'prog'"),
    (["--methods", "snip", "--targets", "1.0"], "--targets: 1.0 is not a sparsity in [0, 1)"),
    (["--methods", "snip", "--seeds", ","], "--seeds is empty: the grid has no run"),
    (["--methods", "snip", "--set", "nothing"], "--set 'nothing': expected FIELD=V1,V2"),
    (["--methods", "snip", "--devices", "cuda:99"], "--devices: cuda:99 does not exist here"),
    (["--methods", "snip", "--devices", "gpu"], "--devices: 'gpu' is not cpu or cuda:N"),
])
def test_bad_input_is_one_line_and_starts_nothing(tmp_path, capsys, argv, message):
    assert sweep.main([*argv, "--", *tiny(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_an_unknown_flag_for_the_runs_is_refused_before_anything_starts(tmp_path, capsys):
    assert sweep.main(["--methods", "snip", "--", *tiny(tmp_path), "--lr", "-1"]) == 2
    assert "--lr must be positive, got -1.0" in capsys.readouterr().err


def results_of(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime for p in out.rglob("seed*.json")}


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_and_runs_nothing_twice(tmp_path, mnist_data):
    out = tmp_path / "runs"
    cmd = [sys.executable, "sweep.py", "--methods", "progressive,snip", "--targets", "0.8", "--seeds", "1,2",
           "--jobs", "2", "--", *tiny(out, mnist_data)]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not results_of(out) and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the sweep and its runs
    _, err = first.communicate(timeout=240)
    before = results_of(out)
    assert first.returncode == 130 and "rerun the same command to resume" in err and 1 <= len(before) < 4, err
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    after = results_of(out)
    assert len(after) == 4 and all(after[k] == t for k, t in before.items())  # finished ones were not rerun
    assert f"{4 - len(before)} finished, {len(before)} skipped" in again.stdout
    for path in after:
        assert json.loads((out / path).read_text())["epochs_trained"] == 2


@pytest.mark.slow
def test_a_run_is_called_finished_or_skipped_by_this_attempt_not_by_its_log_history(tmp_path, mnist_data):
    out = tmp_path / "runs"
    cmd = [sys.executable, "sweep.py", "--methods", "dense", "--seeds", "1", "--", *tiny(out, mnist_data)]
    said = [subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300).stdout for _ in range(2)]
    assert summary(said[0]) == "sweep: 1 finished" and summary(said[1]) == "sweep: 1 skipped"  # the log says so
    for path in results_of(out):
        (out / path).unlink()  # the result is gone: the next attempt trains again
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300).stdout
    assert summary(again) == "sweep: 1 finished" and len(results_of(out)) == 1


def summary(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


def test_sweep_set_takes_any_field_the_command_accepts(capsys):
    base = ["--methods", "progressive,snip", "--targets", "0.5", "--dry-run", "--", "--dataset", "mnist", "--out", "r"]
    assert sweep.main(["--set", "lr=0.1,0.05", *base]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(f"--lr {v}" in line and line.endswith(f"--out r/lr{v}")
                                   for line, v in zip(lines, ["0.1", "0.1", "0.05", "0.05"]))
    assert sweep.main(["--set", "no_sync_bn=true,false", *base]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ["--no-sync-bn" in line for line in lines] == [True, True, False, False]
    assert sweep.main(["--set", "augment=flip,none", *base]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("--augment ")[1].split()[0] for line in lines] == ["flip", "flip", "none", "none"]
    for bad, message in (("lrr=0.1", "--set lrr: neither a recipe field nor an option of progressive, snip"),
                         ("seed=1,2", "--set seed: sweep it with --seeds"), ("out=a,b", "--set out: a run field"),
                         ("rounds=2", "--set rounds: neither a recipe field nor an option"),
                         ("no_sync_bn=yes", "no_sync_bn is an on/off flag"),
                         ("augment=cifar", "--augment cifar: mnist has no such augmentation"), ("lr=-1", "--lr must be positive")):
        assert sweep.main(["--set", bad, *base]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (bad, err)


def test_a_method_option_after_the_double_dash_reaches_the_runs_that_take_it(capsys):
    # the flags after -- go to every run; --out is read from them without checking them against another method
    assert sweep.main(["--methods", "progressive", "--set", "lr=0.1", "--dry-run", "--", "--dataset", "mnist",
                       "--prune-every", "25", "--out=r"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "--prune-every 25" in line and line.endswith("--out r/lr0.1")
