"""Dynamic sparse training (RigL, SET) and layer-wise sparsity distributions (uniform, ERK): the invariants of
every mask update, end to end on tiny MNIST-format data (180 training images, batch 32: 6 steps per epoch) and
on hand-made layers."""

import math
import types

import pytest
import torch
from torch import nn

from harness import distributed, dynamic, loop, method
from harness.run import Run, RunState
import pruning
from helpers import N_PRUNABLE, baseline, folder_of, load_model, read_json, run

STEPS = 6  # per epoch of the tiny data
# RigL's drop fraction f(t) = 0.3 / 2 * (1 + cos(pi * t / 9)) at the updates of 2 epochs of 6 steps, every 2 steps,
# T_end = 0.75 * 12 = 9: the values, worked out once, for the test to check the code against
DROP_FRACTIONS = {2: 0.26490666646784666, 4: 0.17604722665003958, 6: 0.07500000000000002, 8: 0.009046106882113752}


def snap(method, run) -> dict:
    """Per layer: the masks (RigL's update step trains with every mask open and keeps the masks aside), their
    counts, the weights, gradients and momentum; and the mask events so far."""
    masks = [k.clone() for k in method._masks] or [getattr(m, n + "_mask").clone() for m, n in run.params]
    return {"counts": [int(k.sum()) for k in masks], "masks": masks,
            "orig": [getattr(m, n + "_orig").detach().clone() for m, n in run.params],
            "grad": [getattr(m, n + "_orig").grad.clone() for m, n in run.params],
            "events": len(run.state.mask_events),
            "momentum": [run.optimizer.state[getattr(m, n + "_orig")]["momentum_buffer"].clone()
                         if getattr(m, n + "_orig") in run.optimizer.state else None for m, n in run.params]}


@pytest.fixture
def updates(spy):
    """Around every mask update: the per-layer counts, masks, weights, momentum and gradients before and after."""
    return spy(dynamic.DynamicSparse, "after_backward",
               lambda self, run, step: {"step": step, "before": snap(self, run)} if self.is_update(run, step) else None,
               lambda seen, self, run, step: {**seen, "after": snap(self, run),
                                              "sparsity": pruning.global_sparsity(run.params)})


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_every_update_keeps_each_layers_count_and_zeroes_what_moved(mnist_idx_dir, tmp_path, updates, method):
    args = ("--target-sparsity", "0.9", "--update-every", "2", "--epochs", "2")
    assert run(*baseline(method, mnist_idx_dir, tmp_path, *args)) == 0
    result = read_json(tmp_path / "mnist" / f"{method}-every2-0.9" / "seed42.json")
    assert [u["step"] for u in updates] == [2, 4, 6, 8]  # every 2 steps, not at 0, none from T_end = 9 on
    for u in updates:
        # per layer, k = floor(f(t) * active) weights dropped, whether or not they are grown again at once (a
        # dropped-and-regrown weight keeps its mask entry but restarts at exactly 0)
        for mb, ma, ob, oa in zip(u["before"]["masks"], u["after"]["masks"], u["before"]["orig"], u["after"]["orig"]):
            active = mb != 0
            dropped = int((active & (ma == 0)).sum()) + int((active & (ma != 0) & (oa == 0) & (ob != 0)).sum())
            assert dropped == math.floor(DROP_FRACTIONS[u["step"]] * int(active.sum())), u["step"]
        assert u["after"]["events"] == u["before"]["events"] + 1  # every update is a mask event
        assert u["before"]["counts"] == u["after"]["counts"]  # per layer: unchanged by an update
        assert u["sparsity"] == round(0.9 * N_PRUNABLE) / N_PRUNABLE  # exactly the target, every step
        moved = 0
        for mb, ma, orig, grad, mom in zip(u["before"]["masks"], u["after"]["masks"], u["after"]["orig"],
                                           u["after"]["grad"], u["after"]["momentum"]):
            grown, dropped = (ma != 0) & (mb == 0), (ma == 0) & (mb != 0)
            moved += int(grown.sum())
            for where in (grown, dropped):  # exactly 0: weight, this step's gradient, momentum
                assert not orig[where].any() and not grad[where].any() and (mom is None or not mom[where].any())
        assert moved > 0
    assert [(e["step"], e["kind"]) for e in result["mask_events"]] == [(0, "prune")] + [(t, "update") for t in (2, 4, 6, 8)]
    assert all(row["sparsity"] == round(0.9 * N_PRUNABLE) / N_PRUNABLE for row in result["history"])
    assert sum(row["regrown"] for row in result["history"]) > 0
    assert all(0.0 < row["init_mask_overlap"] <= 1.0 for row in result["history"])


