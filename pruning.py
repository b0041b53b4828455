"""Progressive global magnitude pruning in one training cycle, on top of ``torch.nn.utils.prune``.

At the start of each epoch, raise the target sparsity on a schedule and prune, by global weight magnitude,
among the weights that are still active. Masks only ever shrink (no regrowth), and pruned weights stay
exactly zero in the forward pass, the gradients and the optimizer state.

This file depends on torch and the standard library only: copy it into your project. Usage::

    import pruning
    params = pruning.prunable_parameters(model)          # every weight matrix (conv, linear, attention, RNN)
    pruning.attach_masks(params)                         # before the optimizer / an EMA copy
    for epoch in range(epochs):
        s = pruning.sparsity_schedule("linear", epoch, epochs, target=0.8)
        pruning.global_magnitude_prune(params, s, optimizer=optimizer)  # also zeroes momentum etc.
        for x, y in loader:                               # your usual loop, unchanged
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
    print(pruning.format_sparsity_table(pruning.sparsity_report(model, params)))
    pruning.make_pruning_permanent(params)               # plain weights, loads into an unpruned model

Hugging Face models (transformers, timm): the default set includes transformers' ``Conv1D``; a tensor tied
under several names (input and output embeddings) is one tensor; save and load with :func:`save_pretrained`
and :func:`from_pretrained` (the library's own calls, masks kept beside the checkpoint).

Per training step instead (GMP-style, with a recovery window): ``events = pruning_events("cubic", 0.8,
start=0, end=int(0.75 * total_steps), every=100)`` and, before step ``t``'s forward pass, ``if t in events:
global_magnitude_prune(params, events[t], optimizer=optimizer)``. :func:`layerwise_magnitude_prune` (``"uniform"``
or ``"erk"``) spreads a target over the layers instead of one global ranking (:func:`layer_prune_counts`).

The file, in order (each section starts with a ``# ----`` divider):

    Ranking            ActiveL1Unstructured, select_smallest_active
    The tensors        prunable_parameters
    Pruning            attach_masks, global_magnitude_prune, layerwise_magnitude_prune, layer_prune_counts
    Optimizer state    zero_pruned_state, enforce_masks_after_step
    Schedules          sparsity_schedule, pruning_events
    Reporting          global_sparsity, sparsity_report, format_sparsity_table, make_pruning_permanent
    Hugging Face       plain_weights, save_pretrained, from_pretrained, load_masks
    Mask metrics       magnitude_mask, mask_distance, mask_overlap, pack_mask, unpack_mask   (the harness's)
    Compact files      compact_state_dict, expand_state_dict                                 (the harness's)
    The masked read    how ``module.weight`` becomes ``weight_orig * weight_mask`` on every read
    Shared checks      argument validation

The model carries torch's usual names (``weight_orig``, ``weight_mask`` buffer, the pruning method in
``_forward_pre_hooks``), applied once; ``module.weight`` is a property computing ``weight_orig * weight_mask``
wherever it is read (see "The masked read" below). Later calls update the mask buffers in place, so nothing
stacks, memory does not grow with the number of updates, and a ``torch.compile``-d model stays valid.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import math
import os
import struct
import warnings
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = [
    "ActiveL1Unstructured",
    "select_smallest_active",
    "prunable_parameters",
    "attach_masks",
    "global_magnitude_prune",
    "layerwise_magnitude_prune",
    "layer_prune_counts",
    "zero_pruned_state",
    "enforce_masks_after_step",
    "sparsity_schedule",
    "pruning_events",
    "magnitude_mask",
    "mask_distance",
    "mask_overlap",
    "pack_mask",
    "unpack_mask",
    "global_sparsity",
    "sparsity_report",
    "format_sparsity_table",
    "make_pruning_permanent",
    "compact_state_dict",
    "expand_state_dict",
    "plain_weights",
    "save_pretrained",
    "from_pretrained",
    "load_masks",
]

ParameterList = Sequence[tuple[nn.Module, str]]


# ----------------------------------------------------------------------------------------------------------
# Ranking: exactly k of the active entries, the smallest, ties to the lower index
# ----------------------------------------------------------------------------------------------------------

class ActiveL1Unstructured(prune.BasePruningMethod):
    r"""Prune the ``amount`` smallest-magnitude entries among those that are still active.

    Entries already masked by ``default_mask`` stay masked whatever their value, so masks are
    cumulative (``new = old AND keep``). Ranking is :func:`select_smallest_active` on ``|t|``: ties at
    the threshold go to the lower flat index, so exactly ``amount`` entries are pruned, always the
    same ones; NaN is pruned last. Works on tensors of any size (``torch.quantile`` refuses more than
    2**24 entries; ``torch.kthvalue`` does not) and any floating dtype (bf16/fp16 are ranked in
    float32, which holds them exactly; float64 in float64).

    Args:
        amount (int): number of currently active entries to prune (0 <= amount <= active count).

    Example:
        >>> t = torch.tensor([0.5, -0.1, 0.0, 0.3, -0.3])
        >>> ActiveL1Unstructured(amount=2).compute_mask(t, torch.tensor([1., 1., 0., 1., 1.]))
        tensor([1., 0., 0., 0., 1.])
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: int) -> None:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ValueError(f"amount must be a non-negative int (a count of entries), got {amount!r}")
        self.amount = amount

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: int) -> "ActiveL1Unstructured":
        """torch's reparametrisation (``name_orig``, ``name_mask``, this object as the forward pre-hook), then
        ``module.name`` made a property that masks on every read (:func:`_mask_on_read`)."""
        method = super().apply(module, name, amount=amount)
        _mask_on_read(module, name)
        return method

    def __call__(self, module: nn.Module, inputs) -> None:
        """No work: where torch's hook stores ``orig * mask`` before each forward, a property computes it on every
        read ("The masked read"). The hook stays registered so that ``prune.is_pruned`` and ``prune.remove`` find it."""

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if self.amount == 0:  # attach_masks: nothing to rank (a copy: the caller may hold default_mask)
            return default_mask.clone()
        active = default_mask.reshape(-1) != 0
        n_active = int(torch.count_nonzero(active))
        if self.amount > n_active:
            raise ValueError(f"cannot prune {self.amount} entries: only {n_active} are still active")
        selected = select_smallest_active(_magnitude(t).reshape(-1), active, self.amount)
        return default_mask.reshape(-1).masked_fill(selected, 0).view_as(default_mask)


def select_smallest_active(scores: torch.Tensor, active: torch.Tensor, k: int) -> torch.Tensor:
    r"""Boolean vector selecting exactly ``k`` of the ``active`` entries of ``scores``, the smallest ones.

    The one ranking rule of this module, used by :class:`ActiveL1Unstructured` and
    :func:`global_magnitude_prune`. Inactive entries are never selected, whatever their score (no marker
    value stands in for them, so an active ``+inf`` is still ranked). NaN ranks above every number,
    ``+inf`` included (pruned last). Ties are broken by position: the lower index is selected first.

    Args:
        scores (torch.Tensor): 1-D scores, any floating dtype (compared in that dtype).
        active (torch.Tensor): 1-D bool, same length: the entries that may be selected.
        k (int): how many to select, 0 <= k <= number of active entries.

    Returns:
        torch.Tensor: 1-D bool, True for the ``k`` selected entries.

    Example:
        >>> s = torch.tensor([float("nan"), 3.0, float("inf"), 1.0, 0.5])
        >>> select_smallest_active(s, torch.tensor([True, True, True, True, False]), 3).tolist()
        [False, True, True, True, False]
    """
    return _select_smallest(scores, active, k, scores_are_scratch=False)


def _select_smallest(scores: torch.Tensor, active: torch.Tensor, k: int, scores_are_scratch: bool) -> torch.Tensor:
    """:func:`select_smallest_active`; with ``scores_are_scratch`` the caller's buffer is overwritten (no copy
    of it: global_magnitude_prune's own concatenation)."""
    selected = torch.zeros_like(active)
    if k <= 0:
        return selected
    nan_here = active & scores.isnan()
    numbers = active & ~nan_here
    n_numbers = int(torch.count_nonzero(numbers))
    if k > n_numbers:  # every active number is selected, then NaN entries by position
        selected = numbers
        selected[torch.nonzero(nan_here).squeeze(1)[:k - n_numbers]] = True
        return selected
    # The k-th smallest active number: the others stand at +inf, so they rank after every active number and
    # tie with an active +inf, which is then the threshold either way (no compaction of the active entries:
    # on a large model that copy costs more than the ranking).
    marked = scores.masked_fill_(~numbers, math.inf) if scores_are_scratch else \
        torch.where(numbers, scores, scores.new_tensor(math.inf))
    threshold = _kth_smallest_value(marked, k)
    selected = numbers & (marked < threshold)
    n_missing = k - int(torch.count_nonzero(selected))  # >= 1: the k-th value itself is not selected yet
    at_threshold = numbers & (marked == threshold)
    if int(torch.count_nonzero(at_threshold)) == n_missing:  # the usual case: all of them (no index needed)
        return selected | at_threshold
    tied = torch.nonzero(at_threshold).squeeze(1)
    selected[tied[:n_missing]] = True
    return selected


