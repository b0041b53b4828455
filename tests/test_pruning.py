"""Invariants of pruning.py: exact counts, monotone masks, agreement with torch.nn.utils.prune, zeros stay zero."""

import copy
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import pruning
from harness.networks import ResNet18


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10),
    )


def masks_of(params):
    return [m.weight_mask.detach().clone() for m, _ in params]


def n_masked(params) -> int:
    return sum(int((m.weight_mask == 0).sum()) for m, _ in params)


def train_steps(model, optimizer, steps: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_exact_global_count_at_every_epoch_of_a_schedule():
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    n_total = sum(m.weight.numel() for m, _ in params)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    epochs = 7
    for epoch in range(epochs):
        s = pruning.sparsity_schedule("linear", epoch, epochs, 0.796)
        pruning.global_magnitude_prune(params, s, optimizer=opt)
        assert n_masked(params) == round(s * n_total)
        train_steps(model, opt, 3, seed=epoch)
    assert pruning.global_sparsity(params) == pytest.approx(round(0.796 * n_total) / n_total, abs=0)


def test_pruned_entries_are_the_smallest_active_magnitudes():
    # Threshold property: every newly pruned |w| <= every surviving |w|.
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    pruning.global_magnitude_prune(params, 0.3)
    before = torch.cat([m.weight_mask.flatten() for m, _ in params])
    pruning.global_magnitude_prune(params, 0.6)
    after = torch.cat([m.weight_mask.flatten() for m, _ in params])
    w = torch.cat([m.weight_orig.detach().abs().flatten() for m, _ in params])
    newly = (before == 1) & (after == 0)
    assert newly.any() and w[newly].max() <= w[after == 1].min()


def test_masks_never_regrow_even_if_pruned_weight_orig_is_changed():
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    pruning.global_magnitude_prune(params, 0.5)
    old = masks_of(params)
    with torch.no_grad():  # behind the method's back: pruned entries become the largest of all
        for m, _ in params:
            m.weight_orig[m.weight_mask == 0] = 1e6
    pruning.global_magnitude_prune(params, 0.7)
    for prev, (m, _) in zip(old, params):
        assert torch.all(m.weight_mask <= prev)
    # Asking for less sparsity never regrows either.
    assert pruning.global_magnitude_prune(params, 0.2) == 0
    assert n_masked(params) == round(0.7 * sum(m.weight_mask.numel() for m, _ in params))


def test_ranking_uses_current_weight_orig_not_stale_masked_copy():
    lin = nn.Linear(4, 1, bias=False)
    params = [(lin, "weight")]
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    pruning.attach_masks(params)
    with torch.no_grad():  # as an optimizer step would: weight_orig moves, `weight` is from the last forward
        lin.weight_orig.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0]]))
    pruning.global_magnitude_prune(params, 0.5)
    assert lin.weight_mask.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_matches_torch_global_unstructured_on_resnet18():
    torch.manual_seed(0)
    ours = ResNet18().eval()  # the paper's CIFAR ResNet-18: 11,164,352 prunable weights
    ref = copy.deepcopy(ours)
    p_ours, p_ref = pruning.prunable_parameters(ours), pruning.prunable_parameters(ref)
    n_total = sum(m.weight.numel() for m, _ in p_ours)
    x = torch.randn(2, 3, 32, 32)
    gen = torch.Generator().manual_seed(1)
    for s in (0.2, 0.45, 0.796):
        already = n_masked(p_ref) if prune.is_pruned(ref) else 0
        pruning.global_magnitude_prune(p_ours, s)
        prune.global_unstructured(p_ref, pruning_method=prune.L1Unstructured, amount=round(s * n_total) - already)
        for (a, _), (b, _) in zip(p_ours, p_ref):
            assert torch.equal(a.weight_mask, b.weight_mask)
        with torch.no_grad():  # the same "training" on both, then a forward so torch's `weight` is current
            for (a, _), (b, _) in zip(p_ours, p_ref):
                noise = 0.01 * torch.randn(a.weight_orig.shape, generator=gen)
                a.weight_orig.add_(noise)
                b.weight_orig.add_(noise)
            ours(x), ref(x)


def test_method_class_plugs_into_torch_machinery():
    model, ref = small_cnn(), small_cnn()
    params, p_ref = pruning.prunable_parameters(model), pruning.prunable_parameters(ref)
    prune.global_unstructured(params, pruning_method=pruning.ActiveL1Unstructured, amount=100)
    prune.global_unstructured(p_ref, pruning_method=prune.L1Unstructured, amount=100)
    assert n_masked(params) == 100
    assert all(torch.equal(a.weight_mask, b.weight_mask) for (a, _), (b, _) in zip(params, p_ref))
    lin = nn.Linear(5, 4)
    pruning.ActiveL1Unstructured.apply(lin, "weight", amount=7)
    assert int((lin.weight_mask == 0).sum()) == 7 and prune.is_pruned(lin)