def test_pruned_weights_stay_zero_between_updates(mnist_idx_dir, tmp_path, monkeypatch):
    bad = []

    def start_step(self, run, step):
        for m, n in run.params:
            orig, off = getattr(m, n + "_orig"), getattr(m, n + "_mask") == 0
            state = run.optimizer.state.get(orig, {}).get("momentum_buffer")
            if orig[off].any() or (state is not None and state[off].any()):
                bad.append(step)
        real_start(self, run, step)
    real_start = dynamic.DynamicSparse.start_step
    monkeypatch.setattr(dynamic.DynamicSparse, "start_step", start_step)
    assert run(*baseline("rigl", mnist_idx_dir, tmp_path, "--update-every", "2", "--epochs", "2")) == 0
    assert bad == []


def test_set_and_the_initial_masks_are_deterministic_for_a_seed(mnist_idx_dir, tmp_path, monkeypatch):
    initial = {}
    real = dynamic.DynamicSparse.start_round

    def start_round(self, run, r):
        real(self, run, r)
        initial[(self.name, run.config.out)] = method.current_mask(run.params).clone()
    monkeypatch.setattr(dynamic.DynamicSparse, "start_round", start_round)
    for out in ("a", "b"):
        assert run(*baseline("set", mnist_idx_dir, tmp_path / out, "--update-every", "2", "--epochs", "1", "--target-sparsity", "0.5")) == 0
    assert run(*baseline("rigl", mnist_idx_dir, tmp_path / "a", "--update-every", "2", "--epochs", "1", "--target-sparsity", "0.5")) == 0
    a, b = (load_model(tmp_path / out / "mnist" / "set-every2-0.5" / "seed42.model.pt") for out in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run twice: the same masks and weights
    masks = list(initial.values())
    assert len(masks) == 3 and all(torch.equal(masks[0], m) for m in masks)  # rigl and set start alike
    counts = [int(m.sum()) for m in masks]
    assert counts[0] == N_PRUNABLE - round(0.5 * N_PRUNABLE)


def test_rigl_drops_the_smallest_weights_and_grows_the_largest_gradients():
    layer = nn.Linear(4, 2, bias=False)
    params = pruning.attach_masks([(layer, "weight")])
    with torch.no_grad():
        layer.weight_orig.copy_(torch.tensor([[0.5, -0.1, 0.0, 0.9], [0.0, 0.3, -0.7, 0.0]]))
        layer.weight_mask.copy_(torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]))
    layer.weight_orig.grad = torch.ones(2, 4)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    opt.state[layer.weight_orig]["momentum_buffer"] = torch.ones(2, 4)
    rigl = dynamic.RigL.__new__(dynamic.RigL)
    rigl.regrown = 0
    fake = types.SimpleNamespace(params=params, optimizer=opt, world=distributed.World(),
                                 state=RunState(), refresh_macs=lambda: None)
    fake._record_event = lambda *event: Run._record_event(fake, *event)
    # 5 active: k = int(0.4 * 5) = 2 drops (|-0.1| and |0.3|), then the 2 largest |gradient| inactive ones grow
    grads = torch.tensor([0.0, 9.0, 5.0, 0.0, 1.0, 0.0, 0.0, 7.0])
    masks, reset = rigl.drop_and_grow(fake, 0.4, [grads])
    Run.set_masks(fake, 10, masks, reset, 0.9, event="update")  # how a method sets masks it computed itself
    assert layer.weight_mask.tolist() == [[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
    # position 1 was dropped and regrown at once (allowed, as google-research/rigl): it restarts at 0
    assert torch.equal(layer.weight_orig, torch.tensor([[0.5, 0.0, 0.0, 0.9], [0.0, 0.0, -0.7, 0.0]]))
    assert opt.state[layer.weight_orig]["momentum_buffer"].tolist() == [[1, 0, 0, 1], [0, 0, 1, 0]]
    assert rigl.regrown == 1  # position 7 is new; position 1 came back
    assert fake.state.mask_events == [{"round": 0, "step": 10, "sparsity": 0.9, "kind": "update"}]


# ---------------------------------------------------------------------------------------------------------
# Distributions

def test_erk_counts_follow_the_formula_cap_dense_layers_and_meet_the_global_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 32, 3), nn.Conv2d(32, 64, 1), nn.Flatten(), nn.Linear(64, 10))
    params = pruning.prunable_parameters(net)
    shapes = [tuple(m.weight.shape) for m, _ in params]
    sizes = [math.prod(s) for s in shapes]
    for sparsity in (0.5, 0.8, 0.9, 0.95):
        pruned = pruning.layer_prune_counts(params, sparsity, "erk")
        keep = sum(sizes) - round(sparsity * sum(sizes))
        assert sum(pruned) == round(sparsity * sum(sizes)) and all(0 <= p <= n for p, n in zip(pruned, sizes))
        dense = [i for i, p in enumerate(pruned) if p == 0]
        # the others: density = eps * sum(shape) / prod(shape) with one eps (up to the rounding of one entry)
        rest = [i for i in range(len(sizes)) if i not in dense]
        eps = (keep - sum(sizes[i] for i in dense)) / sum(sum(shapes[i]) for i in rest)
        for i in rest:
            assert abs((sizes[i] - pruned[i]) - eps * sum(shapes[i])) <= 1.0, (sparsity, i)
            assert eps * sum(shapes[i]) / sizes[i] <= 1.0
        for i in dense:  # capped: its formula density would exceed 1
            assert eps * sum(shapes[i]) / sizes[i] > 1.0
    assert pruning.layer_prune_counts(params, 0.5, "erk")[3] == 0  # the classifier is capped (kept dense) at 50%
    uniform = pruning.layer_prune_counts(params, 0.9, "uniform")
    assert sum(uniform) == round(0.9 * sum(sizes)) and all(abs(p - 0.9 * n) < 1 for p, n in zip(uniform, sizes))
    with pytest.raises(ValueError, match="unknown layer-wise distribution"):
        pruning.layer_prune_counts(params, 0.9, "global")


