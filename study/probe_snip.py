"""Why our SNIP trails SNIP's published LeNet-300-100 figure (issue 32): one factor of SNIP's public code at a time.

The fourth study's SNIP (the harness's ``snip``) reaches 96.94 +/- 0.10% at 98% on LeNet-300-100 under SNIP's
recipe; SNIP's paper reports 97.6%. SNIP's public code (namhoonlee/snip-public, TensorFlow) differs from the
harness in five ways that its paper does not state. This probe switches each on, on the harness's own data,
network, batch order, scoring batch and recipe (SGD momentum 0.9, batch 100, weight decay 5e-4 on every
parameter, lr 0.1 x0.1 at step 25,000, 30,000 steps, no augmentation, 10% held out):

  init     ``vs``: TF1's default ``variance_scaling_initializer`` (truncated normal, std sqrt(1 / fan_in), also
           for the biases before pruning) instead of the harness's Xavier-normal weights and zero biases
  reinit   the mask is chosen on one draw and training starts from an independent draw (biases zero)
  biases   the biases are ranked with the weights in the one global ranking (the target counts both)
  momentum the public code's default optimizer is plain SGD (``--optimizer sgd``; its paper says momentum 0.9)
  report   the public code's test script reports the *best* test accuracy over the checkpoints it kept
           (the last five, one every 1,000 steps); every variant records both that and the final model's

A probe, not a harness method: it is written once for this question and its numbers are exploratory (the
headline of every study stays the final model's test accuracy). ``ours`` must match the harness's ``snip``.

    python study/probe_snip.py              # 6 variants x 3 seeds, about 40 CPU-minutes; skips finished runs
    python study/probe_snip.py --variants ours --seeds 42
    python study/probe_snip.py --summary    # the committed runs (study/fourth/probe) as a table
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {  # name -> (init, reinit, biases ranked, momentum)
    "ours": ("xavier", False, False, 0.9),
    "vs": ("vs", False, False, 0.9),
    "xavier-reinit": ("xavier", True, False, 0.9),
    "vs-reinit": ("vs", True, False, 0.9),
    "snip-public": ("vs", True, True, 0.9),
    "snip-public-sgd": ("vs", True, True, 0.0),  # the public code's default optimizer: no momentum
}
STEPS, MILESTONE, BATCH, TARGET, KEPT_CHECKPOINTS, EVERY = 30_000, 25_000, 100, 0.98, 5, 1_000
OUT = os.path.join(ROOT, "study", "fourth", "probe")


def variance_scaling_(t, gen) -> None:
    """TF1's ``variance_scaling_initializer()``: a normal truncated at two (pre-correction) standard deviations,
    scaled so that the result's std is sqrt(1 / fan_in); fan_in is the input size (a bias: its length)."""
    import torch
    fan_in = t.shape[0] if t.dim() == 1 else t[0].numel()  # torch's (out, in, kh, kw): in * kh * kw
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        t.copy_(torch.nn.init.trunc_normal_(torch.empty(t.shape), 0.0, std, -2 * std, 2 * std, generator=gen))


def variance_scale_all(model, gen) -> None:
    """Every Linear's weight and bias drawn as TF1's default initialiser (the public code's before pruning)."""
    import torch
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            variance_scaling_(m.weight, gen)
            variance_scaling_(m.bias, gen)


def snip_scores(model, x, y) -> dict:
    """|dL/dw * w| on one batch for every Linear's weight (masked: its ``weight_orig``) and bias, by module
    and name (the harness's Snip.scores, on this one batch)."""
    import torch
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    scores = {}
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            for n in ("weight", "bias"):
                t = getattr(m, n + "_orig", None)
                t = getattr(m, n) if t is None else t
                scores[(m, n)] = (t.grad * t).detach().abs()
    model.zero_grad(set_to_none=True)
    return scores


def prune_with_biases(params: list, scores: dict) -> None:
    """One global ranking of weights *and* biases (the public code's): the lowest scores over both are pruned
    until TARGET of all their entries are. pruning.py masks weight matrices only, so the weights go through
    its global ranking at the fraction of them that the joint ranking prunes (the same entries: its lowest
    scores), the biases through ``torch.nn.utils.prune.custom_from_mask``."""
    import torch
    from torch.nn.utils import prune
    import pruning
    keys = list(scores)
    flat = torch.cat([scores[k].flatten() for k in keys])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.topk(round(flat.numel() * (1 - TARGET))).indices] = True
    kept = dict(zip(keys, keep.split([scores[k].numel() for k in keys])))
    weights = sum(scores[k].numel() for k in keys if k[1] == "weight")
    pruned_weights = weights - sum(int(kept[k].sum()) for k in keys if k[1] == "weight")
    pruning.global_magnitude_prune(params, pruned_weights / weights,
                                   importance_scores={k: scores[k] for k in keys if k[1] == "weight"})
    for (m, n), mask in kept.items():
        if n == "bias":
            prune.custom_from_mask(m, "bias", mask.view_as(m.bias).float())


def test_accuracy(model, d) -> float:
    import torch
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(d.eval_transform(x)).argmax(1) == y).sum())
                      for x, y in zip(d.test[0].split(1000), d.test[1].split(1000)))
    model.train()
    return 100.0 * correct / d.test[1].numel()