def test_ties_prune_exact_count_lowest_index_first():
    t = torch.ones(10)
    mask = pruning.ActiveL1Unstructured(amount=3).compute_mask(t, torch.ones(10))
    assert mask.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    # Already-pruned entries are skipped, ties continue by index among the active ones.
    default = torch.tensor([0, 1, 0, 1, 1, 1, 1, 1, 1, 1.0])
    mask = pruning.ActiveL1Unstructured(amount=3).compute_mask(t, default)
    assert mask.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    # Global ties across tensors: exact count, and the same result every time.
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    with torch.no_grad():
        a.weight.fill_(0.5), b.weight.fill_(-0.5)
    pruning.global_magnitude_prune([(a, "weight"), (b, "weight")], 0.25)
    assert int((a.weight_mask == 0).sum()) == 8 and int((b.weight_mask == 0).sum()) == 0


def test_weight_equals_orig_times_mask_after_prune_and_forward():
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    pruning.global_magnitude_prune(params, 0.6)
    for m, _ in params:
        assert torch.equal(m.weight, m.weight_orig * m.weight_mask)
    model(torch.randn(2, 3, 8, 8))
    for m, _ in params:
        assert torch.equal(m.weight, m.weight_orig * m.weight_mask)


OPTIMIZERS = {
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_and_optimizer_state_stay_exactly_zero(name):
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    opt = OPTIMIZERS[name](model.parameters())
    train_steps(model, opt, 5)  # state is non-zero everywhere before the first prune
    for epoch in range(1, 5):
        pruning.global_magnitude_prune(params, pruning.sparsity_schedule("linear", epoch, 5, 0.8), optimizer=opt)
        train_steps(model, opt, 10, seed=epoch)
        for m, _ in params:
            pruned = m.weight_mask == 0
            assert torch.all(m.weight_orig[pruned] == 0) and torch.all(m.weight[pruned] == 0)
            for value in opt.state[m.weight_orig].values():
                if torch.is_tensor(value) and value.shape == pruned.shape:
                    assert torch.all(value[pruned] == 0)


def test_without_masking_optimizer_state_momentum_revives_pruned_weight_orig():
    # The control for the test above: it would fail without the optimizer argument.
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, opt, 5)
    pruning.global_magnitude_prune(params, 0.5)
    train_steps(model, opt, 2)
    assert any(bool((m.weight_orig[m.weight_mask == 0] != 0).any()) for m, _ in params)


def test_post_step_hook_enforces_zeros_for_any_optimizer():
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, opt, 5)
    pruning.global_magnitude_prune(params, 0.5)  # optimizer deliberately not given
    handle = pruning.enforce_masks_after_step(opt, params)
    train_steps(model, opt, 3)
    assert all(bool((m.weight_orig[m.weight_mask == 0] == 0).all()) for m, _ in params)
    handle.remove()


