"""Several runs of train_baseline.py in one process (under torchrun: one launch, one process group for all):
the argument lists are separated by ``--next``. Used by tests/test_distributed.py; exits with the first
non-zero code."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import distributed, loop  # noqa: E402
import train_baseline  # noqa: E402


def main(argv: list[str]) -> int:
    runs, current = [], []
    for arg in argv:
        if arg == "--next":
            runs.append(current)
            current = []
        else:
            current.append(arg)
    runs.append(current)
    try:
        for run in runs:  # loop.train joins the process group once and keeps it for the next run
            code = loop.train(loop.parse(train_baseline.SCRIPT, run))
            if code:
                return code
        return 0
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
