"""pruning.py in the model libraries people use (issue 31): Hugging Face transformers and timm, with
pruning.py copied alone into an empty folder and imported from there by a fresh interpreter, on models built
from small configs (no download).

Each model: the default set is every weight matrix (Linear, transformers' Conv1D, convolutions), and nothing
tied to an embedding; a ramp to 30%, 50%, 70% with an AdamW step between, checked for what must hold exactly
(the pruned count, a gradient for every pruned tensor at every step, pruned entries 0 in the weights, the
gradients and AdamW's state, every name of a tied tensor reading the same values); deepcopy; then the save
and load round trips of the library's own calls, mid-training (``pruning.save_pretrained`` /
``pruning.from_pretrained``: masks and outputs identical) and after ``make_pruning_permanent`` (plain
``save_pretrained`` / ``from_pretrained``, safetensors or not: outputs identical), a checkpoint saved with
masks attached refused in one line; ``generate()`` for the decoders; gradient checkpointing and bf16
keeping pruned gradients at 0; timm's ModelEmaV3 beside the timm models.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DRIVER = r'''
import copy, os, sys, tempfile, warnings
import torch
from torch import nn
import pruning
assert pruning.__file__.startswith(sys.argv[2]), pruning.__file__  # the lone copy, not the project's
import transformers as T
T.logging.set_verbosity_error()
T.utils.logging.disable_progress_bar()

def hf(cls, config_cls, kind, **cfg):
    return lambda: cls(config_cls(**cfg)), kind

SMALL = dict(vocab_size=64)
BUILD = {
    "gpt2": hf(T.GPT2LMHeadModel, T.GPT2Config, "causal", n_layer=2, n_embd=32, n_head=2, n_positions=32,
               bos_token_id=0, eos_token_id=0, **SMALL),
    "bert-mlm": hf(T.BertForMaskedLM, T.BertConfig, "masked", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=32, **SMALL),
    "bert-cls": hf(T.BertForSequenceClassification, T.BertConfig, "classify", hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=32, num_labels=3, **SMALL),
    "llama": hf(T.LlamaForCausalLM, T.LlamaConfig, "causal", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, bos_token_id=0,
                eos_token_id=0, pad_token_id=0, **SMALL),
    "t5": hf(T.T5ForConditionalGeneration, T.T5Config, "seq2seq", d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=2,
             decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **SMALL),
}

def timm_model(name, **kwargs):
    import timm
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs), "image"

BUILD.update({
    "vit": timm_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2),
    "convnext": timm_model("convnext_atto", depths=(1, 1, 1, 1)),
    "swin": timm_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4, embed_dim=16,
                       depths=(1, 1), num_heads=(1, 2)),
})

def fresh(name):
    torch.manual_seed(0)
    return BUILD[name][0]()

def inputs(name, seed):
    g, kind = torch.Generator().manual_seed(seed), BUILD[name][1]
    if kind == "image":
        return {"x": torch.randn(2, 3, 32, 32, generator=g)}, torch.randint(0, 10, (2,), generator=g)
    ids = torch.randint(2, 64, (2, 8), generator=g)
    if kind == "classify":
        return {"input_ids": ids, "labels": torch.randint(0, 3, (2,), generator=g)}, None
    if kind == "seq2seq":
        return {"input_ids": ids, "labels": ids.flip(1)}, None
    return {"input_ids": ids, "labels": ids}, None

def loss(model, name, seed):
    batch, y = inputs(name, seed)
    if BUILD[name][1] == "image":
        return nn.functional.cross_entropy(model(batch["x"].to(next(model.parameters()).dtype)).float(), y)
    return model(**batch).loss

def output(model, name):
    batch, _ = inputs(name, 99)
    with torch.no_grad():
        if BUILD[name][1] == "image":
            return model.eval()(batch["x"])
        return model.eval()(**batch).logits

def matrices(model):
    """Independently of pruning.py: every weight matrix of a layer (Linear, Conv1D, convolution), by name,
    and the names tied to an embedding's weight."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    found, tied = set(), set()
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) or type(m).__name__ == "Conv1D":
            (tied if id(m.weight) in embedded else found).add(f"{name}.weight")
    return found, tied

def names_of(model, params):
    names = {id(m): n for n, m in model.named_modules()}
    return [f"{names[id(m)]}.{n}" for m, n in params]

def ties(model):
    """Before any mask: the (module, name) holders of each tensor that several modules hold (tied weights)."""
    by_id = {}
    for m in model.modules():
        for n, p in m._parameters.items():
            if p is not None:
                by_id.setdefault(id(p), []).append((m, n))
    return [holders for holders in by_id.values() if len(holders) > 1]

def ramp(model, name, params, opt, tied, steps=(0.3, 0.5, 0.7)):
    n_total = sum(m._buffers[n + "_mask"].numel() for m, n in params)
    for step, target in enumerate(steps):
        pruning.global_magnitude_prune(params, target, optimizer=opt)
        masked = sum(int((m._buffers[n + "_mask"] == 0).sum()) for m, n in params)
        assert masked == round(target * n_total), (name, step, masked)
        model.train()
        opt.zero_grad()
        loss(model, name, step).backward()
        for m, n in params:
            orig, mask = m._parameters[n + "_orig"], m._buffers[n + "_mask"]
            assert orig.grad is not None, f"{name}: {type(m).__name__}.{n} got no gradient"
            assert bool(orig.grad[mask == 0].eq(0).all()), f"{name}: a pruned entry of {type(m).__name__}.{n} has a gradient"
        opt.step()
        for m, n in params:
            orig, mask = m._parameters[n + "_orig"], m._buffers[n + "_mask"]
            state = opt.state[orig]
            assert all(bool(t[mask == 0].eq(0).all()) for t in (orig, state["exp_avg"], state["exp_avg_sq"]))
        for holders in tied:  # every name of a tied tensor reads the same values
            assert all(torch.equal(getattr(*holders[0]), getattr(m, n)) for m, n in holders), f"{name}: tied reads differ"