def test_hooks_and_buffers_do_not_accumulate():
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    for s in [i / 50 for i in range(40)]:
        pruning.global_magnitude_prune(params, s)
    for m, _ in params:
        hooks = [h for h in m._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        assert len(hooks) == 1 and not isinstance(hooks[0], prune.PruningContainer)
        assert sorted(name for name, _ in m.named_buffers()) == ["weight_mask"]


def test_state_dict_round_trip():
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    pruning.global_magnitude_prune(params, 0.7)
    fresh = small_cnn(seed=1)
    fresh_params = pruning.attach_masks(pruning.prunable_parameters(fresh))
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    model.eval(), fresh.eval()
    assert torch.equal(model(x), fresh(x))
    assert pruning.global_sparsity(fresh_params) == pruning.global_sparsity(params)


def test_make_permanent_loads_into_unpruned_model():
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    pruning.global_magnitude_prune(params, 0.7)
    n_total = sum(m.weight_mask.numel() for m, _ in params)
    expected_zeros = n_masked(params)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    pruning.make_pruning_permanent(params)
    assert not prune.is_pruned(model)
    plain = small_cnn(seed=1).eval()
    plain.load_state_dict(model.state_dict())  # strict: same keys as a never-pruned model
    assert torch.equal(plain(x), before)
    assert sum(int((m.weight == 0).sum()) for m, _ in pruning.prunable_parameters(plain)) == expected_zeros
    assert pruning.global_sparsity(pruning.prunable_parameters(plain)) == expected_zeros / n_total


def test_compiled_model_sees_in_place_mask_updates():
    model = small_cnn().eval()
    params = pruning.prunable_parameters(model)
    pruning.global_magnitude_prune(params, 0.2)
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(2, 3, 8, 8)
    before = compiled(x)
    pruning.global_magnitude_prune(params, 0.9)
    after = compiled(x)
    assert not torch.allclose(after, before)  # a stale mask in the compiled graph would fail here
    assert torch.allclose(after, model(x))


def test_bf16_weights():
    model = small_cnn().to(torch.bfloat16)
    params = pruning.prunable_parameters(model)
    n_total = sum(m.weight.numel() for m, _ in params)
    for s in (0.3, 0.744):
        pruning.global_magnitude_prune(params, s)
        assert n_masked(params) == round(s * n_total)
    assert params[0][0].weight_mask.dtype == torch.bfloat16


def test_more_than_2_pow_24_entries():
    big = nn.Linear(4097, 4096, bias=False)  # 16,781,312 > 2**24 = 16,777,216
    params = [(big, "weight")]
    pruning.global_magnitude_prune(params, 0.5)
    assert n_masked(params) == round(0.5 * big.weight.numel())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cpu = small_cnn()
    gpu = copy.deepcopy(cpu).cuda()
    p_cpu, p_gpu = pruning.prunable_parameters(cpu), pruning.prunable_parameters(gpu)
    for s in (0.3, 0.8):
        pruning.global_magnitude_prune(p_cpu, s)
        pruning.global_magnitude_prune(p_gpu, s)
    assert all(torch.equal(a.weight_mask, b.weight_mask.cpu()) for (a, _), (b, _) in zip(p_cpu, p_gpu))


def test_prunable_parameters_selects_conv_and_linear_weights():
    model = small_cnn()
    assert [type(m) for m, _ in pruning.prunable_parameters(model)] == [nn.Conv2d, nn.Conv2d, nn.Linear]
    assert [type(m) for m, _ in pruning.prunable_parameters(model, exclude=["0", nn.Linear])] == [nn.Conv2d]
    with pytest.raises(ValueError, match="does not have"):
        pruning.prunable_parameters(model, exclude=["fc"])


def test_the_default_set_is_every_weight_matrix_and_nothing_else():
    mha_separate = nn.MultiheadAttention(8, 2, kdim=4, vdim=6)
    model = nn.ModuleDict({"emb": nn.Embedding(10, 8), "norm": nn.LayerNorm(8), "mha": nn.MultiheadAttention(8, 2),
                           "sep": mha_separate, "lstm": nn.LSTM(8, 4, proj_size=2, bidirectional=True),
                           "up": nn.ConvTranspose2d(2, 3, 2), "c1": nn.Conv1d(2, 2, 3), "c3": nn.Conv3d(1, 1, 2)})
    got = [f"{type(m).__name__}.{n}" for m, n in pruning.prunable_parameters(model)]
    assert got == ["MultiheadAttention.in_proj_weight", "NonDynamicallyQuantizableLinear.weight",
                   "MultiheadAttention.q_proj_weight", "MultiheadAttention.k_proj_weight",
                   "MultiheadAttention.v_proj_weight", "NonDynamicallyQuantizableLinear.weight",
                   "LSTM.weight_ih_l0", "LSTM.weight_hh_l0", "LSTM.weight_hr_l0", "LSTM.weight_ih_l0_reverse",
                   "LSTM.weight_hh_l0_reverse", "LSTM.weight_hr_l0_reverse",
                   "ConvTranspose2d.weight", "Conv1d.weight", "Conv3d.weight"]
    with_emb = pruning.prunable_parameters(model, include=[nn.Embedding], exclude=["lstm", "mha.out_proj.weight"])
    assert [f"{type(m).__name__}.{n}" for m, n in with_emb][:3] == [
        "Embedding.weight", "MultiheadAttention.in_proj_weight", "MultiheadAttention.q_proj_weight"]
    assert pruning.prunable_parameters(model, include=["emb.weight"]) == \
        pruning.prunable_parameters(model, include=["emb"])
    pruning.attach_masks(pruning.prunable_parameters(model))  # found again once pruned (weight_orig)
    assert len(pruning.prunable_parameters(model)) == len(got)


@pytest.mark.parametrize("include, message", [
    (["norm"], "include='norm' names no parameter of 2 or more dimensions"),      # 1-D only
    (["norm.weight"], "include='norm.weight' names no parameter"),
    (["nothing"], "include='nothing' names no parameter"),
    ([nn.GRU], "names no parameter"),                                              # no module of that type
])
def test_include_that_names_nothing_prunable_is_refused(include, message):
    model = nn.ModuleDict({"norm": nn.LayerNorm(4), "fc": nn.Linear(4, 2)})
    with pytest.raises(ValueError, match=re.escape(message)):
        pruning.prunable_parameters(model, include=include)


def test_a_weight_read_by_its_parent_is_masked_and_learns():
    # nn.MultiheadAttention reads out_proj.weight without calling out_proj: with torch's forward pre-hook
    # it kept the tensor of the last prune, without autograd history, and stopped learning
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2)
    params = pruning.prunable_parameters(mha)
    pruning.global_magnitude_prune(params, 0.5)
    x = torch.randn(3, 2, 8)
    mha(x, x, x)[0].sum().backward()
    for m, n in params:
        grad, mask = m._parameters[n + "_orig"].grad, m._buffers[n + "_mask"]
        assert grad is not None and bool(grad[mask == 1].ne(0).any()) and bool(grad[mask == 0].eq(0).all())
    pruning.global_magnitude_prune(params, 0.8)  # read after an update, before any forward: current
    assert torch.equal(mha.out_proj.weight, mha.out_proj.weight_orig * mha.out_proj.weight_mask)
    assert int((mha.out_proj.weight != 0).sum()) == int(mha.out_proj.weight_mask.sum())


