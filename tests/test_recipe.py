"""Recipes as data: the named presets fill the recipe fields that flags left unset, a step budget trains exactly
its steps, the step LR schedule moves at its milestones (in steps), and results written before these fields
existed read as the recipe they were run with."""

import pytest

from harness import config, loop, results
import train_baseline
from helpers import STEP_BUDGET, read_json


def completed(*flags: str) -> config.Config:
    return loop.parse(train_baseline.SCRIPT, ["--dataset", "mnist", "--method", "snip", *flags])


def test_the_snip_recipe_fills_snips_published_fields_and_flags_override_them():
    c = completed("--recipe", "snip")
    assert (c.recipe, c.batch_size, c.lr, c.momentum, c.weight_decay, c.label_smoothing, c.augment, c.val_fraction) \
        == ("snip", 100, 0.1, 0.9, 5e-4, 0.0, "none", 0.1)
    assert (c.lr_schedule, c.lr_milestones, c.lr_decay, c.steps) == ("step", "25000", 0.1, 30_000)
    assert c.epochs == 56  # 54,000 training images / 100 = 540 steps an epoch; 30,000 steps begin 56 epochs
    over = completed("--recipe", "snip", "--lr", "0.05", "--augment", "flip", "--epochs", "10")
    assert (over.lr, over.augment, over.epochs, over.steps, over.lr_schedule) == (0.05, "flip", 10, None, "step")


def test_no_recipe_flag_is_the_papers_recipe_and_the_same_identity():
    plain, named = completed(), completed("--recipe", "paper")
    assert plain.to_dict() == named.to_dict()
    assert (plain.recipe, plain.lr_schedule, plain.augment, plain.epochs, plain.steps, plain.val_fraction) == \
        ("paper", "cosine", "flip", 30, None, 0.11)


@pytest.mark.parametrize("stored, augment", [({}, "flip"), ({"no_hflip": False}, "flip"), ({"no_hflip": True}, "none")])
def test_a_config_written_before_the_recipe_fields_reads_as_the_recipe_it_ran(stored, augment):
    old = {"dataset": "mnist", "method": "dense", "epochs": 3, **stored}
    new = results.upgrade_config(old, "fp32")
    assert (new["recipe"], new["lr_schedule"], new["augment"], new["steps"]) == ("paper", "cosine", augment, None)
    assert "no_hflip" not in new
    assert results.upgrade_config({"dataset": "cifar10"}, "fp32")["augment"] == "cifar"


BUDGET = STEP_BUDGET  # 90 training images: 9 steps an epoch; 20 steps are 9 + 9 + 2


def test_a_step_budget_trains_exactly_its_steps_and_the_lr_steps_at_its_milestones(tmp_path):
    assert loop.main(train_baseline.SCRIPT, [*BUDGET, "--method", "dense", "--out", str(tmp_path)]) == 0
    r = read_json(tmp_path / "mnist" / "lenet300-dense" / "seed42.json")
    assert r["epochs"] == 3 and [row["lr"] for row in r["history"]] == pytest.approx([0.1, 0.05, 0.025])
    cost = r["training_cost"]  # a dense run's training is exactly one dense cycle: 200 images, not 270
    assert cost["dense_cycle_macs"] == 3 * r["inference_macs"]["macs_dense"] * 200 and cost["cycles"] == 1.0


def test_the_papers_schedule_under_a_step_budget_reaches_its_target_at_the_last_epochs_start(tmp_path):
    argv = [*BUDGET, "--method", "progressive", "--target-sparsity", "0.5", "--out", str(tmp_path)]
    assert loop.main(train_baseline.SCRIPT, argv) == 0
    r = read_json(tmp_path / "mnist" / "lenet300-progressive-0.5" / "seed42.json")
    assert [(e["step"], e["sparsity"]) for e in r["mask_events"]] == [(0, 0.0), (9, 0.25), (18, 0.5)]