def _magnitude(t: torch.Tensor) -> torch.Tensor:
    """|t| detached, in float32 or wider: bf16/fp16 are exact in float32, float64 keeps its precision."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32)).abs()


def _kth_smallest_value(scores: torch.Tensor, k: int, sample_size: int = 65536) -> torch.Tensor:
    """Exactly ``torch.kthvalue(scores, k).values``, but faster on large vectors.

    Why: a full kthvalue partially sorts a copy of all N values. A sorted random sample brackets the
    k-th value in a narrow band [lo, hi]; one counting pass gives how many values lie below lo, and
    kthvalue runs on the band only (~1% of N). If the band missed (unlikely), fall back to the full one.
    """
    n = scores.numel()
    if n <= 16 * sample_size:
        return _kthvalue(scores, k)
    gen = torch.Generator().manual_seed(n)  # fixed: the same band every time for the same input size
    sample = scores[torch.randint(n, (sample_size,), generator=gen).to(scores.device)].sort().values
    q, margin = k / n, 5.0 * math.sqrt((k / n) * (1 - k / n) / sample_size) + 2.0 / sample_size
    lo_i, hi_i = math.floor((q - margin) * sample_size), math.ceil((q + margin) * sample_size)
    lo = sample[lo_i] if lo_i > 0 else scores.new_tensor(-math.inf)
    hi = sample[hi_i] if hi_i < sample_size else scores.new_tensor(math.inf)
    n_below = int(torch.count_nonzero(scores < lo))
    band = scores[(scores >= lo) & (scores <= hi)]
    if n_below < k <= n_below + band.numel():
        return _kthvalue(band, k - n_below)
    return _kthvalue(scores, k)


def _kthvalue(values: torch.Tensor, k: int) -> torch.Tensor:
    if values.device.type == "mps":  # torch < 2.9 has no kthvalue kernel on MPS: rank on the CPU
        return torch.kthvalue(values.cpu(), k).values.to(values.device)
    return torch.kthvalue(values, k).values


# ----------------------------------------------------------------------------------------------------------
# The tensors: which weights a model's default set holds (include= / exclude=, tied names)
# ----------------------------------------------------------------------------------------------------------

def prunable_parameters(
    model: nn.Module,
    exclude: Iterable[str | type] = (),
    include: Iterable[str | type] = (),
) -> list[tuple[nn.Module, str]]:
    r"""The ``(module, name)`` pairs that global pruning ranks together: every weight matrix by default.

    The default set is every weight a layer multiplies its input by: Conv1d/2d/3d and ConvTranspose
    ``weight``, Linear ``weight`` (its subclasses too, e.g. ``MultiheadAttention.out_proj``),
    ``MultiheadAttention`` ``in_proj_weight`` (or ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight``
    when separate), RNN/LSTM/GRU ``weight_ih_l*`` / ``weight_hh_l*`` (``weight_hr_l*`` of a projected LSTM),
    both directions; first conv and final classifier included (what the paper prunes). Left dense, as torchao
    and SparseML do: embeddings, positional embeddings and class tokens, layer scales, norms, biases.

    Args:
        model (nn.Module): the network.
        exclude (iterable of str or type): module names (as in ``model.named_modules()``), parameter names
            (as in ``model.named_parameters()``) or module types to leave dense.
        include (iterable of str or type): added to the default set: parameter names, module names (their
            own parameters of 2 or more dimensions) or module types (the same, for every module of the type),
            e.g. ``include=[nn.Embedding]``. Each must name at least one such parameter.

    Returns:
        list of ``(module, name)`` tuples, in ``named_modules`` order.

    Raises:
        ValueError: naming the entry, if ``exclude`` names no module or parameter of the model, or ``include``
            names nothing prunable (a parameter of fewer than 2 dimensions, or a module that has none).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2))
        >>> len(prunable_parameters(net)), len(prunable_parameters(net, exclude=["3"]))
        (2, 1)
        >>> len(prunable_parameters(net, exclude=[nn.Conv2d]))
        1
        >>> lm = nn.ModuleDict({"emb": nn.Embedding(10, 4), "rnn": nn.GRU(4, 4), "out": nn.Linear(4, 10)})
        >>> [n for _, n in prunable_parameters(lm)]
        ['weight_ih_l0', 'weight_hh_l0', 'weight']
        >>> [n for _, n in prunable_parameters(lm, include=["emb"], exclude=["rnn.weight_hh_l0"])]
        ['weight', 'weight_ih_l0', 'weight']
    """
    exclude, include = list(exclude), list(include)
    modules = dict(model.named_modules())
    params = {f"{m}.{n}".lstrip("."): (modules[m], n) for m, module in modules.items() for n in _own_tensors(module)}
    unknown = sorted(e for e in exclude if isinstance(e, str) and e not in modules and e not in params)
    if unknown:
        raise ValueError(f"exclude names modules or parameters that the model does not have: {unknown}")
    chosen = {(id(m), n) for m, n in _default_matrices(modules.values())}
    named = set()  # the tensors include= names: pruned under every name they have
    for entry in include:
        _refuse_parametrized(entry, modules)
        found = _included(entry, modules, params)
        if not found:
            raise ValueError(f"include={entry!r} names no parameter of 2 or more dimensions in the model")
        chosen |= {(id(m), n) for m, n in found}
        named |= {id(_tensor_of(m, n)) for m, n in found}
    _say_parametrized_left_dense(modules, include)
    excluded_types = tuple(e for e in exclude if isinstance(e, type))
    listed = [(f"{name}.{n}".lstrip("."), module, n) for name, module in modules.items() for n in _own_tensors(module)
              if (id(module), n) in chosen and name not in exclude and f"{name}.{n}".lstrip(".") not in exclude
              and not isinstance(module, excluded_types)]
    return _one_entry_per_tensor(listed, params, named)


def _one_entry_per_tensor(listed: list, params: dict, named: set) -> list[tuple[nn.Module, str]]:
    """``listed`` with each tensor once. A tensor held under several names (tied input and output embeddings)
    is listed under its first, and its other holders are noted on that module (``_pruning_tied``), so that
    :func:`attach_masks` masks every read of it with one mask. A tied tensor one of whose names is left dense
    (an embedding, by default) stays dense, with a warning, unless ``include=`` named it."""
    holders: dict[int, list] = {}
    for full, (module, n) in params.items():
        holders.setdefault(id(_tensor_of(module, n)), []).append((full, module, n))
    in_set = {(id(m), n) for _, m, n in listed}
    result, seen = [], set()
    for full, module, n in listed:
        key = id(_tensor_of(module, n))
        if key in seen:
            continue
        seen.add(key)
        others = [(f, m, k) for f, m, k in holders[key] if (m, k) != (module, n)]
        dense = [f for f, m, k in others if (id(m), k) not in in_set]
        if dense and key not in named:
            warnings.warn(f"{full} is tied to {', '.join(dense)}, which is left dense: it stays dense too "
                          f"(include= that name, e.g. include=[nn.Embedding], prunes them as one tensor)",
                          stacklevel=3)
            continue
        if others:
            module.__dict__.setdefault("_pruning_tied", {})[n] = [(m, k) for _, m, k in others]
        result.append((module, n))
    return result


def _is_hf_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2, OpenAI GPT, ImageGPT, ...): a linear layer whose weight is ``(in,
    out)``, recognised by its class name and its ``nf`` attribute, so that this file needs no transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and "weight" in _own_tensors(module)


def _refuse_parametrized(entry: str | type, modules: dict) -> None:
    """One-line ValueError if ``include=`` names a weight under ``torch.nn.utils.parametrize`` (weight_norm,
    spectral_norm): its tensor is computed from others, and a mask cannot be attached to it."""
    if not isinstance(entry, str):
        return
    owner, suffix = modules.get(entry), None
    if owner is None and "." in entry:
        owner, suffix = modules.get(entry.rsplit(".", 1)[0]), entry.rsplit(".", 1)[1]
    tensors = getattr(owner, "parametrizations", None)
    if tensors is not None and (suffix is None or suffix in tensors):
        raise ValueError(f"include={entry!r}: {type(owner).__name__} weight is parametrized (weight_norm, "
                         f"spectral_norm: torch.nn.utils.parametrize); remove the parametrization first "
                         f"(torch.nn.utils.parametrize.remove_parametrizations(module, 'weight')) or leave it dense")


def _say_parametrized_left_dense(modules: dict, include: list) -> None:
    """Warn, once per call, about layers of the default types whose weight is parametrized: left dense."""
    left = [name for name, m in modules.items() if getattr(m, "parametrizations", None) is not None
            and isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and name not in include]
    if left:
        warnings.warn(f"{', '.join(left[:3])}{' ...' if len(left) > 3 else ''}: parametrized weight "
                      f"(weight_norm / spectral_norm) left dense; remove the parametrization to prune it",
                      stacklevel=3)


def _own_tensors(module: nn.Module) -> list[str]:
    """The names of a module's own parameters, a pruned one by its original name ("weight", not "weight_orig")."""
    return [n[:-len("_orig")] if n.endswith("_orig") and _is_reparametrised(module, n[:-len("_orig")]) else n
            for n in module._parameters if module._parameters[n] is not None]