def test_the_masked_read_keeps_torch_prune_working():
    net = nn.Sequential(nn.Linear(4, 3), nn.GRU(3, 2))
    params = pruning.prunable_parameters(net)
    pruning.global_magnitude_prune(params, 0.5)
    assert prune.is_pruned(net) and type(net[0]).__name__ == "Linear" and isinstance(net[0], nn.Linear)
    assert sorted(net.state_dict()) == sorted(["0.bias", "0.weight_orig", "0.weight_mask", "1.bias_ih_l0", "1.bias_hh_l0",
                                               "1.weight_ih_l0_orig", "1.weight_ih_l0_mask", "1.weight_hh_l0_orig",
                                               "1.weight_hh_l0_mask"])
    prune.remove(net[1], "weight_ih_l0")  # torch's own remove, one tensor of two
    assert isinstance(net[1].weight_ih_l0, nn.Parameter) and net[1]._flat_weights[0] is net[1].weight_ih_l0
    pruning.make_pruning_permanent(params)
    assert type(net[0]) is nn.Linear and type(net[1]) is nn.GRU and not prune.is_pruned(net)
    assert all(isinstance(w, nn.Parameter) for w in net[1]._flat_weights)  # no stale masked copy (pytorch 33618)
    l1 = nn.Linear(4, 4)
    prune.l1_unstructured(l1, "weight", amount=4)  # pruned by torch: attach_masks keeps its mask and hook
    pruning.global_magnitude_prune([(l1, "weight")], 0.5)
    assert int(l1.weight_mask.sum()) == 8 and torch.equal(l1.weight, l1.weight_orig * l1.weight_mask)
    prune.remove(l1, "weight")
    assert type(l1) is nn.Linear and int((l1.weight == 0).sum()) == 8


def test_schedule_values():
    for epochs, target in ((200, 0.796), (30, 0.744)):
        values = [pruning.sparsity_schedule("linear", e, epochs, target) for e in range(epochs)]
        assert values[0] == 0.0 and values[-1] == target
        assert values[1] == pytest.approx(target / (epochs - 1))
        assert all(a < b for a, b in zip(values, values[1:]))
        cubic = [pruning.sparsity_schedule("cubic", e, epochs, target) for e in range(epochs)]
        assert cubic[0] == 0.0 and cubic[-1] == target and all(a <= b for a, b in zip(cubic, cubic[1:]))
    # Configurable ramp: dense for 2 epochs, target from epoch 6 on, starting from 0.1.
    values = [pruning.sparsity_schedule("linear", e, 10, 0.5, initial=0.1, start_epoch=2, end_epoch=6)
              for e in range(10)]
    assert values[:3] == [0.1, 0.1, 0.1] and values[6:] == [0.5] * 4 and values[4] == pytest.approx(0.3)
    assert pruning.sparsity_schedule("linear", 0, 1, 0.8) == 0.8  # a single epoch trains at the target


@pytest.mark.parametrize("kwargs, match", [
    (dict(shape="step"), "unknown schedule"),
    (dict(epoch=5), "epoch"),
    (dict(target=1.0), "target"),
    (dict(start_epoch=4, end_epoch=2), "start_epoch"),
])
def test_schedule_bad_arguments(kwargs, match):
    args = dict(shape="linear", epoch=0, epochs=5, target=0.5) | kwargs
    with pytest.raises(ValueError, match=match):
        pruning.sparsity_schedule(**args)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_sparsity_outside_range_is_refused(sparsity):
    params = pruning.prunable_parameters(small_cnn())
    with pytest.raises(ValueError, match="sparsity must be a number in"):
        pruning.global_magnitude_prune(params, sparsity)