def run(variant: str, seed: int, data_dir: str) -> dict:
    """One SNIP run at 98% under SNIP's recipe; returns the final and the best-kept-checkpoint test accuracy."""
    import torch
    from harness import data
    import pruning
    from harness.networks import build_network
    init, reinit, rank_biases, momentum = VARIANTS[variant]
    d = data.prepare_data("mnist", data_dir, download=False, val_fraction=0.1, seed=seed, augmentation="none",
                          input_size=28)
    torch.manual_seed(seed)  # as the harness's build_model: the same Xavier draw for ``ours``
    model = build_network("lenet300", 1, 10, None)
    gen = torch.Generator().manual_seed(seed)
    if init == "vs":
        variance_scale_all(model, gen)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    params = [(m, "weight") for m in linears]
    pruning.attach_masks(params)
    batches = lambda epoch: data.iterate_batches(*d.train, BATCH, d.train_transform,  # noqa: E731
                                                 data.epoch_generator(seed, epoch))
    x0, y0 = next(iter(batches(0)))  # the first training batch: the harness's scoring batch
    scores = snip_scores(model, x0, y0)
    if rank_biases:
        prune_with_biases(params, scores)
    else:
        pruning.global_magnitude_prune(params, TARGET, importance_scores={k: scores[k] for k in params})
    if reinit:
        with torch.no_grad():  # a fresh draw under the mask; biases zero, as the public code after pruning
            for m in linears:
                m.weight_orig.copy_(_fresh(m.weight_orig, init, gen))
                getattr(m, "bias_orig", m.bias).zero_()
        pruning.zero_pruned_state(params)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [MILESTONE], gamma=0.1)
    kept, step, epoch = [], 0, 0
    while step < STEPS:
        for x, y in batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % EVERY == 0 and step > STEPS - KEPT_CHECKPOINTS * EVERY:
                kept.append(test_accuracy(model, d))
            if step == STEPS:
                break
        epoch += 1
    biases_pruned = sum(int((m.bias_mask == 0).sum()) for m in linears if hasattr(m, "bias_mask"))
    return {"variant": variant, "seed": seed, "init": init, "reinit": reinit, "biases_ranked": rank_biases,
            "momentum": momentum, "weight_sparsity": pruning.global_sparsity(params), "biases_pruned": biases_pruned,
            "final_test_accuracy": kept[-1], "best_kept_checkpoint_test_accuracy": max(kept), "kept_checkpoints": kept}


def _fresh(t, init: str, gen):
    """A new weight tensor shaped like ``t``, drawn by ``init``."""
    import torch
    new = torch.empty_like(t)
    if init == "vs":
        variance_scaling_(new, gen)
    else:
        torch.nn.init.xavier_normal_(new, generator=gen)
    return new


def summary(folder: str = OUT) -> str:
    """The committed probe runs as a Markdown table: per variant, the final model's test accuracy and the best
    kept checkpoint's (what the public code reports), mean ± sd over seeds, and each variant's paired difference
    from ``ours`` in final accuracy (harness/stats.py's paired t-test, Holm over the variants). Torch-free."""
    from harness import stats
    rows = {}
    for variant in VARIANTS:
        runs = sorted(map(_read, glob.glob(os.path.join(folder, variant, "seed*.json"))), key=lambda r: r["seed"])
        if runs:
            rows[variant] = {"seeds": [r["seed"] for r in runs], "acc": [r["final_test_accuracy"] for r in runs],
                             "best": [r["best_kept_checkpoint_test_accuracy"] for r in runs]}
    paired = {v: stats.paired_difference(r, rows["ours"]) for v, r in rows.items() if v != "ours" and "ours" in rows}
    holm = dict(zip(paired, stats.holm_adjust([None if d is None else d[2] for d in paired.values()])))
    out = ["| variant | init | re-init | biases ranked | momentum | seeds | final test acc (%) | best kept checkpoint (%) "
           "| final vs ours, pp (paired; Holm) |", "|---|---|---|---|---|---|---|---|---|"]
    for v, r in rows.items():
        init, reinit, biases, momentum = VARIANTS[v]
        acc, best = (stats.mean_sd(r[k], ddof=1) for k in ("acc", "best"))
        d = paired.get(v)
        vs = "–" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f} ({'–' if holm[v] is None else f'Holm {holm[v]:.2g}'})"
        out.append(f"| {v} | {init} | {'yes' if reinit else 'no'} | {'yes' if biases else 'no'} | {momentum:g} | "
                   f"{len(r['seeds'])} | {_pm(*acc)} | {_pm(*best)} | {vs} |")
    return "\n".join(out)


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--seeds", default="42,123,456")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--summary", action="store_true", help="print the committed runs as a table and stop")
    args = p.parse_args(argv)
    if args.summary:
        print(summary())
        return 0
    import torch
    from harness.results import atomic_write
    torch.set_num_threads(1)
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            print(f"probe_snip.py: unknown variant {variant!r}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
            return 2
        for seed in map(int, args.seeds.split(",")):
            path = os.path.join(OUT, variant, f"seed{seed}.json")
            if os.path.exists(path):
                continue
            row = run(variant, seed, args.data_dir)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, lambda f: f.write(json.dumps(row, indent=1).encode()))
            print(f"{variant:14s} seed {seed}: final {row['final_test_accuracy']:.2f}  "
                  f"best kept {row['best_kept_checkpoint_test_accuracy']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
