"""Step-level pruning schedules, the per-step hooks, per-run method state and the mask-dynamics record, end to
end on tiny MNIST-format data (180 training images, batch 32: 6 steps per epoch) and on hand-made masks."""

import types

import pytest
import torch
from torch import nn

import pruning
from harness import loop, methods, record, runfolder
from harness.run import RunState
from helpers import N_PRUNABLE, baseline, folder_of, masked, read_json, run

STEPS = 6  # per epoch of the tiny data


@pytest.fixture
def sparsity_per_step(spy):
    """The measured sparsity of the masks at every training step's forward pass, in order."""
    return spy(loop, "forward_backward", lambda run, x, y: pruning.global_sparsity(run.params))


@pytest.mark.parametrize("schedule", ["linear", "cubic"])
def test_step_schedule_prunes_at_exactly_its_events(mnist_idx_dir, tmp_path, sparsity_per_step, schedule):
    args = ("--target-sparsity", "0.8", "--schedule", schedule, "--prune-every", "2", "--prune-start", "0.1",
            "--prune-end", "0.6")
    assert run(*baseline("progressive", mnist_idx_dir, tmp_path, *args)) == 0
    label = "progressive" + ("-cubic" if schedule == "cubic" else "") + "-every2-start0.1-end0.6"
    result = read_json(tmp_path / "mnist" / f"{label}-0.8" / "seed42.json")
    start, end = round(0.1 * 3 * STEPS), round(0.6 * 3 * STEPS)  # steps 2 and 11 of 18
    steps = [e["step"] for e in result["mask_events"]]
    assert steps == [2, 4, 6, 8, 10, 11] and (start, end) == (2, 11)  # every 2 from the start, and exactly the end
    for event in result["mask_events"][:-1]:
        p = (event["step"] - start) / (end - start)
        expected = 0.8 * p if schedule == "linear" else 0.8 * (1 - (1 - p) ** 3)
        assert event["sparsity"] == pytest.approx(expected, abs=1e-12) and event["round"] == 0
    assert result["mask_events"][-1]["sparsity"] == 0.8  # exactly the target at t_end
    # the masks measured at each step's forward: dense before the first event, each event's count from its step
    # on, nothing after t_end (the recovery window)
    expected, current = [], 0.0
    events = {e["step"]: e["sparsity"] for e in result["mask_events"]}
    for t in range(3 * STEPS):
        current = masked(events[t]) if t in events else current
        expected.append(current)
    assert sparsity_per_step == expected
    assert [row["scheduled_sparsity"] for row in result["history"]] == [events[4], 0.8, 0.8]
    assert result["final_sparsity"] == masked(0.8)