def test_bad_parameter_lists_are_refused():
    model = small_cnn()
    with pytest.raises(ValueError, match="empty"):
        pruning.global_magnitude_prune([], 0.5)
    with pytest.raises(TypeError, match="list of \\(module, name\\) pairs"):
        pruning.global_magnitude_prune(model, 0.5)
    with pytest.raises(TypeError, match="pair"):
        pruning.global_magnitude_prune([model[0].weight], 0.5)
    with pytest.raises(ValueError, match="no parameter named 'running_mean'"):
        pruning.global_magnitude_prune([(model[1], "running_mean")], 0.5)
    with pytest.raises(ValueError, match="no parameter named 'bias'"):
        pruning.global_magnitude_prune([(nn.Linear(2, 2, bias=False), "bias")], 0.5)
    with pytest.raises(ValueError, match="twice"):
        pruning.global_magnitude_prune([(model[0], "weight"), (model[0], "weight")], 0.5)
    with pytest.raises(ValueError, match=r"BatchNorm2d.weight is not a floating tensor of 2 or more dimensions \(shape \(8,\)"):
        pruning.global_magnitude_prune([(model[0], "weight"), (model[1], "weight")], 0.5)
    assert not pruning.prune.is_pruned(model)  # nothing changed: every pair is checked before any is touched
    emb = nn.Embedding(4, 3)
    emb.weight = nn.Parameter(torch.zeros(4, 3, dtype=torch.int32), requires_grad=False)
    with pytest.raises(ValueError, match=r"Embedding.weight is not a floating tensor .* torch.int32"):
        pruning.attach_masks([(emb, "weight")])
    with pytest.raises(ValueError, match="amount"):
        pruning.ActiveL1Unstructured(amount=-1)
    with pytest.raises(ValueError, match="still active"):
        pruning.ActiveL1Unstructured(amount=5).compute_mask(torch.ones(4), torch.ones(4))


@pytest.mark.parametrize("kind", ["normal", "ties", "with_inf"])
def test_sampled_kth_value_equals_torch_kthvalue(kind):
    gen = torch.Generator().manual_seed(0)
    n = 100_003
    scores = torch.randn(n, generator=gen).abs()
    if kind == "ties":
        scores = (scores * 4).round()  # a handful of distinct values, huge ties
    if kind == "with_inf":
        scores[torch.rand(n, generator=gen) < 0.7] = float("inf")
    n_finite = int(torch.isfinite(scores).sum())
    for k in (1, 17, n_finite // 3, n_finite // 2, n_finite - 1, n_finite):
        got = pruning._kth_smallest_value(scores, k, sample_size=1024)
        assert got.item() == torch.kthvalue(scores, k).values.item()


def test_sampled_kth_value_falls_back_when_the_band_misses():
    n, size = 16 * 64 + 1, 64
    idx = torch.randint(n, (size,), generator=torch.Generator().manual_seed(n))  # the helper's own sample
    scores = torch.ones(n)
    scores[idx] = 0.0  # the sample sees only zeros, so its band [0, 0] cannot hold the median
    assert pruning._kth_smallest_value(scores, n // 2, sample_size=size).item() == 1.0


# ----------------------------------------------------------------------------------------------------------
# Custom importance scores and the ranking of non-finite / high-precision values

def test_custom_importance_scores_prune_the_lowest_active_scores_exactly():
    model = small_cnn()
    params = pruning.prunable_parameters(model)
    gen = torch.Generator().manual_seed(3)
    scores = {(m, n): torch.rand(m.weight.shape, generator=gen) for m, n in params}
    n_total = sum(m.weight.numel() for m, _ in params)
    pruning.global_magnitude_prune(params, 0.3, importance_scores=scores)
    first = masks_of(params)
    assert n_masked(params) == round(0.3 * n_total)
    flat = torch.cat([scores[(m, n)].flatten() for m, n in params])
    mask = torch.cat([mk.flatten() for mk in first])
    assert flat[mask == 0].max() < flat[mask == 1].min()  # the lowest scores, not the smallest weights
    # Second call with new scores: only active entries are ranked, even where the pruned ones now score lowest.
    scores2 = {k: v.clone() for k, v in scores.items()}
    for (m, n), old in zip(params, first):
        scores2[(m, n)][old == 0] = -1.0
    assert pruning.global_magnitude_prune(params, 0.6, importance_scores=scores2) == round(0.6 * n_total) - round(0.3 * n_total)
    assert n_masked(params) == round(0.6 * n_total)
    for old, (m, _) in zip(first, params):
        assert torch.all(m.weight_mask <= old)
    flat2 = torch.cat([scores2[(m, n)].flatten() for m, n in params])
    after = torch.cat([m.weight_mask.flatten() for m, _ in params])
    newly = (mask == 1) & (after == 0)
    assert flat2[newly].max() <= flat2[after == 1].min()


def test_importance_scores_for_some_tensors_rank_the_others_by_magnitude():
    a, b = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[5.0, 6.0]]))
        b.weight.copy_(torch.tensor([[0.1, 9.0]]))
    params = [(a, "weight"), (b, "weight")]
    pruning.global_magnitude_prune(params, 0.5, importance_scores={(a, "weight"): torch.tensor([[0.0, 7.0]])})
    assert a.weight_mask.tolist() == [[0.0, 1.0]] and b.weight_mask.tolist() == [[0.0, 1.0]]


