"""Prune a small transformer language model to 90% with pruning.py, in a plain PyTorch training loop.

What a user of pruning.py writes in their own project: nothing of this repository but ``pruning.py``. A
byte-level transformer (2 layers, width 128, context 64) learns the text of the Python standard library's own
source files (every machine with Python has them; ``--text FILE`` takes any other), once dense and once from
the same initialisation with GMP's per-step cubic ramp to 90% sparsity that ends at 75% of training (a recovery
window), pruning every ``--prune-every`` steps. Every weight matrix is pruned (attention q/k/v and output
projections, feed-forward, the output head); the embeddings and norms stay dense, as
``pruning.prunable_parameters`` chooses by default. Prints the validation loss and perplexity of both.

    python examples/prune_transformer_lm.py                 # a few minutes on 2 CPU cores
    python examples/prune_transformer_lm.py --text big.txt --steps 3000 --target 0.95
"""

import argparse
import glob
import math
import os
import sys
import sysconfig
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pruning  # noqa: E402  (in your project: pruning.py beside your script)


class TinyLM(nn.Module):
    """Bytes in, next-byte logits out: embeddings, a causal pre-norm transformer encoder, a linear head."""

    def __init__(self, context: int, width: int = 128, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(256, width), nn.Embedding(context, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        h = self.tokens(x) + self.positions(torch.arange(x.shape[1]))
        return self.head(self.norm(self.blocks(h, mask=causal, is_causal=True)))


def read_bytes(path: str | None, limit: int) -> torch.Tensor:
    """The text as a byte tensor: ``path``, or the standard library's ``*.py`` files in name order."""
    if path:
        if not os.path.isfile(path):
            raise SystemExit(f"error: --text {path}: no such file")
        with open(path, "rb") as f:
            raw = f.read(limit)
    else:
        raw = b"".join(open(p, "rb").read() for p in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))))[:limit]
    if len(raw) < 10_000:
        raise SystemExit(f"error: the text has {len(raw)} bytes; give at least 10,000 (--text)")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()


def windows(data: torch.Tensor, starts: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + torch.arange(context + 1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


def next_byte_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model's next-byte logits ``model(x)`` against ``y``."""
    return nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())


@torch.no_grad()
def validation_loss(model: nn.Module, data: torch.Tensor, context: int, loss=next_byte_loss, batch: int = 64) -> float:
    model.eval()
    starts = torch.arange(0, len(data) - context - 1, context)[:batch * 8]  # fixed windows: same for every model
    losses = [loss(model, x, y).item() for x, y in (windows(data, s, context) for s in starts.split(batch))]
    model.train()
    return sum(losses) / len(losses)


def train(model: nn.Module, data: torch.Tensor, args, events: dict[int, float] | None = None,
          loss=next_byte_loss) -> list:
    """AdamW with a cosine learning rate; before step t's forward pass, prune to ``events[t]`` if t is an event.
    Returns the pruned tensors ([] for a dense run)."""
    params = pruning.prunable_parameters(model) if events else []
    if events:
        pruning.attach_masks(params)  # before the optimizer sees the parameters (weight -> weight_orig)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    for t in range(args.steps):
        if events and t in events:
            pruning.global_magnitude_prune(params, events[t], optimizer=opt)  # also zeroes Adam's moments
        x, y = windows(data, torch.randint(0, len(data) - args.context - 1, (args.batch,), generator=gen), args.context)
        step_loss = loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        step_loss.backward()
        opt.step()
        sched.step()
    return params


def parse_args(description: str, extra=lambda parser: None) -> argparse.Namespace:
    """The examples' flags (``extra(parser)`` adds a script's own)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", help="a text file (default: the Python standard library's *.py files)")
    parser.add_argument("--bytes", type=int, default=2_000_000, help="read at most this many bytes")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--prune-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    extra(parser)
    return parser.parse_args()


def data_and_schedule(args) -> tuple[torch.Tensor, torch.Tensor, dict[int, float]]:
    """(training bytes, validation bytes, the pruned run's events: GMP's cubic ramp ending at 75% of the
    steps), said in one line."""
    data = read_bytes(args.text, args.bytes)
    split = int(0.9 * len(data))
    events = pruning.pruning_events("cubic", args.target, start=0, end=int(0.75 * args.steps), every=args.prune_every)
    print(f"{len(data):,} bytes ({split:,} train), {args.steps} steps of {args.batch} x {args.context} bytes; "
          f"pruned: cubic ramp to {args.target:.0%} in {len(events)} events, the last at step {max(events)}")
    return data[:split], data[split:], events


def main() -> None:
    args = parse_args(__doc__)
    train_data, val_data, events = data_and_schedule(args)
    results = {}
    for name, schedule in (("dense", None), ("pruned", events)):
        torch.manual_seed(args.seed)  # the same initialisation for both
        model = TinyLM(args.context)
        t0 = time.perf_counter()
        train(model, train_data, args, schedule)
        loss = validation_loss(model, val_data, args.context)
        results[name] = loss
        sparsity = pruning.global_sparsity(pruning.prunable_parameters(model))
        print(f"{name:>6}: validation loss {loss:.3f} nats/byte, perplexity {math.exp(loss):.2f}, "
              f"weight matrices {sparsity:.1%} sparse, {time.perf_counter() - t0:.0f} s")
    print(f"pruned - dense: {results['pruned'] - results['dense']:+.3f} nats/byte")


if __name__ == "__main__":
    main()