def round_trips(model, name, params):
    """The library's own save and load: mid-training and after make_pruning_permanent."""
    out = output(model, name)
    twin = copy.deepcopy(model)
    assert torch.equal(output(twin, name), out)
    if not hasattr(model, "save_pretrained"):  # timm: torch's state dict, plain keys within plain_weights
        with pruning.plain_weights(params):
            plain_keys = model.state_dict()
        assert not any(k.endswith(("_orig", "_mask")) for k in plain_keys)
        pruning.make_pruning_permanent(pruning.prunable_parameters(twin))
        plain = fresh(name)
        plain.load_state_dict(twin.state_dict())
        assert torch.equal(output(plain, name), out)
        return
    folder = tempfile.mkdtemp()
    pruning.save_pretrained(model, params, folder)
    loaded, loaded_params = pruning.from_pretrained(type(model), folder)
    assert names_of(loaded, loaded_params) == names_of(model, params)
    assert all(torch.equal(a._buffers[n + "_mask"], b._buffers[k + "_mask"])
               for (a, n), (b, k) in zip(loaded_params, params))
    assert torch.equal(output(loaded, name), out)
    attached = tempfile.mkdtemp()
    model.save_pretrained(attached)  # the library's own call with masks attached: refused, never re-initialised
    try:
        pruning.from_pretrained(type(model), attached)
        raise AssertionError("a checkpoint with weight_orig / weight_mask keys was loaded")
    except ValueError as e:
        assert "attach_masks" in str(e) and "\n" not in str(e)
    pruning.make_pruning_permanent(pruning.prunable_parameters(twin, include=[nn.Embedding]) if
                                   any("_orig" in k for k in twin.state_dict()) else [])
    for safe in (True, False):
        folder = tempfile.mkdtemp()
        twin.save_pretrained(folder, safe_serialization=safe)
        plain = type(model).from_pretrained(folder)
        assert torch.equal(output(plain, name), out) and not any("_orig" in k for k in plain.state_dict())

def check(name, include):
    model = fresh(name)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        params = pruning.prunable_parameters(model, include=[nn.Embedding] if include else [])
    found, dense = matrices(model)
    if not include:
        assert set(names_of(model, params)) == found, (name, sorted(set(names_of(model, params)) ^ found))
        assert len(said) == (1 if dense else 0), [str(w.message) for w in said]  # one line names what stays dense
    tied = ties(model)
    assert not include or name != "gpt2" or len(tied) == 1  # lm_head.weight is transformer.wte.weight
    pruning.attach_masks(params)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    ramp(model, name, params, opt, tied)
    if BUILD[name][1] == "image":  # timm's EMA deep-copies the pruned model and averages weight_orig
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=0.5)
        ema.update(model)
        assert torch.equal(output(ema.module, name), output(model, name))  # the average of equal weights
    round_trips(model, name, params)
    if BUILD[name][1] in ("causal", "seq2seq"):
        model.generate(inputs(name, 5)[0]["input_ids"][:, :4], max_new_tokens=3, do_sample=False)
    if hasattr(model, "gradient_checkpointing_enable"):  # transformers (5.x: also activation_checkpointing_enable)
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    else:  # timm
        model.set_grad_checkpointing(True)
    ramp(model, name, params, opt, tied, steps=(0.75,))
    model.to(torch.bfloat16)  # new mask buffers: tied names must still read one mask
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ramp(model, name, params, opt, tied, steps=(0.8,))

for name in sys.argv[3].split(","):
    check(name, include=sys.argv[4] == "include")
print("ok")
'''

QUICK = ["gpt2", "bert-mlm", "vit"]  # transformers' Conv1D, a tied masked-LM decoder, timm
SLOW = ["bert-cls", "llama", "t5", "convnext", "swin"]


@pytest.fixture(scope="module")
def lone_copy(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user_project")
    shutil.copy(ROOT / "pruning.py", folder)
    return folder


def run_driver(models: list[str], include: bool, folder: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", "HOME": str(folder), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-c", DRIVER, "-", str(folder), ",".join(models),
                           "include" if include else "default"], cwd=folder, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.parametrize("models, include", [
    (QUICK, False),
    pytest.param(["gpt2", "t5"], True, marks=pytest.mark.slow),  # embeddings pruned: tied names, one mask
    pytest.param(SLOW, False, marks=pytest.mark.slow),
], ids=["quick", "tied-included", "slow"])
def test_pruning_py_alone_in_transformers_and_timm(models, include, lone_copy):
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    done = run_driver(models, include, lone_copy)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-4000:]


def test_the_hugging_face_example_prunes_saves_and_reloads_identically(tmp_path):
    pytest.importorskip("transformers")
    text = tmp_path / "text.txt"
    text.write_text("def f(x):\n    return x * 2\n" * 800)
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "prune_gpt2_hf.py"), "--text", str(text), "--steps",
                           "8", "--prune-every", "2", "--batch", "4", "--save", str(tmp_path / "ckpt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "pruned: cubic ramp to 90% in 4 events, the last at step 6" in lines[0]
    assert "Conv1D matrices 0.0% sparse" in lines[1] and "Conv1D matrices 90.0% sparse" in lines[2]
    assert lines[3].endswith("90.0% sparse, identical") and (tmp_path / "ckpt" / "pruning_masks.pt").exists()
    assert done.stderr.count("UserWarning") == 1 and "lm_head.weight is tied to transformer.wte.weight" in done.stderr