def test_bad_importance_scores_are_refused():
    lin = nn.Linear(3, 2)
    other = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="not one of the parameters"):
        pruning.global_magnitude_prune([(lin, "weight")], 0.5, importance_scores={(other, "weight"): torch.ones(2, 3)})
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        pruning.global_magnitude_prune([(lin, "weight")], 0.5, importance_scores={(lin, "weight"): torch.ones(6)})


def test_active_plus_inf_weight_never_collides_with_already_pruned_entries():
    lin = nn.Linear(4, 1, bias=False)
    params = [(lin, "weight")]
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, float("inf"), float("inf"), 0.2]]))
    assert pruning.global_magnitude_prune(params, 0.5) == 2
    assert lin.weight_mask.tolist() == [[0.0, 1.0, 1.0, 0.0]]
    # Next step ranks only the two active +inf entries: exactly one more masked, the lower index.
    assert pruning.global_magnitude_prune(params, 0.75) == 1
    assert lin.weight_mask.tolist() == [[0.0, 0.0, 1.0, 0.0]]
    assert int((lin.weight_mask == 0).sum()) == 3


def test_nan_ranks_as_the_largest_and_the_count_is_what_was_masked():
    lin = nn.Linear(5, 1, bias=False)
    params = [(lin, "weight")]
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[float("nan"), float("inf"), 1.0, float("nan"), -2.0]]))
    assert pruning.global_magnitude_prune(params, 0.4) == 2
    assert lin.weight_mask.tolist() == [[1.0, 1.0, 0.0, 1.0, 0.0]]
    assert pruning.global_magnitude_prune(params, 0.6) == 1  # +inf before any NaN
    assert lin.weight_mask.tolist() == [[1.0, 0.0, 0.0, 1.0, 0.0]]
    assert pruning.global_magnitude_prune(params, 0.8) == 1  # then NaN, lower index first
    assert lin.weight_mask.tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0]]
    assert int((lin.weight_mask == 0).sum()) == 4
    # A NaN score, same rule, through the method class.
    mask = pruning.ActiveL1Unstructured(amount=2).compute_mask(
        torch.tensor([float("nan"), 3.0, 1.0]), torch.ones(3))
    assert mask.tolist() == [1.0, 0.0, 0.0]


def test_float64_weights_are_ranked_in_float64():
    lin = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1 + 1e-12, 1.0]], dtype=torch.float64))
    pruning.global_magnitude_prune([(lin, "weight")], 0.5)
    assert lin.weight_mask.tolist() == [[1.0, 0.0]]  # in float32 both are 1.0 and the tie would prune index 0
    mask = pruning.ActiveL1Unstructured(amount=1).compute_mask(lin.weight_orig, torch.ones(1, 2, dtype=torch.float64))
    assert mask.tolist() == [[1.0, 0.0]]