def _default_matrices(modules: Iterable[nn.Module]) -> list[tuple[nn.Module, str]]:
    """Every weight a layer multiplies its input by (see :func:`prunable_parameters`)."""
    found = []
    for module in modules:
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or _is_hf_conv1d(module):
            names = ["weight"]
        elif isinstance(module, nn.MultiheadAttention):
            names = ["in_proj_weight"] if module._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
        elif isinstance(module, nn.RNNBase):
            names = [n for n in module._flat_weights_names if n.startswith("weight_")]
        else:
            continue
        own = _own_tensors(module)
        found += [(module, n) for n in names if n in own]
    return found


def _included(entry: str | type, modules: dict, params: dict) -> list[tuple[nn.Module, str]]:
    """The tensors of 2+ dimensions an ``include=`` entry names: a parameter, a module's own, or a type's."""
    if isinstance(entry, str) and entry in params:
        candidates = [params[entry]]
    elif isinstance(entry, str) and entry in modules:
        candidates = [(modules[entry], n) for n in _own_tensors(modules[entry])]
    elif isinstance(entry, type):
        candidates = [(m, n) for m in modules.values() if isinstance(m, entry) for n in _own_tensors(m)]
    else:
        candidates = []
    return [(m, n) for m, n in candidates if _tensor_of(m, n).dim() >= 2]


def _tensor_of(module: nn.Module, name: str) -> torch.Tensor:
    return module._parameters[name + "_orig"] if _is_reparametrised(module, name) else module._parameters[name]


# ----------------------------------------------------------------------------------------------------------
# Pruning: masks attached once, then updated in place by one global (or per-layer) ranking
# ----------------------------------------------------------------------------------------------------------

def attach_masks(parameters: ParameterList) -> list[tuple[nn.Module, str]]:
    r"""Reparametrise each tensor as ``weight = weight_orig * weight_mask`` once (mask of ones).

    Idempotent: a tensor that is already pruned (by this module or by ``torch.nn.utils.prune``)
    keeps its mask and hook. Call it on a fresh model before loading a pruned ``state_dict``.

    Args:
        parameters (sequence of (nn.Module, str)): the tensors to reparametrise.

    Returns:
        the validated list of ``(module, name)`` pairs.

    Example:
        >>> net = nn.Linear(4, 2)
        >>> _ = attach_masks([(net, "weight")]); _ = attach_masks([(net, "weight")])
        >>> prune.is_pruned(net), len(net._forward_pre_hooks), int(net.weight_mask.sum())
        (True, 1, 8)
    """
    parameters = _validate_parameters(parameters)
    for module, name in parameters:
        if not _is_reparametrised(module, name):
            ActiveL1Unstructured.apply(module, name, amount=0)
        else:  # pruned by torch.nn.utils.prune: its hook stays, reads become current too
            _mask_on_read(module, name)
        for alias, alias_name in _tied(module, name):  # the same tensor under another name: read through
            if alias_name in alias._parameters:
                _read_through(alias, alias_name, module, name)
    return parameters


def _tied(module: nn.Module, name: str) -> list[tuple[nn.Module, str]]:
    """The other (module, name) holders of this tensor that :func:`prunable_parameters` found (tied weights)."""
    return module.__dict__.get("_pruning_tied", {}).get(name, [])


def global_magnitude_prune(
    parameters: ParameterList,
    sparsity: float,
    optimizer: torch.optim.Optimizer | None = None,
    importance_scores: dict[tuple[nn.Module, str], torch.Tensor] | None = None,
) -> int:
    r"""Prune so that exactly ``round(sparsity * N)`` of the ``N`` entries of all tensors are masked, by one
    ranking over all of them (:func:`layerwise_magnitude_prune` ranks each tensor alone).

    ``sparsity`` is the *overall* fraction, not a fraction of what remains. Only active entries are
    ranked, by the current ``|weight_orig|`` (not the masked copy from the last forward, which can be
    one optimizer step stale) or by ``importance_scores``, lowest first (:func:`select_smallest_active`:
    ties to the lower index, NaN last). If the tensors are already at or above ``sparsity``, nothing
    changes: masks never regrow. When masks change, pruned entries of ``weight_orig`` and of every
    optimizer state tensor shaped like it are set to zero (see :func:`zero_pruned_state`).

    Args:
        parameters (sequence of (nn.Module, str)): the tensors ranked together, e.g. from
            :func:`prunable_parameters`.
        sparsity (float): overall target fraction of masked entries, in [0, 1).
        optimizer (torch.optim.Optimizer, optional): optimizer whose state is masked too.
        importance_scores (dict, optional): as in ``torch.nn.utils.prune.global_unstructured``:
            ``{(module, name): tensor shaped like the parameter}``, ranked as given (pass magnitudes
            for magnitude-like criteria); a tensor without an entry is ranked by ``|weight_orig|``.

    Returns:
        int: the number of entries newly pruned by this call.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 5))
        >>> params = prunable_parameters(net)
        >>> global_magnitude_prune(params, 0.5), global_magnitude_prune(params, 0.8)
        (75, 45)
        >>> global_sparsity(params)
        0.8
        >>> lin = nn.Linear(3, 1); scores = {(lin, "weight"): torch.tensor([[3.0, 1.0, 2.0]])}
        >>> _ = global_magnitude_prune([(lin, "weight")], 0.34, importance_scores=scores); lin.weight_mask
        tensor([[1., 0., 1.]])
    """
    return _magnitude_prune(parameters, sparsity, optimizer, importance_scores, "global")


def layerwise_magnitude_prune(
    parameters: ParameterList,
    sparsity: float,
    distribution: str = "erk",
    optimizer: torch.optim.Optimizer | None = None,
    importance_scores: dict[tuple[nn.Module, str], torch.Tensor] | None = None,
) -> int:
    r"""Prune each tensor alone, by its own ranking, to its count from :func:`layer_prune_counts`: every tensor
    at ``sparsity`` (``"uniform"``) or Erdos-Renyi-Kernel's budgets (``"erk"``); the total is the same
    ``round(sparsity * N)`` as :func:`global_magnitude_prune`'s, whose other rules hold here too.

    Args:
        parameters, sparsity, optimizer, importance_scores: as :func:`global_magnitude_prune`.
        distribution (str): ``"uniform"`` or ``"erk"``.

    Returns:
        int: the number of entries newly pruned by this call.

    Example:
        >>> net = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 5)); params = prunable_parameters(net)
        >>> layerwise_magnitude_prune(params, 0.5, "uniform"), [int(m.weight_mask.sum()) for m in (net[0], net[2])]
        (75, [50, 25])
    """
    if distribution not in DISTRIBUTIONS[1:]:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS[1:])}, got {distribution!r}")
    return _magnitude_prune(parameters, sparsity, optimizer, importance_scores, distribution)


def _magnitude_prune(parameters: ParameterList, sparsity: float, optimizer, importance_scores,
                     distribution: str) -> int:
    parameters = attach_masks(parameters)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    scores_of = _validate_scores(parameters, importance_scores)
    masks = [getattr(m, n + "_mask") for m, n in parameters]
    with torch.no_grad():
        active = _active_entries(masks)
        n_total = active.numel()
        n_new = round(sparsity * n_total) - (n_total - int(torch.count_nonzero(active)))
        if n_new <= 0:
            return 0
        scores = _ranking_scores(parameters, scores_of, masks)
        if distribution == "global":
            selected = _select_smallest(scores, active, n_new, scores_are_scratch=True)
        else:  # each tensor alone, to its own count (never regrowing one that is already sparser)
            sizes = [m.numel() for m in masks]
            counts = layer_prune_counts(parameters, sparsity, distribution)
            selected = torch.cat([select_smallest_active(s, a, count - int((~a).sum())) for s, a, count in
                                  zip(scores.split(sizes), active.split(sizes), counts)])
            n_new = int(selected.sum())
        sizes = [m.numel() for m in masks]
        for mask, sel in zip(masks, selected.split(sizes)):
            # In place: every read of `module.name` and any compiled graph use this very buffer.
            mask.masked_fill_(sel.view_as(mask).to(mask.device), 0)
        pruned = (~active).logical_or_(selected)  # every masked entry now, from the bool vectors at hand
    zero_pruned_state(parameters, optimizer, entries=pruned.split(sizes))
    return n_new