@pytest.mark.parametrize("method", ["random", "snip"])
def test_at_initialisation_methods_take_a_distribution(mnist_idx_dir, tmp_path, method):
    assert run(*baseline(method, mnist_idx_dir, tmp_path, "--distribution", "erk", "--target-sparsity", "0.9",
                         "--epochs", "1")) == 0
    result = read_json(tmp_path / "mnist" / f"{method}-erk-0.9" / "seed42.json")
    from harness.networks import ResNet18
    params = pruning.prunable_parameters(ResNet18(1, 10, 8))
    assert [row["total"] - row["nonzero"] for row in result["per_layer"]] == pruning.layer_prune_counts(params, 0.9)
    assert result["params_prunable"] - result["params_nonzero"] == round(0.9 * N_PRUNABLE)


def test_labels_name_non_default_distributions_and_options():
    assert folder_of("random", target_sparsity=0.9) == "random-0.9"
    assert folder_of("random", target_sparsity=0.9, distribution="global") == "random-0.9"  # the default, named
    assert folder_of("random", target_sparsity=0.9, distribution="erk") == "random-erk-0.9"
    assert folder_of("snip", target_sparsity=0.9, distribution="uniform") == "snip-uniform-0.9"
    assert folder_of("rigl", target_sparsity=0.9) == "rigl-0.9"
    assert folder_of("set", target_sparsity=0.9, distribution="uniform", update_every=50,
                     drop_fraction=0.5) == "set-uniform-every50-drop0.5-0.9"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_dynamic_sparse_training_on_cuda(mnist_idx_dir, tmp_path, updates, method):
    args = ("--target-sparsity", "0.9", "--update-every", "2", "--epochs", "2", "--device", "cuda")
    assert run(*baseline(method, mnist_idx_dir, tmp_path, *args)) == 0  # bf16 autocast, channels_last
    result = read_json(tmp_path / "mnist" / f"{method}-every2-0.9" / "seed42.json")
    assert [u["step"] for u in updates] == [2, 4, 6, 8]
    assert all(u["before"]["counts"] == u["after"]["counts"] for u in updates)
    assert result["final_sparsity"] == round(0.9 * N_PRUNABLE) / N_PRUNABLE
    assert result["training_cost"]["cycles"] < 0.5 and result["precision"] == "bf16"