def test_select_smallest_active_large_vector_with_inactive_infs():
    gen = torch.Generator().manual_seed(5)
    n = 2_000_003  # above the sampled-band threshold
    scores = torch.randn(n, generator=gen).abs()
    scores[torch.rand(n, generator=gen) < 0.01] = float("inf")
    active = torch.rand(n, generator=gen) < 0.6
    for k in (1, 1000, int(active.sum()) // 2, int(active.sum())):
        sel = pruning.select_smallest_active(scores, active, k)
        assert int(sel.sum()) == k and not bool((sel & ~active).any())
        if k < int(active.sum()):
            assert scores[sel].max() <= scores[active & ~sel].min()


# ----------------------------------------------------------------------------------------------------------
# Compact sparse checkpoints

def test_compact_state_dict_round_trip_is_bit_exact(tmp_path):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=gen)
    w[torch.rand(64, 32, generator=gen) < 0.8] = 0.0
    w[0, :3] = torch.tensor([-0.0, float("nan"), float("-inf")])
    state = {"a.weight": w, "b.weight": w.to(torch.bfloat16), "c.weight": w.double(), "dense.weight": torch.randn(8, 8),
             "bias": torch.zeros(64), "bn.num_batches_tracked": torch.tensor(7), "ints": torch.zeros(4, 4, dtype=torch.int64)}
    compact = pruning.compact_state_dict(state)
    assert set(compact["sparse"]) == {"a.weight", "b.weight", "c.weight"}  # the mostly-zero floating matrices
    torch.save(compact, tmp_path / "c.pt")
    restored = pruning.expand_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    assert list(restored) == list(state)
    for k, v in state.items():
        assert restored[k].dtype == v.dtype and restored[k].shape == v.shape
        assert torch.equal(restored[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k  # bits
    assert pruning.expand_state_dict(state) is state  # a plain state_dict passes through


def test_compact_resnet18_at_the_papers_sparsity_is_under_0_3x_and_loads_into_a_plain_model(tmp_path):
    torch.manual_seed(0)
    model = ResNet18()
    params = pruning.prunable_parameters(model)
    pruning.global_magnitude_prune(params, 0.796)
    pruning.make_pruning_permanent(params)
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    torch.save(pruning.compact_state_dict(model.state_dict()), tmp_path / "compact.pt")
    ratio = (tmp_path / "compact.pt").stat().st_size / (tmp_path / "dense.pt").stat().st_size
    assert ratio <= 0.3, ratio
    plain = ResNet18()
    plain.load_state_dict(pruning.expand_state_dict(torch.load(tmp_path / "compact.pt", weights_only=True)))
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in plain.state_dict().items())


def small_compact() -> dict:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(32, 16, generator=gen)
    w[torch.rand(32, 16, generator=gen) < 0.8] = 0.0
    return pruning.compact_state_dict({"a.weight": w, "bias": torch.randn(32, generator=gen)})


def test_two_bytes_changed_inside_a_compact_file_are_caught_naming_the_tensor(tmp_path):
    compact = small_compact()
    torch.save(compact, tmp_path / "c.pt")
    raw = (tmp_path / "c.pt").read_bytes()
    values = compact["sparse"]["a.weight"]["values"].numpy().tobytes()
    at = raw.index(values) + 8  # inside the survivors' values, as a bad disk or copy would
    damaged = raw[:at] + bytes(b ^ 0x40 for b in raw[at:at + 2]) + raw[at + 2:]
    (tmp_path / "c.pt").write_bytes(damaged)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)  # torch itself does not notice
    with pytest.raises(ValueError, match=r"^compact state_dict: 'a.weight' does not match its SHA-256"):
        pruning.expand_state_dict(loaded)


@pytest.mark.parametrize("damage, message", [
    (lambda c: c["sparse"].pop("a.weight"), "'a.weight' is missing or malformed"),
    (lambda c: c["sparse"]["a.weight"].update(values=c["sparse"]["a.weight"]["values"][:-1]), "values for"),
    (lambda c: c["sparse"]["a.weight"].update(bits=c["sparse"]["a.weight"]["bits"][:-1]), "mask bytes for 512"),
    (lambda c: c["sparse"]["a.weight"].update(shape=[32, "16"]), "malformed shape"),
    (lambda c: c.pop("dense"), "no 'dense' entry"),
    (lambda c: c["sha256"].update(bias="0" * 64), "'bias' does not match its SHA-256"),
])
def test_malformed_or_truncated_compact_entries_raise_one_error_naming_the_key(damage, message):
    compact = small_compact()
    damage(compact)
    with pytest.raises(ValueError, match="compact state_dict: ") as info:
        pruning.expand_state_dict(compact)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_compact_files_of_the_first_format_still_expand():
    compact = small_compact()
    old = {**compact, "format": "pruning.compact_state_dict/1"}
    del old["sha256"]
    assert all(torch.equal(a, b) for a, b in zip(pruning.expand_state_dict(old).values(),
                                                 pruning.expand_state_dict(compact).values()))


class Conv1D(nn.Module):  # transformers.pytorch_utils.Conv1D's shape, written here: weight (in, out), y = x W + b
    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


def test_transformers_conv1d_is_in_the_default_set_and_every_layout_dependent_function_agrees_with_linear():
    torch.manual_seed(0)
    conv1d = nn.Sequential(Conv1D(12, 6), nn.ReLU(), Conv1D(4, 12))
    linear = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():  # the same layers, transposed
        for c, lin in ((conv1d[0], linear[0]), (conv1d[2], linear[2])):
            lin.weight.copy_(c.weight.t())
            lin.bias.copy_(c.bias)
    params, same = pruning.prunable_parameters(conv1d), pruning.prunable_parameters(linear)
    assert [n for _, n in params] == ["weight", "weight"]
    for distribution in ("uniform", "erk"):  # ERK's (n_in + n_out) / (n_in * n_out) does not see the layout
        assert pruning.layer_prune_counts(params, 0.7, distribution) == pruning.layer_prune_counts(same, 0.7, distribution)
    pruning.global_magnitude_prune(params, 0.6)
    pruning.global_magnitude_prune(same, 0.6)
    assert all(torch.equal(c.weight_mask, lin.weight_mask.t()) for (c, _), (lin, _) in zip(params, same))
    x = torch.randn(3, 6)
    assert torch.allclose(conv1d(x), linear(x), atol=1e-6)
    report, theirs = pruning.sparsity_report(conv1d, params), pruning.sparsity_report(linear, same)
    assert [(r["name"], r["shape"]) for r in report] == [("0.weight", [6, 12]), ("2.weight", [12, 4])]
    assert [r["nonzero"] for r in report] == [r["nonzero"] for r in theirs] and sum(r["nonzero"] for r in report) == 48
    pruning.make_pruning_permanent(params)
    packed = pruning.compact_state_dict(conv1d.state_dict())
    assert all(torch.equal(pruning.expand_state_dict(packed)[k], v) for k, v in conv1d.state_dict().items())


