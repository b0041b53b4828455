"""Prune a Hugging Face GPT-2 to 90% with pruning.py in a plain loop, save it and load it back with the library's
own calls.

What a transformers user writes: ``pruning.py`` beside the script, nothing else of this repository (the text
helpers below come from the sibling example). A small GPT-2 built from its config (no download: 2 layers,
width 128, byte-level vocabulary of 256, context 64) learns the Python standard library's source (``--text FILE``
takes any other), once dense and once from the same initialisation with a per-step cubic ramp to 90% that
ends at 75% of training (a recovery window). The default set is GPT-2's attention and MLP matrices
(transformers' ``Conv1D``, weight ``(in, out)``); the output head is tied to the token embedding, so it stays
dense with the embeddings (one warning says so; ``include=[nn.Embedding]`` would prune both as one tensor).
The pruned model is saved with ``pruning.save_pretrained`` (the library's ``save_pretrained``, masks folded
in, the masks beside) and loaded with ``pruning.from_pretrained``; its validation perplexity is printed
before and after, with the dense model's.

A plain loop, not ``transformers.Trainer``: the Trainer needs the ``accelerate`` package, which this project
does not otherwise depend on. With it, the two pruning calls below go in a ``TrainerCallback``'s
``on_step_begin`` (``global_magnitude_prune`` with the Trainer's optimizer).

    python examples/prune_gpt2_hf.py              # a few minutes on 2 CPU cores
"""

import argparse
import math
import os
import sys
import tempfile
import time

import torch
import transformers
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import pruning  # noqa: E402  (in your project: pruning.py beside your script)
from prune_transformer_lm import read_bytes, windows  # noqa: E402  (the text: bytes of the stdlib's source)


def gpt2(context: int) -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(vocab_size=256, n_positions=context, n_embd=128, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


@torch.no_grad()
def validation_loss(model: nn.Module, data: torch.Tensor, context: int, batch: int = 64) -> float:
    """Mean next-byte cross-entropy on fixed windows of ``data`` (the same for every model)."""
    model.eval()
    starts = torch.arange(0, len(data) - context - 1, context)[:batch * 8]
    losses = [model(input_ids=x, labels=x).loss.item() for x, _ in (windows(data, s, context) for s in starts.split(batch))]
    model.train()
    return sum(losses) / len(losses)


def train(model: nn.Module, data: torch.Tensor, args, events: dict[int, float] | None) -> list:
    """AdamW, cosine LR; before step t's forward pass, prune to ``events[t]`` if t is an event. Returns the
    pruned tensors ([] for the dense run)."""
    params = pruning.prunable_parameters(model) if events else []
    if events:
        pruning.attach_masks(params)  # before the optimizer sees the parameters (weight -> weight_orig)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    for t in range(args.steps):
        if events and t in events:
            pruning.global_magnitude_prune(params, events[t], optimizer=opt)  # also zeroes Adam's moments
        x, _ = windows(data, torch.randint(0, len(data) - args.context - 1, (args.batch,), generator=gen), args.context)
        loss = model(input_ids=x, labels=x).loss  # GPT-2 shifts the labels itself
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", help="a text file (default: the Python standard library's *.py files)")
    parser.add_argument("--bytes", type=int, default=2_000_000, help="read at most this many bytes")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--prune-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="the pruned model's checkpoint folder (default: a temporary one)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    data = read_bytes(args.text, args.bytes)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    events = pruning.pruning_events("cubic", args.target, start=0, end=int(0.75 * args.steps), every=args.prune_every)
    print(f"{len(data):,} bytes ({split:,} train), {args.steps} steps of {args.batch} x {args.context} bytes; "
          f"pruned: cubic ramp to {args.target:.0%} in {len(events)} events, the last at step {max(events)}")
    for name, schedule in (("dense", None), ("pruned", events)):
        torch.manual_seed(args.seed)  # the same initialisation for both
        model, t0 = gpt2(args.context), time.perf_counter()
        params = train(model, train_data, args, schedule)
        loss = validation_loss(model, val_data, args.context)
        sparsity = pruning.global_sparsity(params) if params else 0.0
        print(f"{name:>6}: validation perplexity {math.exp(loss):.2f} ({loss:.3f} nats/byte), "
              f"GPT-2's Conv1D matrices {sparsity:.1%} sparse, {time.perf_counter() - t0:.0f} s")
    folder = args.save or tempfile.mkdtemp(prefix="pruned-gpt2-")
    pruning.save_pretrained(model, params, folder)  # model.save_pretrained, masks folded in, masks beside
    loaded, loaded_params = pruning.from_pretrained(transformers.GPT2LMHeadModel, folder)
    reloaded = validation_loss(loaded, val_data, args.context)
    print(f"reloaded from {folder}: validation perplexity {math.exp(reloaded):.2f}, "
          f"{pruning.global_sparsity(loaded_params):.1%} sparse, {'identical' if reloaded == loss else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