DISTRIBUTIONS = ("global", "uniform", "erk")


def layer_prune_counts(parameters: ParameterList, sparsity: float, distribution: str = "erk") -> list[int]:
    r"""How many entries of each tensor a layer-wise ``distribution`` of ``sparsity`` prunes.

    * ``"uniform"``: every tensor at ``sparsity``.
    * ``"erk"`` (Erdős–Rényi-Kernel; Evci et al. 2020, google-research/rigl ``sparse_utils``): the density of a
      tensor of shape ``(n_out, n_in, k_h, k_w)`` is ``eps * (n_out + n_in + k_h + k_w) / (n_out * n_in * k_h *
      k_w)`` (plain Erdős–Rényi for a Linear ``(n_out, n_in)``), with ``eps`` such that the kept total is met.
      A tensor whose density would exceed 1 is kept dense and ``eps`` is solved again over the others,
      repeatedly, until none does.

    Rounding: the kept total is exactly ``N - round(sparsity * N)`` (as :func:`global_magnitude_prune`); each
    tensor keeps the floor of its ideal count, and the units left go to the tensors with the largest
    fractional parts (ties: the earlier tensor), never above a tensor's size.

    Args:
        parameters (sequence of (nn.Module, str)): the tensors, e.g. from :func:`prunable_parameters`.
        sparsity (float): overall fraction to prune, in [0, 1).
        distribution (str): ``"uniform"`` or ``"erk"``.

    Returns:
        list of int: entries to prune per tensor, in ``parameters`` order; they sum to ``round(sparsity * N)``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 64, 3), nn.Flatten(), nn.Linear(64, 10))
        >>> params = prunable_parameters(net); [p[0].weight.numel() for p in params]
        [432, 9216, 640]
        >>> layer_prune_counts(params, 0.8, "uniform"), layer_prune_counts(params, 0.8, "erk")
        ([346, 7372, 512], [113, 8117, 0])
    """
    parameters = _validate_parameters(parameters)
    if distribution not in ("uniform", "erk"):
        raise ValueError(f"unknown layer-wise distribution {distribution!r}: use 'uniform' or 'erk'")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    shapes = [tuple(getattr(m, n + "_orig", getattr(m, n)).shape) for m, n in parameters]
    sizes = [math.prod(s) for s in shapes]
    keep = sum(sizes) - round(sparsity * sum(sizes))
    if distribution == "uniform":
        ideal = [keep * n / sum(sizes) for n in sizes]
    else:
        raw = [sum(s) / math.prod(s) for s in shapes]
        dense: set[int] = set()
        while True:
            eps = (keep - sum(sizes[i] for i in dense)) / sum(raw[i] * sizes[i] for i in range(len(sizes))
                                                             if i not in dense)
            over = {i for i in range(len(sizes)) if i not in dense and eps * raw[i] > 1.0}
            if not over:
                break
            dense |= over
        ideal = [float(sizes[i]) if i in dense else eps * raw[i] * sizes[i] for i in range(len(sizes))]
    kept = [min(math.floor(x), n) for x, n in zip(ideal, sizes)]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    for i in (i for i in by_remainder if kept[i] < sizes[i]):
        if sum(kept) >= keep:
            break
        kept[i] += 1
    if sum(kept) != keep:  # only possible if the tensors cannot hold the kept total
        raise ValueError(f"the {distribution} distribution cannot keep {keep} of {sum(sizes)} entries")
    return [n - k for n, k in zip(sizes, kept)]


def _active_entries(masks: list) -> torch.Tensor:
    """Which entries of all tensors are active, as one bool vector (on the first mask's device)."""
    device = masks[0].device
    active = torch.empty(sum(mask.numel() for mask in masks), dtype=torch.bool, device=device)
    for mask, a in zip(masks, active.split([mask.numel() for mask in masks])):
        torch.ne(mask.reshape(-1).to(device), 0, out=a)
    return active


def _ranking_scores(parameters: list, scores_of, masks: list) -> torch.Tensor:
    """The scores of every entry, concatenated in the widest dtype present (float64 stays float64): the input
    of the one global ranking. Each tensor is written into its slice of one buffer in place (a magnitude as
    a copy, then ``abs_``): on a large model, per-tensor temporaries and a concatenation cost more than the
    ranking itself."""
    parts = [scores_of(m, n) for m, n in parameters]  # (tensor, whether its magnitude is the score)
    dtype = functools.reduce(torch.promote_types, (torch.promote_types(t.dtype, torch.float32) if take_abs else t.dtype
                                                   for t, take_abs in parts))
    sizes = [mask.numel() for mask in masks]
    scores = torch.empty(sum(sizes), dtype=dtype, device=masks[0].device)
    for (t, take_abs), s in zip(parts, scores.split(sizes)):
        s.copy_(t.reshape(-1))
        if take_abs:
            s.abs_()
    return scores


def _validate_scores(parameters: list[tuple[nn.Module, str]], importance_scores: dict | None):
    """A function (module, name) -> (tensor, take its magnitude): the given scores, or weight_orig (ranked by
    its magnitude); bad keys/shapes raise."""
    importance_scores = dict(importance_scores or {})
    known = {(id(m), n): (m, n) for m, n in parameters}
    for key, value in importance_scores.items():
        if not (isinstance(key, tuple) and len(key) == 2 and (id(key[0]), key[1]) in known):
            raise ValueError(f"importance_scores has a key that is not one of the parameters: {key!r:.80}")
        shape = getattr(key[0], key[1] + "_orig").shape
        if not torch.is_tensor(value) or value.shape != shape or not value.is_floating_point():
            raise ValueError(f"importance_scores for {type(key[0]).__name__}.{key[1]} must be a floating tensor "
                             f"of shape {tuple(shape)}")
    by_id = {(id(m), n): v for (m, n), v in importance_scores.items()}

    def scores_of(module: nn.Module, name: str) -> tuple[torch.Tensor, bool]:
        """(the tensor, whether the score is its magnitude): |weight_orig| is taken where it is written."""
        given = by_id.get((id(module), name))
        return (getattr(module, name + "_orig").detach(), True) if given is None else (given.detach(), False)
    return scores_of


# ----------------------------------------------------------------------------------------------------------
# Optimizer state: pruned entries stay exactly zero in momentum and Adam's moments
# ----------------------------------------------------------------------------------------------------------

def zero_pruned_state(parameters: ParameterList, optimizer: torch.optim.Optimizer | None = None,
                      entries: Sequence[torch.Tensor] | None = None) -> None:
    r"""Set pruned entries of ``weight_orig``, of its gradient (if any) and of optimizer state tensors shaped
    like it to zero.

    Why this is enough: the pre-hook makes the gradient of a pruned entry zero, so with the entry,
    its momentum buffer (SGD), ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq`` (Adam, AdamW) all zero,
    weight decay and every update leave it at exactly zero. No per-step work is needed.

    Args:
        parameters (sequence of (nn.Module, str)): pruned tensors.
        optimizer (torch.optim.Optimizer, optional): optimizer holding ``weight_orig`` parameters.
        entries (sequence of bool tensors, optional): per tensor, the entries to zero instead of the pruned
            ones (a mask update that regrows weights resets the regrown entries too, to start them at 0).

    Example:
        >>> net = nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        >>> _ = attach_masks([(net, "weight")])
        >>> net.weight_mask[0, 0] = 0
        >>> zero_pruned_state([(net, "weight")], opt); net.weight_orig[0, 0].item()
        0.0
    """
    if entries is None:
        entries = [getattr(m, n + "_mask") == 0 for m, n in parameters]
    with torch.no_grad():
        for (module, name), zero in zip(parameters, entries):
            orig = getattr(module, name + "_orig")
            zero = zero.view(orig.shape).to(orig.device)
            orig.masked_fill_(zero, 0.0)  # +0.0 (a multiply by the mask would leave -0.0 for negative weights)
            if orig.grad is not None:
                orig.grad.masked_fill_(zero, 0.0)
            if optimizer is None:
                continue
            for value in optimizer.state.get(orig, {}).values():
                if torch.is_tensor(value) and value.shape == orig.shape:
                    value.masked_fill_(zero.to(value.device), 0)


def enforce_masks_after_step(optimizer: torch.optim.Optimizer, parameters: ParameterList):
    r"""Opt-in: after every ``optimizer.step()``, zero pruned entries of ``weight_orig`` and state.

    The paper's "post-optimizer enforcement". Not needed for SGD, Adam or AdamW once
    :func:`global_magnitude_prune` was given the optimizer; use it for optimizers whose state you
    cannot reason about. Costs one multiply per pruned tensor per step.

    Args:
        optimizer (torch.optim.Optimizer): the optimizer to hook.
        parameters (sequence of (nn.Module, str)): pruned tensors.

    Returns:
        a handle; ``handle.remove()`` removes the hook.

    Example:
        >>> net = nn.Linear(3, 1); params = [(net, "weight")]
        >>> opt = torch.optim.RMSprop(net.parameters(), lr=0.1)
        >>> _ = global_magnitude_prune(params, 0.5)
        >>> handle = enforce_masks_after_step(opt, params)
        >>> net(torch.ones(2, 3)).sum().backward(); opt.step()
        >>> int((net.weight_orig == 0).sum())
        2
    """
    parameters = _validate_parameters(parameters)
    return optimizer.register_step_post_hook(lambda opt, args, kwargs: zero_pruned_state(parameters, opt))