class TiedLM(nn.Module):  # input and output embeddings tied, as GPT-2, BERT, T5 and OPT do
    def __init__(self):
        super().__init__()
        self.emb, self.body, self.head = nn.Embedding(20, 8), nn.Linear(8, 8), nn.Linear(8, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(torch.relu(self.body(self.emb(x))))


def test_a_weight_tied_to_a_dense_embedding_stays_dense_and_says_so_in_one_warning():
    model = TiedLM()
    with pytest.warns(UserWarning, match=r"^head\.weight is tied to emb\.weight, which is left dense: it stays dense") as said:
        params = pruning.prunable_parameters(model)
    assert len(said) == 1 and params == [(model.body, "weight")]


@pytest.mark.parametrize("include", [[nn.Embedding], ["emb.weight"], ["head.weight"], ["head"]])
def test_a_tied_tensor_is_one_tensor_under_every_name(include):
    torch.manual_seed(0)
    model = TiedLM()
    params = pruning.prunable_parameters(model, include=include)
    assert len(params) == 2 and (model.body, "weight") in params  # the tied tensor once, under one name
    pruning.attach_masks(params)
    pruning.attach_masks(params)  # idempotent: nothing double-masked
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    assert sum(p.numel() for p in model.parameters()) == 20 * 8 + 8 * 8 + 8  # one Parameter for both names
    x = torch.randint(0, 20, (4, 5))
    for target in (0.3, 0.6):
        pruning.global_magnitude_prune(params, target, optimizer=opt)
        assert sum(int((m._buffers[n + "_mask"] == 0).sum()) for m, n in params) == round(target * 224)
        assert sorted(r["total"] for r in pruning.sparsity_report(model, params)) == [64, 160]  # counted once
        opt.zero_grad()
        nn.functional.cross_entropy(model(x).reshape(-1, 20), x.reshape(-1)).backward()
        opt.step()
        primary = model.emb if (model.emb, "weight") in params else model.head  # the name it is listed under
        assert torch.equal(model.head.weight, model.emb.weight)
        assert bool(model.head.weight[primary.weight_mask == 0].eq(0).all())
    model.to(torch.float64)  # new mask buffers: both names still read the one mask
    pruning.global_magnitude_prune(params, 0.8)
    assert torch.equal(model.head.weight, model.emb.weight)
    out = model(x)
    pruning.make_pruning_permanent(params)
    assert model.head.weight is model.emb.weight and torch.equal(model(x), out)  # tied again, as the model made it


def test_a_tied_tensor_listed_under_two_names_is_refused():
    model = TiedLM()
    with pytest.raises(ValueError, match="lists the same tensor twice .or a tied tensor under two names"):
        pruning.attach_masks([(model.emb, "weight"), (model.head, "weight")])
    assert not prune.is_pruned(model)


def test_a_parametrized_weight_is_refused_by_include_and_named_when_left_dense():
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3)), nn.Linear(4, 2))
    for entry in ("0", "0.weight"):
        with pytest.raises(ValueError, match=r"weight is parametrized .*remove_parametrizations"):
            pruning.prunable_parameters(model, include=[entry])
    with pytest.warns(UserWarning, match=r"^0: parametrized weight \(weight_norm / spectral_norm\) left dense"):
        assert pruning.prunable_parameters(model) == [(model[1], "weight")]
    assert not prune.is_pruned(model)


def test_plain_weights_gives_the_library_its_own_keys_and_training_goes_on(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    params = pruning.attach_masks(pruning.prunable_parameters(model, include=[nn.Embedding]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruning.global_magnitude_prune(params, 0.5, optimizer=opt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pruning.plain_weights(params):
        assert sorted(model.state_dict()) == ["body.bias", "body.weight", "emb.weight", "head.weight"]
        assert model.head.weight is model.emb.weight
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    x = torch.randint(0, 20, (2, 3))
    model(x).sum().backward()
    assert bool(model.emb.weight_orig.grad[model.emb.weight_mask == 0].eq(0).all())
