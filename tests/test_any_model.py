"""pruning.py on models nobody here wrote (issue 22), used as a new user would: pruning.py copied alone into an
empty folder, imported from there by a fresh interpreter, on torchvision's and torch's own networks.

Each model goes through a ramp (30% then 60%, two training steps at each level, SGD with momentum and weight
decay, an EMA beside it) and is checked for what must hold exactly: the pruned count, a gradient for every
pruned tensor at every step, pruned entries at 0 in weights, gradients and momentum, deepcopy and
AveragedModel at every step (the EMA equal to the one computed by hand), the state dict loaded into a fresh
model that has had ``attach_masks``, ``torch.save`` of the whole model, and ``make_pruning_permanent`` into
plain weights that load into an unpruned model with the same outputs. One more test compiles a pruned
transformer and a pruned CNN once and checks outputs and gradients after mask updates, and that the mask
updates cause no recompilation.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import pruning

ROOT = Path(__file__).resolve().parent.parent

DRIVER = r'''
import copy, io, sys
import torch, torchvision
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
import pruning
assert pruning.__file__.startswith(sys.argv[2]), pruning.__file__  # the lone copy, not the project's

class Seq2Seq(nn.Module):  # torch's encoder-decoder Transformer with token embeddings and a head
    def __init__(self):
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(50, 32), nn.Embedding(50, 32)
        self.transformer = nn.Transformer(32, 2, 2, 2, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 50)
    def forward(self, x):
        return self.head(self.transformer(self.src_emb(x), self.tgt_emb(x)))

class Recurrent(nn.Module):  # LSTM (2 layers, bidirectional) into a GRU (2 layers)
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 24, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(48, 24, num_layers=2, batch_first=True)
        self.head = nn.Linear(24, 50)
    def forward(self, x):
        return self.head(self.gru(self.lstm(self.emb(x))[0])[0])

def vit():
    # torchvision zero-initialises the head: global magnitude ranks all of it first and pruned to 30% the
    # head would be empty (no output depends on the input, nothing learns); a user would exclude it or do this
    model = torchvision.models.VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model

V = torchvision.models
BUILD = {
    "resnet50": (lambda: V.resnet50(num_classes=10), "image", 32),
    "mobilenet_v3_small": (lambda: V.mobilenet_v3_small(num_classes=10), "image", 64),
    "efficientnet_b0": (lambda: V.efficientnet_b0(num_classes=10), "image", 64),
    "convnext_tiny": (lambda: V.convnext_tiny(num_classes=10), "image", 32),
    "vit": (lambda: vit(), "image", 32),
    "transformer": (Seq2Seq, "tokens", 50),
    "recurrent": (Recurrent, "tokens", 50),
}

def fresh(name):
    torch.manual_seed(0)
    return BUILD[name][0]()

def batch(name, seed):
    _, kind, size = BUILD[name]
    g = torch.Generator().manual_seed(seed)
    if kind == "image":
        return torch.randn(4, 3, size, size, generator=g), torch.randint(0, 10, (4,), generator=g)
    x = torch.randint(0, size, (3, 7), generator=g)
    return x, x.roll(1, 1)

def loss_of(out, y):
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

def check(name):
    model = fresh(name)
    params = pruning.prunable_parameters(model)
    names = {f"{type(m).__name__}.{n}" for m, n in params}
    n_total = sum(pruning._tensor_of(m, n).numel() for m, n in params)
    pruning.attach_masks(params)  # before the optimizer and the EMA copy: they hold weight_orig and the masks
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    ema, by_hand = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9)), None
    learnt = set()
    for step, target in enumerate([0.3, 0.3, 0.6, 0.6]):
        pruning.global_magnitude_prune(params, target, optimizer=opt)
        masked = sum(int((m._buffers[n + "_mask"] == 0).sum()) for m, n in params)
        assert masked == round(target * n_total), (step, masked, round(target * n_total))
        x, y = batch(name, step)
        model.train()
        opt.zero_grad()
        loss_of(model(x), y).backward()
        for m, n in params:
            orig, mask = m._parameters[n + "_orig"], m._buffers[n + "_mask"]
            assert orig.grad is not None, f"{type(m).__name__}.{n} got no gradient"
            if bool(orig.grad[mask != 0].ne(0).any()):  # all zero at first where a layer after it starts at 0
                learnt.add((id(m), n))
            assert bool(orig.grad[mask == 0].eq(0).all()), f"{type(m).__name__}.{n}: a pruned entry has a gradient"
        opt.step()
        for m, n in params:
            orig, mask = m._parameters[n + "_orig"], m._buffers[n + "_mask"]
            momentum = opt.state[orig]["momentum_buffer"]
            assert bool(orig[mask == 0].eq(0).all()) and bool(momentum[mask == 0].eq(0).all())
        ema.update_parameters(model)
        with torch.no_grad():
            current = [p.detach().clone() for p in model.parameters()]
            by_hand = current if by_hand is None else [0.9 * e + 0.1 * c for e, c in zip(by_hand, current)]
        copy.deepcopy(model)  # after a training forward and backward
    assert learnt == {(id(m), n) for m, n in params}, "a pruned tensor never had a nonzero gradient"
    assert all(torch.allclose(e, h, rtol=1e-6, atol=1e-7) for e, h in zip(ema.module.parameters(), by_hand))
    x, _ = batch(name, 99)
    # eval mode with autograd on: the same kernels for every copy (nn.Transformer's inference fast path is
    # skipped for a module with forward pre-hooks, and a pruned one keeps torch prune's hook)
    output = lambda m: m.eval()(x).detach()
    out = output(model)
    twin = copy.deepcopy(model)
    assert torch.equal(output(twin), out)
    reloaded = fresh(name)
    pruning.attach_masks(pruning.prunable_parameters(reloaded))
    reloaded.load_state_dict(model.state_dict())
    assert torch.equal(output(reloaded), out)
    buf = io.BytesIO(); torch.save(model, buf); buf.seek(0)
    assert torch.equal(output(torch.load(buf, weights_only=False)), out)
    pruning.make_pruning_permanent(pruning.prunable_parameters(twin))
    plain = fresh(name)
    plain.load_state_dict(twin.state_dict())
    assert torch.equal(output(plain), out) and not torch.nn.utils.prune.is_pruned(plain)
    print(sorted(names))

check(sys.argv[1])
'''

MODELS = ["resnet50", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit", "transformer", "recurrent"]
EXPECTED = {  # the default set, by the kinds of tensor it holds
    "vit": ["Conv2d.weight", "Linear.weight", "MultiheadAttention.in_proj_weight", "NonDynamicallyQuantizableLinear.weight"],
    "transformer": ["Linear.weight", "MultiheadAttention.in_proj_weight", "NonDynamicallyQuantizableLinear.weight"],
    "recurrent": ["GRU.weight_hh_l0", "GRU.weight_hh_l1", "GRU.weight_ih_l0", "GRU.weight_ih_l1", "LSTM.weight_hh_l0",
                  "LSTM.weight_hh_l0_reverse", "LSTM.weight_hh_l1", "LSTM.weight_hh_l1_reverse", "LSTM.weight_ih_l0",
                  "LSTM.weight_ih_l0_reverse", "LSTM.weight_ih_l1", "LSTM.weight_ih_l1_reverse", "Linear.weight"],
}


@pytest.fixture(scope="module")
def lone_copy(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user_project")
    shutil.copy(ROOT / "pruning.py", folder)
    return folder


HEAVY = {"resnet50", "efficientnet_b0", "convnext_tiny"}  # 5M-28M weights: the whole suite, not the quick loop


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in HEAVY else m for m in MODELS])
def test_pruning_py_alone_on_a_model_nobody_here_wrote(name, lone_copy):
    pytest.importorskip("torchvision")
    done = subprocess.run([sys.executable, "-c", DRIVER, name, str(lone_copy)], cwd=lone_copy,
                          capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(p.split(".")[0] for p in eval(done.stdout)) <= {"Conv2d", "Linear", "MultiheadAttention",
                                                                       "NonDynamicallyQuantizableLinear", "LSTM", "GRU"}
    if name in EXPECTED:
        assert eval(done.stdout) == EXPECTED[name]


def compiled_and_eager(model: nn.Module, x: torch.Tensor, params: list) -> tuple:
    """(outputs, gradients of every weight_orig) of ``model(x).sum()``."""
    model.zero_grad()
    out = model(x)
    out.sum().backward()
    return out.detach(), [m._parameters[n + "_orig"].grad.clone() for m, n in params]


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_a_compiled_pruned_model_follows_mask_updates_without_recompiling(kind):
    counter = pytest.importorskip("torch._dynamo.testing").CompileCounterWithBackend("aot_eager")
    torch.manual_seed(0)
    if kind == "cnn":
        model, x = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(288, 10)), \
            torch.randn(2, 3, 8, 8)
    else:  # reads out_proj.weight without calling out_proj, and in_proj_weight
        model = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 2)
        x = torch.randn(2, 5, 16)
    params = pruning.attach_masks(pruning.prunable_parameters(model))
    compiled = torch.compile(model, backend=counter)
    for sparsity in (0.2, 0.5, 0.8):
        pruning.global_magnitude_prune(params, sparsity)
        out_c, grads_c = compiled_and_eager(compiled, x, params)
        out_e, grads_e = compiled_and_eager(model, x, params)
        assert torch.allclose(out_c, out_e, rtol=1e-5, atol=1e-6)
        for (m, n), gc, ge in zip(params, grads_c, grads_e):
            assert torch.allclose(gc, ge, rtol=1e-5, atol=1e-6) and bool(gc[m._buffers[n + "_mask"] == 0].eq(0).all())
    assert counter.frame_count == 1  # compiled once: the mask updates (in place) caused no recompilation


def test_the_language_model_example_prunes_to_its_target(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("def f(x):\n    return x * 2\n" * 800)
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "prune_transformer_lm.py"), "--text", str(text),
                           "--steps", "8", "--prune-every", "2", "--batch", "4"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "pruned: cubic ramp to 90% in 4 events, the last at step 6" in lines[0]
    assert "weight matrices 0.0% sparse" in lines[1] and "weight matrices 90.0% sparse" in lines[2]
    too_short = subprocess.run([sys.executable, str(ROOT / "examples" / "prune_transformer_lm.py"), "--text", str(text),
                                "--bytes", "100"], capture_output=True, text=True, timeout=300)
    assert too_short.returncode == 1 and too_short.stderr.strip() == \
        "error: the text has 100 bytes; give at least 10,000 (--text)"
    missing = subprocess.run([sys.executable, str(ROOT / "examples" / "prune_transformer_lm.py"), "--text",
                              str(tmp_path / "none.txt")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: --text {tmp_path / 'none.txt'}: no such file"