def test_the_default_schedule_is_the_papers_one_event_per_epoch(mnist_idx_dir, tmp_path, sparsity_per_step):
    assert run(*baseline("progressive", mnist_idx_dir, tmp_path, "--target-sparsity", "0.8")) == 0
    result = read_json(tmp_path / "mnist" / "progressive-0.8" / "seed42.json")
    assert [(e["step"], e["sparsity"]) for e in result["mask_events"]] == [
        (e * STEPS, pruning.sparsity_schedule("linear", e, 3, 0.8)) for e in range(3)]
    assert sparsity_per_step == [masked(pruning.sparsity_schedule("linear", t // STEPS, 3, 0.8))
                                 for t in range(3 * STEPS)]


def test_oneshot_at_a_step(mnist_idx_dir, tmp_path, sparsity_per_step):
    assert run(*baseline("oneshot", mnist_idx_dir, tmp_path, "--target-sparsity", "0.7", "--prune-start", "0.5")) == 0
    result = read_json(tmp_path / "mnist" / "oneshot-at0.5-0.7" / "seed42.json")
    assert result["mask_events"] == [{"round": 0, "step": 9, "sparsity": 0.7, "kind": "prune"}]
    assert sparsity_per_step == [0.0] * 9 + [masked(0.7)] * 9


def test_per_step_hooks_see_every_step_with_gradients_before_the_update(mnist_idx_dir, tmp_path, monkeypatch):
    calls = []

    def start_step(self, run, step):
        calls.append(("start", step, run.params[0][0].weight_orig.detach().clone()))

    def after_backward(self, run, step):
        weight = run.params[0][0].weight_orig
        assert weight.grad is not None and bool(weight.grad.abs().sum() > 0)  # the step's gradients are there
        calls.append(("grad", step, weight.detach().clone()))
    monkeypatch.setattr(methods.Progressive, "start_step", start_step)  # replaces the schedule: no pruning
    monkeypatch.setattr(methods.Progressive, "after_backward", after_backward)
    assert run(*baseline("progressive", mnist_idx_dir, tmp_path, "--epochs", "2")) == 0
    assert [(kind, step) for kind, step, _ in calls] == [(k, t) for t in range(2 * STEPS) for k in ("start", "grad")]
    for (_, _, at_start), (_, _, at_grad), (_, _, next_start) in zip(calls[0::2], calls[1::2], calls[2::2]):
        assert torch.equal(at_start, at_grad) and not torch.equal(at_grad, next_start)  # the update comes after


def test_a_methods_state_goes_through_every_checkpoint(mnist_idx_dir, tmp_path, monkeypatch):
    saved = []
    real_save = runfolder.save_checkpoint
    monkeypatch.setattr(runfolder, "save_checkpoint", lambda path, state: (saved.append(state), real_save(path, state)))
    assert run(*baseline("imp", mnist_idx_dir, tmp_path, "--epochs", "2", "--rounds", "1",
                         "--target-sparsity", "0.5")) == 0
    assert [sorted(s["method"]) for s in saved] == [["rewind"]] * 4  # IMP's rewind point, from the first epoch on
    assert all(torch.is_tensor(v) for v in saved[0]["method"]["rewind"]["model"].values())


# ---------------------------------------------------------------------------------------------------------
# Labels (bad schedules: test_bad_input.py)

def test_every_option_that_changes_results_is_in_the_folder():
    assert folder_of("snip", target_sparsity=0.9) == "snip-0.9"
    assert folder_of("snip", target_sparsity=0.9, score_batches=2) == "snip-b2-0.9"
    assert folder_of("progressive", target_sparsity=0.9) == "progressive-0.9"
    assert folder_of("progressive", target_sparsity=0.9, schedule="cubic", prune_every=25,
                     prune_end=0.75) == "progressive-cubic-every25-end0.75-0.9"
    assert folder_of("oneshot", target_sparsity=0.9, prune_start=0.25) == "oneshot-at0.25-0.9"
    assert folder_of("oneshot", target_sparsity=0.9) == "oneshot-e1-0.9" and folder_of("progressive") == "progressive-0.744"


# ---------------------------------------------------------------------------------------------------------
# Mask dynamics

def fake_run(weights: list[torch.Tensor], target: float, dynamics: dict | None = None):
    layers = [nn.Linear(w.shape[1], w.shape[0], bias=False) for w in weights]
    for layer, w in zip(layers, weights):
        layer.weight.data.copy_(w)
    params = pruning.attach_masks([(layer, "weight") for layer in layers])
    method = types.SimpleNamespace(prunes=True, target=lambda: target, mask_scores=lambda run: None)
    return types.SimpleNamespace(method=method, params=params, state=RunState(dynamics=dynamics or {}))


def test_mask_distance_is_zero_when_nothing_moved_and_counts_what_did():
    w = torch.tensor([[0.1, -0.9, 0.3, 0.7], [0.5, 0.2, -0.05, 0.8]])
    r = fake_run([w], target=0.5)
    state, first = record.track_mask_dynamics(r, 1, 10)
    assert first is None and set(state["early"]) == {"0.1"}  # 1 of 10 epochs: the 10% mask is kept
    r.state.dynamics = state
    state, distance = record.track_mask_dynamics(r, 2, 10)
    assert distance == 0.0  # nothing moved
    r.state.dynamics = state
    with torch.no_grad():  # swap the smallest kept (0.5) with the largest dropped (0.3): two entries change
        r.params[0][0].weight_orig[0, 2], r.params[0][0].weight_orig[1, 0] = 0.6, 0.29
    state, distance = record.track_mask_dynamics(r, 3, 10)
    assert distance == 2 / 8 and set(state["early"]) == {"0.1", "0.25"}


def test_early_mask_overlaps_are_exact():
    final = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    early = {"0.1": {"epochs": 1, "mask": pruning.pack_mask(torch.tensor([1, 1, 0, 1, 0, 0, 0, 0]))},
             "0.5": {"epochs": 5, "mask": pruning.pack_mask(final)}}
    r = fake_run([torch.ones(2, 4)], 0.5, {"early": early})
    r.params[0][0].weight_mask.copy_(final)
    assert record.mask_overlaps(r) == {"0.1": {"epochs": 1, "overlap": 0.5}, "0.5": {"epochs": 5, "overlap": 1.0}}


def test_runs_record_mask_dynamics(mnist_idx_dir, tmp_path):
    assert run(*baseline("progressive", mnist_idx_dir, tmp_path, "--epochs", "4", "--target-sparsity", "0.8")) == 0
    result = read_json(tmp_path / "mnist" / "progressive-0.8" / "seed42.json")
    distances = [row["mask_distance"] for row in result["history"]]
    assert distances[0] is None and all(0.0 <= d <= 1.0 for d in distances[1:])
    overlaps = result["early_mask_overlap"]
    assert {k: v["epochs"] for k, v in overlaps.items()} == {"0.1": 1, "0.25": 1, "0.5": 2}
    assert all(0.0 <= v["overlap"] <= 1.0 for v in overlaps.values())
    assert run(*baseline("dense", mnist_idx_dir, tmp_path)) == 0
    dense = read_json(tmp_path / "mnist" / "dense" / "seed42.json")
    assert dense["early_mask_overlap"] is None and all(r["mask_distance"] is None for r in dense["history"])
    assert dense["params_nonzero"] == N_PRUNABLE
