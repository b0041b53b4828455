"""Prune a Hugging Face GPT-2 to 90% with pruning.py in a plain loop, save it and load it back with the library's
own calls.

What a transformers user writes: ``pruning.py`` beside the script, nothing else of this repository (the flags,
the text and the training loop come from the sibling example, prune_transformer_lm.py, with GPT-2's own loss). A small GPT-2 built from its config (no download: 2 layers,
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
from prune_transformer_lm import data_and_schedule, parse_args, train, validation_loss  # noqa: E402  (the loop)


def gpt2(context: int) -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(vocab_size=256, n_positions=context, n_embd=128, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """GPT-2's own loss: it shifts the labels itself, so the labels are the inputs (``y``, ``x`` shifted, unused)."""
    return model(input_ids=x, labels=x).loss


def main() -> None:
    args = parse_args(__doc__, lambda parser: parser.add_argument(
        "--save", help="the pruned model's checkpoint folder (default: a temporary one)"))
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    train_data, val_data, events = data_and_schedule(args)
    for name, schedule in (("dense", None), ("pruned", events)):
        torch.manual_seed(args.seed)  # the same initialisation for both
        model, t0 = gpt2(args.context), time.perf_counter()
        params = train(model, train_data, args, schedule, loss=lm_loss)
        loss = validation_loss(model, val_data, args.context, loss=lm_loss)
        sparsity = pruning.global_sparsity(params) if params else 0.0
        print(f"{name:>6}: validation perplexity {math.exp(loss):.2f} ({loss:.3f} nats/byte), "
              f"GPT-2's Conv1D matrices {sparsity:.1%} sparse, {time.perf_counter() - t0:.0f} s")
    folder = args.save or tempfile.mkdtemp(prefix="pruned-gpt2-")
    pruning.save_pretrained(model, params, folder)  # model.save_pretrained, masks folded in, masks beside
    loaded, loaded_params = pruning.from_pretrained(transformers.GPT2LMHeadModel, folder)
    reloaded = validation_loss(loaded, val_data, args.context, loss=lm_loss)
    print(f"reloaded from {folder}: validation perplexity {math.exp(reloaded):.2f}, "
          f"{pruning.global_sparsity(loaded_params):.1%} sparse, {'identical' if reloaded == loss else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
