"""The committed studies stay readable and reachable: their sweeps' commands name exactly the committed runs,
and the harness of today recognises each committed result as finished (a rerun skips it)."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import experiment
import train_baseline

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script, results", [("run_study.py", "study/results"),
                                             ("run_schedules.py", "study/schedules/results")])
def test_the_study_commands_are_exactly_the_committed_runs_and_are_skipped(script, results, tmp_path, capsys):
    out = tmp_path / "results"
    shutil.copytree(ROOT / results, out, ignore=shutil.ignore_patterns("logs"))
    dry = subprocess.run([sys.executable, f"study/{script}", "--dry-run", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    commands = [shlex.split(line)[2:] for line in dry.stdout.splitlines()]
    assert len(commands) == len(list(out.rglob("seed*.json")))
    for argv in commands:
        if "ticket" in argv:  # its donor's model file is not committed (only results are): cannot resolve here
            continue
        assert experiment.main(train_baseline.SCRIPT, argv) == 0
        assert "is finished (test accuracy" in capsys.readouterr().out, argv
