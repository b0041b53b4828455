"""Bad input to the training scripts, as one table: every case is one `error:` line, exit code 2, no traceback,
and nothing written: a finished run in the same results folder stays byte for byte, and no file or folder
appears. Every check happens before training, so no case trains (one finished run serves them all)."""

import pytest

import train_baseline
import train_dense
import train_mnist
from helpers import one_error_line, run, tiny

MNIST, BASELINE, DENSE = train_mnist.SCRIPT, train_baseline.SCRIPT, train_dense.SCRIPT
CASES = [  # (script, flags after the tiny run's, message)
    # common fields (config.check_common)
    (MNIST, ["--target-sparsity", "1.0"], "--target-sparsity must be in [0, 1)"),
    (MNIST, ["--target-sparsity", "-0.1"], "--target-sparsity must be in [0, 1)"),
    (MNIST, ["--epochs", "0"], "--epochs must be positive"),
    (MNIST, ["--batch-size", "-4"], "--batch-size must be positive"),
    (MNIST, ["--lr", "0"], "--lr must be positive"),
    (MNIST, ["--lr", "inf"], "--lr must be positive"),
    (MNIST, ["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (MNIST, ["--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
    (MNIST, ["--seed", str(2**32)], "--seed must be in [0, 2**32)"),
    (MNIST, ["--seed", "-1"], "--seed must be in [0, 2**32)"),
    (MNIST, ["--momentum", "-0.1"], "--momentum must be >= 0"),
    (MNIST, ["--weight-decay=-1e-4"], "--weight-decay must be >= 0"),
    (MNIST, ["--label-smoothing", "nan"], "--label-smoothing must be in [0, 1), got nan"),
    (MNIST, ["--label-smoothing", "1.0"], "--label-smoothing must be in [0, 1)"),
    (MNIST, ["--train-subset", "20", "--val-fraction", "0.98"], "leaves an empty split"),
    (MNIST, ["--rounds", "3"], "unrecognized arguments: --rounds 3"),  # not an option of the script's method
    # the recipe (config.with_recipe_defaults, config.check_common, methods.with_budget, config.check_budget)
    (MNIST, ["--recipe", "adam"], "argument --recipe: invalid choice: 'adam' (choose from 'paper', 'snip')"),
    (BASELINE, ["--method", "dense", "--dataset", "cifar10", "--recipe", "snip"],
     "--recipe snip has no recipe for cifar10 (it has: mnist, fashion-mnist)"),
    (MNIST, ["--augment", "cifar"], "--augment cifar: mnist has no such augmentation (it has: flip, none)"),
    (MNIST, ["--augment", "blur"], "argument --augment: invalid choice: 'blur'"),
    (MNIST, ["--lr-schedule", "step", "--lr-milestones", "10,5", "--lr-decay", "0.1"],
     "--lr-milestones '10,5': the step schedule needs training steps that are positive and increasing"),
    (MNIST, ["--lr-schedule", "step", "--lr-milestones", "5,5", "--lr-decay", "0.1"], "positive and increasing"),
    (MNIST, ["--lr-schedule", "step", "--lr-milestones", "0", "--lr-decay", "0.1"], "positive and increasing"),
    (MNIST, ["--lr-schedule", "step", "--lr-milestones", "5k", "--lr-decay", "0.1"],
     "--lr-milestones '5k': not a comma-separated list of training steps"),
    (MNIST, ["--lr-schedule", "step", "--lr-decay", "0.1"], "the step schedule needs training steps"),
    (MNIST, ["--lr-schedule", "step", "--lr-milestones", "5"], "--lr-decay must be a positive factor with --lr-schedule step, got None"),
    (MNIST, ["--lr-milestones", "5"], "--lr-milestones is for --lr-schedule step, not cosine"),
    (MNIST, ["--target-sparsity", "0.5", "--lr-schedule", "step", "--lr-milestones", "5,18", "--lr-decay", "0.1"],
     "--lr-milestones 5,18: milestone 18 is not before the end of training (step 18)"),
    (MNIST, ["--steps", "0"], "--steps must be positive, got 0"),
    (MNIST, ["--steps", "5"], "--epochs 3 and --steps 5 disagree (5 steps are 1 epochs of 1688); give one"),
    (DENSE, ["--epochs", "1"], "the following arguments are required: --dataset"),
    # the network (methods.with_network)
    (MNIST, ["--arch", "alexnet"], "argument --arch: invalid choice: 'alexnet'"),
    (MNIST, ["--arch", "lenet300"], "--width has no meaning for --arch lenet300 (a network of fixed size)"),
    (BASELINE, ["--method", "dense", "--dataset", "cifar10", "--arch", "lenet5"],
     "--arch lenet5 is defined for 1-channel 28x28 images; this dataset has 3x32x32"),
    # the data (data.prepare_data, once the run holds its folder: another target, so that it is a new folder)
    (MNIST, ["--target-sparsity", "0.5", "--train-subset", "10", "--val-fraction", "0.1"], "the validation split would hold 1 image(s) of 1 class(es)"),
    (MNIST, ["--target-sparsity", "0.5", "--train-subset", "1", "--val-fraction", "0"], "the training split would hold 1 image(s) of 1 class(es)"),
    (MNIST, ["--target-sparsity", "0.5", "--train-subset", "100000"], "--train-subset must be between 1 and 200"),
    # a method's options (Method.check_options, the parser, Method.check_sizes)
    (BASELINE, ["--method", "imp", "--target-sparsity", "1.5"], "--target-sparsity must be in [0, 1), got 1.5"),
    (BASELINE, ["--method", "imp", "--target-sparsity", "inf"], "--target-sparsity must be in [0, 1), got inf"),
    (BASELINE, ["--method", "snip", "--score-batches", "0"], "--score-batches must be positive, got 0"),
    (BASELINE, ["--method", "snip", "--score-batches", "1000000000"], "--score-batches 1000000000 is more than the 6 training batches"),
    (BASELINE, ["--method", "imp", "--rounds", "99999999999999999999999"], "--rounds must be in [1, 100]"),
    (BASELINE, ["--method", "imp", "--rounds", "50", "--target-sparsity", "0.0001"], "--rounds 50: round 1 would prune no weight"),
    (BASELINE, ["--method", "progressive", "--target-sparsity", "0.99999999"], "prunes all 175,048 prunable weights"),
    (BASELINE, ["--method", "snip", "--rounds", "3"], "--rounds is not an option of snip (it is one of imp)"),
    (BASELINE, ["--method", "dense", "--schedule", "cubic"], "--schedule is not an option of dense (it is one of progressive)"),
    (BASELINE, ["--method", "ticket", "--target-sparsity", "0.5", "--mask-from", "x.json"], "--target-sparsity is not an option of ticket"),
    (BASELINE, ["--method", "random", "--mask-from", "x.json"], "--mask-from is not an option of random (it is one of ticket)"),
    (BASELINE, ["--method", "ticket"], "--method ticket needs --mask-from"),
    (BASELINE, ["--method", "ticket", "--mask-from", "nothing.json"], "--mask-from: nothing.json: cannot read"),
    (BASELINE, ["--method", "grasp", "--temperature", "0"], "--temperature must be positive, got 0.0"),
    (BASELINE, ["--method", "grasp", "--score-batches", "7"], "--score-batches 7 is more than the 6 training batches"),
    (BASELINE, ["--method", "snip", "--temperature", "2"], "--temperature is not an option of snip (it is one of grasp)"),
    # schedules
    (BASELINE, ["--method", "progressive", "--prune-every", "0"], "--prune-every must be at least 1 step, got 0"),
    (BASELINE, ["--method", "progressive", "--prune-start", "1.0"], "--prune-start must be in [0, 1), got 1.0"),
    (BASELINE, ["--method", "progressive", "--prune-end", "0"], "--prune-end must be in (0, 1), got 0.0"),
    (BASELINE, ["--method", "progressive", "--prune-end", "nan"], "--prune-end must be in (0, 1), got nan"),
    (BASELINE, ["--method", "progressive", "--prune-start", "0.5", "--prune-end", "0.3"], "--prune-end 0.3 is not after --prune-start 0.5"),
    (BASELINE, ["--method", "progressive", "--prune-start", "0.9"], "the pruning window (steps 16 to 12 of 18) holds no training step"),
    (BASELINE, ["--method", "progressive", "--prune-end", "0.99"], "--prune-end 0.99 falls after the last of the 18 training steps"),
    (BASELINE, ["--method", "oneshot", "--prune-every", "5"], "--prune-every is not an option of oneshot (it is one of progressive)"),
    (BASELINE, ["--method", "oneshot", "--prune-start", "0.5", "--prune-epoch", "1"], "--prune-epoch and --prune-start both say when"),
    (BASELINE, ["--method", "oneshot", "--prune-epoch", "3"], "--prune-epoch must be an epoch in [0, 3), got 3"),
    # dynamic sparse training
    (BASELINE, ["--method", "rigl", "--update-every", "0"], "--update-every must be at least 1 step, got 0"),
    (BASELINE, ["--method", "rigl", "--update-end", "0"], "--update-end must be in (0, 1], got 0.0"),
    (BASELINE, ["--method", "set", "--drop-fraction", "1"], "--drop-fraction must be in (0, 1), got 1.0"),
    (BASELINE, ["--method", "set", "--update-every", "14"], "--update-every 14: no mask update falls before --update-end (step 14 of 18)"),
    (BASELINE, ["--method", "progressive", "--distribution", "erk"], "--distribution is not an option of progressive (it is one of"),
    (BASELINE, ["--method", "rigl", "--distribution", "ring"], "argument --distribution: invalid choice: 'ring'"),
]


@pytest.fixture(scope="module")
def finished(mnist_data, tmp_path_factory):
    """A results folder holding one finished run, and what it holds, byte for byte."""
    out = tmp_path_factory.mktemp("finished")
    assert run("--dataset", "mnist", *tiny(mnist_data, out, epochs=1), script=MNIST) == 0
    return out, contents(out)


def contents(folder) -> dict:
    """Every path under ``folder``, with a file's bytes (None for a folder)."""
    return {p: p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


@pytest.mark.parametrize("script, flags, message", CASES, ids=[" ".join(flags) for _, flags, _ in CASES])
def test_bad_input_is_one_line_and_touches_nothing(finished, mnist_data, capsys, script, flags, message):
    out, before = finished
    dataset = [] if script is DENSE else ["--dataset", "mnist"]
    capsys.readouterr()
    one_error_line(capsys, run(*dataset, *tiny(mnist_data, out), *flags, script=script), 2, message)
    assert contents(out) == before