# ----------------------------------------------------------------------------------------------------------
# Schedules: the sparsity per epoch (the paper's) or at pruning events every N steps (GMP's)
# ----------------------------------------------------------------------------------------------------------

def sparsity_schedule(
    shape: str,
    epoch: int,
    epochs: int,
    target: float,
    initial: float = 0.0,
    start_epoch: int = 0,
    end_epoch: int | None = None,
) -> float:
    r"""Sparsity to prune to at the start of ``epoch`` (0-based) of ``epochs``.

    Progress ``p = clamp((epoch - start_epoch) / (end_epoch - start_epoch), 0, 1)``, with
    ``end_epoch = epochs - 1`` by default so the first epoch is dense and the last one trains at
    exactly ``target`` (the paper's 0.796 and 0.744 are this schedule's last values).

    * ``"linear"`` (the paper): ``initial + (target - initial) * p``.
    * ``"cubic"`` (Zhu & Gupta 2017): ``target + (initial - target) * (1 - p) ** 3``.

    Args:
        shape (str): ``"linear"`` or ``"cubic"``.
        epoch (int): current epoch, 0-based.
        epochs (int): total epochs.
        target (float): final sparsity in [0, 1).
        initial (float): sparsity at ``start_epoch`` (default 0).
        start_epoch (int): first epoch of the ramp.
        end_epoch (int, optional): epoch from which ``target`` holds (default ``epochs - 1``).

    Returns:
        float: the sparsity for this epoch.

    Example:
        >>> [round(sparsity_schedule("linear", e, 5, 0.8), 3) for e in range(5)]
        [0.0, 0.2, 0.4, 0.6, 0.8]
        >>> [round(sparsity_schedule("cubic", e, 5, 0.8), 3) for e in range(5)]
        [0.0, 0.463, 0.7, 0.788, 0.8]
    """
    if shape not in ("linear", "cubic"):
        raise ValueError(f"unknown schedule {shape!r}: use 'linear' or 'cubic'")
    if epochs < 1 or not 0 <= epoch < epochs:
        raise ValueError(f"need 0 <= epoch < epochs and epochs >= 1, got epoch={epoch}, epochs={epochs}")
    for label, value in (("target", target), ("initial", initial)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{label} sparsity must be in [0, 1), got {value!r}")
    end_epoch = epochs - 1 if end_epoch is None else end_epoch
    if not 0 <= start_epoch <= end_epoch:
        raise ValueError(f"need 0 <= start_epoch <= end_epoch, got {start_epoch} and {end_epoch}")
    return _ramp(shape, epoch, start_epoch, end_epoch, target, initial)


def _ramp(shape: str, t: int, start: int, end: int, target: float, initial: float) -> float:
    """The schedule's one formula, for epochs or steps alike (see :func:`sparsity_schedule`)."""
    if t >= end:
        return float(target)  # exactly the target, no floating-point round trip
    if t <= start:
        return float(initial)
    p = (t - start) / (end - start)
    if shape == "linear":
        return initial + (target - initial) * p
    return target + (initial - target) * (1.0 - p) ** 3


def pruning_events(shape: str, target: float, start: int, end: int, every: int,
                   initial: float = 0.0) -> dict[int, float]:
    r"""The step form of :func:`sparsity_schedule`: at which training steps to prune, and to what sparsity.

    Events fall at ``start, start + every, start + 2 * every, ...`` before ``end``, and exactly at ``end``,
    where the sparsity is exactly ``target``; none after (as SparseML's ``update_frequency`` and jaxpruner's
    ``update_freq / update_start_step / update_end_step``). The sparsity of step ``t`` is the schedule's value
    at progress ``p = (t - start) / (end - start)``. Per-epoch pruning (the paper) is the special case
    ``every = steps per epoch``, ``start = 0``, ``end = (epochs - 1) * steps per epoch``.

    Args:
        shape (str): ``"linear"`` or ``"cubic"``.
        target (float): final sparsity in [0, 1).
        start (int): the step of the first event (>= 0).
        end (int): the step of the last event (>= start).
        every (int): steps between events (>= 1).
        initial (float): sparsity at ``start`` (default 0).

    Returns:
        dict: step -> sparsity to prune to before that step's forward pass, in step order.

    Example:
        >>> pruning_events("linear", 0.8, start=10, end=20, every=4)
        {10: 0.0, 14: 0.32000000000000006, 18: 0.6400000000000001, 20: 0.8}
        >>> for step in range(25):               # in your loop, before the step's forward pass
        ...     events = pruning_events("cubic", 0.9, 0, 20, 5)
        ...     if step in events: print(step, round(events[step], 4))  # global_magnitude_prune(params, ...)
        0 0.0
        5 0.5203
        10 0.7875
        15 0.8859
        20 0.9
    """
    if shape not in ("linear", "cubic"):
        raise ValueError(f"unknown schedule {shape!r}: use 'linear' or 'cubic'")
    if not (0 <= start <= end and every >= 1):
        raise ValueError(f"need 0 <= start <= end and every >= 1, got start={start}, end={end}, every={every}")
    for label, value in (("target", target), ("initial", initial)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{label} sparsity must be in [0, 1), got {value!r}")
    return {t: _ramp(shape, t, start, end, target, initial) for t in [*range(start, end, every), end]}


# ----------------------------------------------------------------------------------------------------------
# Reporting and finishing: counts, the per-layer table, plain weights again
# ----------------------------------------------------------------------------------------------------------

def global_sparsity(parameters: ParameterList) -> float:
    r"""Fraction of entries that are masked (or zero, for tensors without a mask), over all tensors.

    Example:
        >>> net = nn.Linear(4, 5); params = [(net, "weight")]
        >>> _ = global_magnitude_prune(params, 0.25); global_sparsity(params)
        0.25
    """
    rows = [_count(module, name) for module, name in parameters]
    total = sum(r[0] for r in rows)
    return (total - sum(r[1] for r in rows)) / total if total else 0.0


def sparsity_report(model: nn.Module, parameters: ParameterList) -> list[dict]:
    r"""One row per tensor: name, shape, total, nonzero, sparsity; nonzero counts active mask entries.

    Args:
        model (nn.Module): the model the tensors belong to (for their names).
        parameters (sequence of (nn.Module, str)): the tensors to report.

    Returns:
        list of dicts with keys ``name``, ``shape``, ``total``, ``nonzero``, ``sparsity``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)); params = prunable_parameters(net)
        >>> _ = global_magnitude_prune(params, 0.5)
        >>> [(r["name"], r["total"]) for r in sparsity_report(net, params)]
        [('0.weight', 20), ('1.weight', 10)]
    """
    names = {id(module): name for name, module in model.named_modules()}
    rows = []
    for module, tensor_name in parameters:
        if id(module) not in names:
            raise ValueError(f"{type(module).__name__} in parameters is not a submodule of the model")
        total, nonzero = _count(module, tensor_name)
        rows.append({
            "name": f"{names[id(module)]}.{tensor_name}".lstrip("."),
            "shape": list(getattr(module, tensor_name).shape),
            "total": total,
            "nonzero": nonzero,
            "sparsity": (total - nonzero) / total if total else 0.0,
        })
    return rows


def format_sparsity_table(rows: list[dict]) -> str:
    r"""Plain-text table of :func:`sparsity_report` rows with a global total line.

    Example:
        >>> print(format_sparsity_table([{"name": "fc.weight", "shape": [2, 4], "total": 8,
        ...                               "nonzero": 2, "sparsity": 0.75}]))
        layer      shape   total  nonzero  sparsity
        fc.weight  [2, 4]      8        2    75.00%
        all        -           8        2    75.00%
    """
    total = sum(r["total"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    lines = [("layer", "shape", "total", "nonzero", "sparsity")]
    for r in rows + [{"name": "all", "shape": "-", "total": total, "nonzero": nonzero,
                      "sparsity": (total - nonzero) / total if total else 0.0}]:
        lines.append((r["name"], str(r["shape"]), str(r["total"]), str(r["nonzero"]), f"{100 * r['sparsity']:.2f}%"))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in lines
    )


def make_pruning_permanent(parameters: ParameterList) -> None:
    r"""Fold masks into plain parameters (``prune.remove``), so the model loads into an unpruned one.

    Example:
        >>> net = nn.Linear(4, 5); params = [(net, "weight")]
        >>> _ = global_magnitude_prune(params, 0.5); make_pruning_permanent(params)
        >>> sorted(net.state_dict()), int((net.weight == 0).sum())
        (['bias', 'weight'], 10)
    """
    for module, name in parameters:
        if _is_reparametrised(module, name):
            prune.remove(module, name)
        for alias, alias_name in _tied(module, name):  # tied: the same Parameter again, as before
            _untie(alias, alias_name, getattr(module, name))


# ----------------------------------------------------------------------------------------------------------
# Saving and loading the way Hugging Face libraries do (save_pretrained / from_pretrained)
# ----------------------------------------------------------------------------------------------------------

def _fold(module: nn.Module, name: str) -> tuple[nn.Parameter, torch.Tensor]:
    """Make ``module.name`` a plain parameter again: the ``name_orig`` Parameter object itself (so optimizers
    and tied modules keep it), holding its masked values; returns it and the mask, for :func:`_unfold`."""
    orig, mask = module._parameters.pop(name + "_orig"), module._buffers.pop(name + "_mask")
    delattr(module, name)  # the masking property's deleter: the module's class without it
    with torch.no_grad():
        orig.mul_(mask)  # pruned entries are 0 already (zero_pruned_state); made certain
    module._parameters[name] = orig
    if isinstance(module, nn.RNNBase):
        module._init_flat_weights()
    return orig, mask


def _unfold(module: nn.Module, name: str, orig: nn.Parameter, mask: torch.Tensor) -> None:
    """Reparametrise ``module.name`` as ``orig * mask`` again, with these very objects (a fold undone)."""
    del module._parameters[name]
    module._parameters[name + "_orig"] = orig
    module._buffers[name + "_mask"] = mask
    _mask_on_read(module, name)


def _untie(module: nn.Module, name: str, tensor: nn.Parameter) -> None:
    """A tied holder that reads through (:func:`_read_through`) holds ``tensor`` itself again, as the library
    tied it; nothing if it does not read through."""
    if name in module.__dict__.get("_pruning_source", {}):
        delattr(module, name)
        module._parameters[name] = tensor


@contextlib.contextmanager
def plain_weights(parameters: ParameterList):
    r"""Within the block, every pruned tensor is a plain parameter holding its masked values, as in an
    unpruned model: state-dict keys are the library's own (``weight``, not ``weight_orig`` / ``weight_mask``)
    and tied tensors are one Parameter again, so a model library's own save (``save_pretrained``, safetensors)
    writes what it expects. The masks come back on leaving, with the same Parameter objects: the optimizer and
    training go on unchanged. :func:`save_pretrained` uses it.

    Example:
        >>> net = nn.Linear(4, 2); params = [(net, "weight")]; _ = global_magnitude_prune(params, 0.5)
        >>> with plain_weights(params):
        ...     sorted(net.state_dict())
        ['bias', 'weight']
        >>> sorted(net.state_dict()), int(net.weight_mask.sum())
        (['bias', 'weight_mask', 'weight_orig'], 4)
    """
    parameters = _validate_parameters(parameters)
    folded, untied = [], []
    try:
        for module, name in parameters:
            if _is_reparametrised(module, name):
                folded.append((module, name, *_fold(module, name)))
                for alias, alias_name in _tied(module, name):
                    if alias_name in alias.__dict__.get("_pruning_source", {}):
                        _untie(alias, alias_name, folded[-1][2])
                        untied.append((alias, alias_name, module, name))
        yield
    finally:
        for alias, alias_name, module, name in untied:
            _read_through(alias, alias_name, module, name)
        for m, n, orig, mask in reversed(folded):
            _unfold(m, n, orig, mask)


MASKS_FILE = "pruning_masks.pt"  # beside a Hugging Face checkpoint: the masks, packed (save_pretrained)


def save_pretrained(model: nn.Module, parameters: ParameterList, folder: str, **kwargs) -> None:
    r"""``model.save_pretrained(folder, **kwargs)`` (transformers, timm's ``save_pretrained`` alike) with the
    masks folded in (:func:`plain_weights`), and the masks beside it in ``MASKS_FILE``: a checkpoint any copy
    of the library loads as a plain model, and :func:`from_pretrained` loads as the pruned one, masks
    included, so that training resumes at the same sparsity. Mid-training or after
    :func:`make_pruning_permanent` alike; tied weights stay tied (saved once); safetensors or not.

    Args:
        model (nn.Module): a model with a ``save_pretrained`` method.
        parameters (sequence of (nn.Module, str)): its pruned tensors, as given to :func:`attach_masks`.
        folder (str): the checkpoint folder.
        **kwargs: passed to ``model.save_pretrained`` (e.g. ``safe_serialization=False``).
    """
    parameters = _validate_parameters(parameters)
    names = {id(m): name for name, m in model.named_modules()}
    masks = {f"{names[id(m)]}.{n}".lstrip("."): {"shape": list(getattr(m, n + "_mask").shape),
                                                "bits": pack_mask(getattr(m, n + "_mask").reshape(-1) != 0)}
             for m, n in parameters if _is_reparametrised(m, n)}
    with plain_weights(parameters):
        model.save_pretrained(folder, **kwargs)
    path = os.path.join(folder, MASKS_FILE)
    if os.path.exists(path) and not masks:  # a permanent model: no masks, and none left from an earlier save
        os.remove(path)
    elif masks:
        tmp = path + ".tmp"
        torch.save({"format": "pruning.masks/1", "masks": masks}, tmp)
        os.replace(tmp, path)


def from_pretrained(model_class, folder: str, **kwargs):
    r"""``model_class.from_pretrained(folder, **kwargs)``, then the masks :func:`save_pretrained` wrote beside
    it, attached and set (the tensors they name, with every tied name); returns ``(model, parameters)``
    (``parameters`` is None for a checkpoint without masks: a permanent or unpruned model).

    A checkpoint that ``save_pretrained`` wrote while masks were attached holds ``weight_orig`` /
    ``weight_mask`` keys, which the library's own ``from_pretrained`` does not know: it reports them as
    unexpected and **re-initialises** those layers. This refuses such a checkpoint before loading it.

    Raises:
        ValueError: one line, if the checkpoint holds ``*_orig`` / ``*_mask`` keys (save with
            :func:`save_pretrained`, or build the model, :func:`attach_masks` and ``load_state_dict``).
    """
    masked = sorted(k for k in _checkpoint_keys(folder) if k.endswith(("_orig", "_mask")))
    if masked:
        raise ValueError(f"{folder} holds {len(masked)} keys of masks attached at save time ({masked[0]}, ...): "
                         f"from_pretrained would re-initialise those layers. Build the model, call "
                         f"pruning.attach_masks(pruning.prunable_parameters(model)) and load the state dict "
                         f"yourself, or save with pruning.save_pretrained")
    model = model_class.from_pretrained(folder, **kwargs)
    path = os.path.join(folder, MASKS_FILE)
    if not os.path.exists(path):
        return model, None
    return model, load_masks(model, torch.load(path, weights_only=True)["masks"])


def load_masks(model: nn.Module, masks: dict) -> list[tuple[nn.Module, str]]:
    """Attach masks to the tensors ``masks`` names (``{"name": {"shape", "bits"}}``, as :func:`save_pretrained`
    writes them) and set them; returns the parameters, for the optimizer and later pruning."""
    with warnings.catch_warnings():  # the masks name what was pruned: no warning about what was not
        warnings.simplefilter("ignore")
        params = prunable_parameters(model, include=list(masks)) if masks else []  # each tensor once, ties noted
    names = {id(m): name for name, m in model.named_modules()}
    wanted = {f"{names[id(m)]}.{n}".lstrip("."): (m, n) for m, n in params}
    wanted = {name: wanted[name] for name in masks if name in wanted}
    if len(wanted) != len(masks):
        raise ValueError(f"the masks name tensors this model does not prune: {sorted(set(masks) - set(wanted))[:3]}")
    attach_masks(list(wanted.values()))
    with torch.no_grad():
        for name, (m, n) in wanted.items():
            buffer = getattr(m, n + "_mask")
            buffer.copy_(unpack_mask(masks[name]["bits"], buffer.numel()).view_as(buffer))
    zero_pruned_state(list(wanted.values()))
    return list(wanted.values())


def _checkpoint_keys(folder: str) -> list[str]:
    """The tensor names of a Hugging Face checkpoint folder (safetensors or PyTorch, sharded or not), read
    with the standard library and torch only; [] if none is found."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if os.path.exists(os.path.join(folder, index)):
            with open(os.path.join(folder, index)) as f:
                return list(json.load(f)["weight_map"])
    path = os.path.join(folder, "model.safetensors")
    if os.path.exists(path):  # 8 bytes of header length, then the JSON header
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        return [k for k in header if k != "__metadata__"]
    path = os.path.join(folder, "pytorch_model.bin")
    return list(torch.load(path, map_location="cpu", weights_only=True, mmap=True)) if os.path.exists(path) else []


# ----------------------------------------------------------------------------------------------------------
# Mask metrics, for the harness's mask dynamics (usable alone): what a mask would be now, how far
# two masks are apart, how much of a final mask an early one holds, masks packed to bits
# ----------------------------------------------------------------------------------------------------------

def magnitude_mask(parameters: ParameterList, sparsity: float,
                   importance_scores: dict[tuple[nn.Module, str], torch.Tensor] | None = None) -> torch.Tensor:
    r"""The mask :func:`global_magnitude_prune` would leave at ``sparsity`` now, without changing anything.

    Used to watch a mask form during training ("would the final mask, drawn now, be the same?": the
    Early-Bird distance of You et al. 2020). Entries already pruned stay pruned, as in a real update.

    Args:
        parameters (sequence of (nn.Module, str)): masked tensors, e.g. after :func:`attach_masks`.
        sparsity (float): overall fraction of masked entries, in [0, 1).
        importance_scores (dict, optional): rank by these instead of ``|weight_orig|``, as in
            :func:`global_magnitude_prune`.

    Returns:
        torch.Tensor: 1-D bool over the concatenated entries (in ``parameters`` order), True = kept.

    Example:
        >>> lin = nn.Linear(4, 1); _ = attach_masks([(lin, "weight")])
        >>> with torch.no_grad(): _ = lin.weight_orig.copy_(torch.tensor([[0.1, -3.0, 2.0, 0.5]]))
        >>> magnitude_mask([(lin, "weight")], 0.5).tolist(), lin.weight_mask.tolist()
        ([False, True, True, False], [[1.0, 1.0, 1.0, 1.0]])
    """
    parameters = _validate_parameters(parameters)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    masks = [getattr(m, n + "_mask") for m, n in parameters]
    with torch.no_grad():
        scores = _ranking_scores(parameters, _validate_scores(parameters, importance_scores), masks)
        active = _active_entries(masks)
        n_new = round(sparsity * active.numel()) - int((~active).sum())
        return active & ~select_smallest_active(scores, active, n_new)


def mask_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    r"""Normalised Hamming distance of two masks: the fraction of entries in which they differ.

    Example:
        >>> mask_distance(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0]))
        0.5
    """
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"masks must have the same, nonzero size, got {tuple(a.shape)} and {tuple(b.shape)}")
    return int(((a != 0) != (b != 0)).sum()) / a.numel()


def mask_overlap(early: torch.Tensor, final: torch.Tensor) -> float:
    r"""The fraction of ``final``'s kept entries that ``early`` keeps too (1.0: ``early`` contains ``final``).

    Example:
        >>> mask_overlap(torch.tensor([1, 1, 0, 1]), torch.tensor([1, 0, 1, 1]))
        0.6666666666666666
    """
    if early.shape != final.shape:
        raise ValueError(f"masks must have the same shape, got {tuple(early.shape)} and {tuple(final.shape)}")
    kept = final != 0
    n_kept = int(kept.sum())
    if n_kept == 0:
        raise ValueError("the final mask keeps no entry")
    return int((kept & (early != 0)).sum()) / n_kept


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool/0-1 mask as packed bits (uint8, 8 entries per byte, on the CPU); :func:`unpack_mask` inverts it.

    Example:
        >>> m = torch.tensor([True, False, True, True, False, False, False, False, True])
        >>> pack_mask(m).tolist(), bool((unpack_mask(pack_mask(m), 9) == m).all())
        ([176, 128], True)
    """
    return _pack_bits((mask.reshape(-1) != 0).to(torch.uint8).cpu())


def unpack_mask(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` entries of a :func:`pack_mask` result, as a 1-D bool tensor."""
    return _unpack_bits(packed.cpu(), n)


# ----------------------------------------------------------------------------------------------------------
# Compact checkpoints, the harness's model files (usable alone): pruned tensors stored as their
# nonzero values and a bit mask, each with a SHA-256
# ----------------------------------------------------------------------------------------------------------

COMPACT_FORMAT = "pruning.compact_state_dict/2"  # /2 adds a SHA-256 per tensor; /1 files still expand
_READABLE_FORMATS = ("pruning.compact_state_dict/1", COMPACT_FORMAT)
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # element size -> same-size int


def compact_state_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    r"""A smaller, lossless form of a state_dict with pruned tensors: each floating tensor of 2+ dims that is
    smaller so is stored as a packed bit mask (uint8, one bit per entry) of its nonzero entries plus their
    values; everything else unchanged. Loads with ``torch.load(..., weights_only=True)``.

    "Nonzero" is by bit pattern, so ``-0.0`` and NaN survive: :func:`expand_state_dict` gives back every tensor
    bit for bit, with its dtype, shape and key order, and checks each against the SHA-256 of its bytes stored
    here. At ResNet-18's 79.6% sparsity the file is ~0.24x the dense one (fp32 values of the survivors plus 1
    bit per weight).

    Args:
        state_dict (dict): e.g. ``model.state_dict()`` after :func:`make_pruning_permanent`.

    Returns:
        dict: ``{"format", "keys", "dense": {...}, "sparse": {key: {"shape", "bits", "values"}},
        "sha256": {key: hex digest}}``.

    Example:
        >>> w = torch.tensor([[0.0, 1.5, 0.0, 0.0], [0.0, 0.0, -2.0, 0.0]])
        >>> c = compact_state_dict({"w": w, "b": torch.ones(2)})
        >>> c["sparse"]["w"]["bits"], c["sparse"]["w"]["values"]
        (tensor([66], dtype=torch.uint8), tensor([ 1.5000, -2.0000]))
        >>> torch.equal(expand_state_dict(c)["w"], w)
        True
    """
    dense, sparse, digests = {}, {}, {}
    for key, t in state_dict.items():
        t = t.detach().cpu()
        digests[key] = _digest(t)
        if t.is_floating_point() and t.dim() >= 2 and t.element_size() in _INT_VIEW:
            nonzero = t.contiguous().view(_INT_VIEW[t.element_size()]).reshape(-1) != 0
            n = int(nonzero.sum())
            if n * t.element_size() + (t.numel() + 7) // 8 < t.numel() * t.element_size():
                sparse[key] = {"shape": list(t.shape), "bits": _pack_bits(nonzero),
                               "values": t.reshape(-1)[nonzero].clone()}
                continue
        dense[key] = t
    return {"format": COMPACT_FORMAT, "keys": list(state_dict), "dense": dense, "sparse": sparse, "sha256": digests}


def expand_state_dict(compact: dict) -> dict[str, torch.Tensor]:
    r"""The plain state_dict of :func:`compact_state_dict`, bit-exact and checked; a plain state_dict is
    returned as is.

    Raises:
        ValueError: naming the key, if an entry is missing, malformed or truncated, or its bytes differ from
            the stored SHA-256 (a corrupted file).

    Example:
        >>> net = nn.Linear(8, 4); _ = global_magnitude_prune([(net, "weight")], 0.75)
        >>> make_pruning_permanent([(net, "weight")])
        >>> restored = expand_state_dict(compact_state_dict(net.state_dict()))
        >>> all(torch.equal(restored[k], v) for k, v in net.state_dict().items())
        True
        >>> broken = compact_state_dict(net.state_dict()); broken["sparse"]["weight"]["values"][0] += 1
        >>> expand_state_dict(broken)
        Traceback (most recent call last):
        ...
        ValueError: compact state_dict: 'weight' does not match its SHA-256 (a corrupted file?)
    """
    if not isinstance(compact, dict) or compact.get("format") not in _READABLE_FORMATS:
        return compact
    try:
        keys, dense, sparse = compact["keys"], compact["dense"], compact["sparse"]
    except KeyError as e:
        raise ValueError(f"compact state_dict: no {e.args[0]!r} entry (a truncated file?)") from None
    digests = compact.get("sha256") if compact["format"] == COMPACT_FORMAT else {}
    if not isinstance(digests, dict):
        raise ValueError("compact state_dict: no 'sha256' entry (a truncated file?)")
    out = {}
    for key in keys:
        out[key] = dense[key] if key in dense else _expand_entry(key, sparse.get(key))
        if compact["format"] == COMPACT_FORMAT and digests.get(key) != _digest(out[key]):
            raise ValueError(f"compact state_dict: {key!r} does not match its SHA-256 (a corrupted file?)")
    return out


def _expand_entry(key: str, entry) -> torch.Tensor:
    """One sparse entry as its dense tensor, or ValueError naming ``key`` if it is malformed."""
    def bad(what: str) -> ValueError:
        return ValueError(f"compact state_dict: {key!r} {what}")
    if not isinstance(entry, dict) or not {"shape", "bits", "values"} <= set(entry):
        raise bad("is missing or malformed")
    shape, bits, values = entry["shape"], entry["bits"], entry["values"]
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise bad(f"has a malformed shape {shape!r:.60}")
    n = math.prod(shape)
    if not (isinstance(bits, torch.Tensor) and bits.dtype == torch.uint8 and bits.numel() == (n + 7) // 8):
        raise bad(f"has {getattr(bits, 'numel', lambda: '?')()} mask bytes for {n} entries")
    nonzero = _unpack_bits(bits.reshape(-1), n)
    if not (isinstance(values, torch.Tensor) and values.dim() == 1 and values.numel() == int(nonzero.sum())):
        raise bad(f"has {getattr(values, 'numel', lambda: '?')()} values for {int(nonzero.sum())} mask bits")
    flat = torch.zeros(n, dtype=values.dtype)
    flat[nonzero] = values
    return flat.view(shape)


def _digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes. The bytes are copied out with ``ctypes`` (standard
    library), not ``Tensor.numpy``, so that this file needs nothing but torch."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    data = ctypes.string_at(raw.data_ptr(), raw.numel()) if raw.numel() else b""
    return hashlib.sha256(f"{t.dtype}{list(t.shape)}".encode() + data).hexdigest()


_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)  # first entry = highest bit


def _pack_bits(flags: torch.Tensor) -> torch.Tensor:
    padded = torch.zeros((flags.numel() + 7) // 8 * 8, dtype=torch.uint8)
    padded[:flags.numel()] = flags
    return (padded.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def _unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    return ((packed.unsqueeze(1) & _BIT_WEIGHTS) != 0).reshape(-1)[:n]


# ----------------------------------------------------------------------------------------------------------
# The masked read. Why a property and not torch's forward pre-hook: the pre-hook refreshes ``module.weight``
# only when that module's own ``forward`` runs, so a weight its parent reads directly went stale and stopped
# learning (``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``; pytorch/pytorch
# 78109), and the refreshed attribute kept autograd history between steps, so ``copy.deepcopy`` (EMA, SWA)
# failed after any training step (pytorch/pytorch 37322). A property, as ``torch.nn.utils.parametrize`` does it
# (a subclass made per module class, assigned to ``module.__class__``), computes ``name_orig * name_mask`` on
# every read, whoever reads it, and stores nothing. Unlike parametrize, the parameter and buffer keep torch
# prune's names (``weight_orig``, ``weight_mask``), so state dicts, ``prune.is_pruned`` and ``prune.remove``
# are unchanged. Measured in benchmarks/bench_masked_read.py.

_MASKED_CLASSES: dict[tuple[type, frozenset, frozenset], type] = {}


def _mask_on_read(module: nn.Module, name: str) -> None:
    """Make ``module.name`` read as ``name_orig * name_mask`` (for RNNs also their ``_flat_weights``)."""
    base, names, tied = _class_parts(module)
    module.__class__ = _masked_class(base, names | {name}, tied)
    module.__dict__.pop(name, None)  # the copy torch's apply() stored: reads go to the property from now on
    module.__dict__.pop("_flat_weights", None)  # an RNN's list held that copy too; the property replaces it


def _read_through(module: nn.Module, name: str, source: nn.Module, source_name: str) -> None:
    """Make ``module.name`` (a tied holder of ``source.source_name``'s tensor) read ``source.source_name``,
    masked, on every read: one tensor and one mask, whatever moves or converts the buffers (``.to()``)."""
    module._parameters.pop(name, None)
    module.__dict__.setdefault("_pruning_source", {})[name] = (source, source_name)
    base, names, tied = _class_parts(module)
    module.__class__ = _masked_class(base, names, tied | {name})


def _class_parts(module: nn.Module) -> tuple[type, frozenset, frozenset]:
    """A module's own class and the names its made class masks and reads through (none for a plain module)."""
    cls = type(module)
    return (getattr(cls, "_masked_base", cls), getattr(cls, "_masked_names", frozenset()),
            getattr(cls, "_masked_tied", frozenset()))


def _masked_class(base: type, names: frozenset, tied: frozenset = frozenset()) -> type:
    """``base`` with a masking property per name and a read-through property per tied name; one class per
    (base, names, tied), named as ``base`` (so that printing the model is unchanged); ``base`` itself when
    there is neither."""
    if not names and not tied:
        return base
    key = (base, names, tied)
    if key not in _MASKED_CLASSES:
        members = {**{n: _masked_property(n) for n in names}, **{n: _tied_property(n) for n in tied}}
        if issubclass(base, nn.RNNBase):  # the RNN kernels take the list, not the attributes
            members["_flat_weights"] = property(_rnn_flat_weights, _ignore_assignment)
        members.update(_masked_base=base, _masked_names=names, _masked_tied=tied, __reduce_ex__=_reduce_masked,
                       __module__=base.__module__, __qualname__=base.__qualname__)
        _MASKED_CLASSES[key] = type(base.__name__, (base,), members)
    return _MASKED_CLASSES[key]


def _masked_property(name: str) -> property:
    orig, mask = name + "_orig", name + "_mask"

    def read(module: nn.Module) -> torch.Tensor:
        return module._parameters[orig] * module._buffers[mask]

    def unmask(module: nn.Module) -> None:  # `del module.name`, as prune.remove does before restoring it
        base, names, tied = _class_parts(module)
        module.__class__ = _masked_class(base, names - {name}, tied)
        if isinstance(module, nn.RNNBase) and not names - {name}:
            module._init_flat_weights()  # no stale masked copy left in the list (pytorch/pytorch 33618)
    return property(read, _ignore_assignment, unmask, f"{orig} * {mask}, computed on every read")


def _tied_property(name: str) -> property:
    def read(module: nn.Module) -> torch.Tensor:
        source, source_name = module._pruning_source[name]
        return getattr(source, source_name)

    def untie(module: nn.Module) -> None:  # `del module.name`: a plain module again (_fold puts the tensor back)
        module._pruning_source.pop(name)
        base, names, tied = _class_parts(module)
        module.__class__ = _masked_class(base, names, tied - {name})
    return property(read, _ignore_assignment, untie, "the tied tensor's masked values, read where they are held")


def _ignore_assignment(module: nn.Module, value) -> None:
    """Assigning the masked copy (torch's prune hooks, RNNBase.__setattr__, a library re-tying its embeddings)
    is a no-op: reads recompute it."""


def _rnn_flat_weights(module: nn.Module) -> list:
    return [getattr(module, n, None) for n in module._flat_weights_names]  # masked ones computed once each


def _reduce_masked(module: nn.Module, protocol: int):
    """Pickle and deepcopy the module as its base class plus the masked names: the made class is not
    importable by name, this function and ``_new_masked`` are."""
    base, names, tied = _class_parts(module)
    return _new_masked, (base, tuple(sorted(names)), tuple(sorted(tied))), module.__getstate__()


def _new_masked(base: type, names: tuple[str, ...], tied: tuple[str, ...] = ()) -> nn.Module:
    cls = _masked_class(base, frozenset(names), frozenset(tied))
    return cls.__new__(cls)


# ----------------------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------------------

def _is_reparametrised(module: nn.Module, name: str) -> bool:
    return hasattr(module, name + "_orig") and hasattr(module, name + "_mask")


def _count(module: nn.Module, name: str) -> tuple[int, int]:
    """(total, active): active entries of the mask when pruned, nonzero entries otherwise."""
    tensor = getattr(module, name + "_mask") if _is_reparametrised(module, name) else getattr(module, name)
    return tensor.numel(), int(torch.count_nonzero(tensor))


def _validate_parameters(parameters: ParameterList) -> list[tuple[nn.Module, str]]:
    """Turn the argument into a list of (module, name) pairs or raise a one-line error naming the problem."""
    if isinstance(parameters, (nn.Module, torch.Tensor)) or not isinstance(parameters, Iterable):
        raise TypeError("parameters must be a list of (module, name) pairs, e.g. prunable_parameters(model)")
    parameters = list(parameters)
    if not parameters:
        raise ValueError("parameters is empty: there is nothing to prune")
    for item in parameters:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], nn.Module)
                and isinstance(item[1], str)):
            raise TypeError(f"each entry of parameters must be a (module, name) pair, got {item!r:.80}")
        module, name = item
        if not (_is_reparametrised(module, name) or isinstance(module._parameters.get(name), nn.Parameter)):
            raise ValueError(f"{type(module).__name__} has no parameter named {name!r}")
        t = _tensor_of(module, name)
        if not (t.is_floating_point() and t.dim() >= 2):
            raise ValueError(f"{type(module).__name__}.{name} is not a floating tensor of 2 or more dimensions "
                             f"(shape {tuple(t.shape)}, {t.dtype}): only weight matrices are pruned")
    if len({id(_tensor_of(m, n)) for m, n in parameters}) != len(parameters):
        raise ValueError("parameters lists the same tensor twice (or a tied tensor under two names: list it once, "
                         "as prunable_parameters does, and every name of it is masked)")
    return parameters
