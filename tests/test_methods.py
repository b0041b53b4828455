"""Each training method of harness/methods.py, end to end through train_baseline.py on tiny MNIST-format data, checked
against its own invariant: when it prunes, to what, whether its mask stays fixed, what it rewinds to."""

import pytest
import torch

import aggregate
import pruning
from harness import loop, methods, ticket
from harness import method as method_module
import train_baseline
import train_mnist
from helpers import N_PRUNABLE, baseline, config_of, load_model, masked, read_json, run, tiny
from harness.networks import ResNet18


def model_state(run, epoch) -> dict:
    state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    return {"round": run.state.round, "epoch": epoch, "state": state,
            "masks": {k: v for k, v in state.items() if k.endswith("_mask")}}


@pytest.fixture
def recorder(spy):
    """Records, at the start of every epoch's training, the round, the epoch, the masks and the full state."""
    return spy(loop, "train_one_epoch", model_state)


def same_masks(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flags, folder", [  # the folders of the committed studies follow these rules
    ("--method dense", "dense"),
    ("--method progressive --target-sparsity 0.9", "progressive-0.9"),
    ("--method progressive --schedule cubic --prune-every 50 --prune-end 0.75", "progressive-cubic-every50-end0.75-0.744"),
    ("--method progressive --schedule linear --prune-start 0.1 --prune-every 25", "progressive-every25-start0.1-0.744"),
    ("--method oneshot", "oneshot-e1-0.744"),
    ("--method oneshot --prune-start 0.5", "oneshot-at0.5-0.744"),
    ("--method snip --score-batches 4 --distribution erk", "snip-b4-erk-0.744"),
    ("--method snip --distribution global --score-batches 1", "snip-0.744"),
    ("--method grasp --temperature 100 --distribution uniform", "grasp-t100-uniform-0.744"),
    ("--method grasp --temperature 200 --score-batches 2", "grasp-b2-0.744"),
    ("--method random --distribution erk", "random-erk-0.744"),
    ("--method rigl --distribution uniform --update-every 50 --drop-fraction 0.5", "rigl-uniform-every50-drop0.5-0.744"),
    ("--method set --update-end 0.5 --distribution erk", "set-end0.5-0.744"),
    ("--method imp --target-sparsity 0.9", "imp-r11-0.9"),
    ("--method imp --rounds 2 --rewind-epoch 1", "imp-r2-rewind1-0.744"),
])
def test_a_folder_is_the_method_then_each_option_off_its_default_by_its_short_form(flags, folder):
    config = loop.parse(train_baseline.SCRIPT, ["--dataset", "mnist", "--epochs", "3", *flags.split()])
    assert methods.create(config).folder() == folder


def test_no_method_but_the_ticket_writes_its_label_by_hand():
    hand_written = {name for name, m in methods.METHODS.items() if "label" in vars(m) or any(
        "label" in vars(base) for base in m.__mro__[1:] if base is not method_module.Method and base is not object)}
    assert hand_written == {"ticket"}


@pytest.mark.parametrize("method", ["snip", "random"])
def test_at_initialisation_methods_prune_once_to_the_target_and_keep_the_mask(mnist_idx_dir, tmp_path, recorder, method):
    assert run(*baseline(method, mnist_idx_dir, tmp_path, "--target-sparsity", "0.8")) == 0
    result = read_json(tmp_path / "mnist" / f"{method}-0.8" / "seed42.json")
    assert [row["sparsity"] for row in result["history"]] == [masked(0.8)] * 3  # from the first epoch
    assert all(same_masks(recorder[0]["masks"], r["masks"]) for r in recorder)  # fixed through training
    assert result["params_prunable"] - result["params_nonzero"] == round(0.8 * N_PRUNABLE)
    assert result["epochs_trained"] == 3 and result["label"] == method


def test_snip_keeps_the_highest_gradient_times_weight_scores_and_is_deterministic(mnist_idx_dir, tmp_path, recorder):
    assert run(*baseline("snip", mnist_idx_dir, tmp_path / "a", "--target-sparsity", "0.8", "--epochs", "1")) == 0
    assert run(*baseline("snip", mnist_idx_dir, tmp_path / "b", "--target-sparsity", "0.8", "--epochs", "1")) == 0
    assert same_masks(recorder[0]["masks"], recorder[1]["masks"])
    # Recompute |dL/dw * w| on the first training batch of epoch 0 from a fresh model: the kept weights score
    # at least as high as every pruned one.
    from harness import data
    d = data.prepare_data("mnist", mnist_idx_dir, download=False, val_fraction=0.1, seed=42)
    torch.manual_seed(42)
    model = ResNet18(in_channels=1, width=8)
    x, y = next(data.iterate_batches(*d.train, 32, d.train_transform, data.epoch_generator(42, 0)))
    model.train()
    torch.nn.CrossEntropyLoss(label_smoothing=0.1)(model(x), y).backward()
    params = pruning.prunable_parameters(model)
    names = {id(m): n for n, m in model.named_modules()}
    scores = torch.cat([(m.weight.grad * m.weight).abs().flatten() for m, _ in params])
    mask = torch.cat([recorder[0]["masks"][f"{names[id(m)]}.weight_mask"].flatten() for m, _ in params])
    assert scores[mask == 0].max() <= scores[mask == 1].min()
    # Scoring leaves the network as it was: the first epoch starts from the seed's initial BN statistics.
    assert torch.equal(recorder[0]["state"]["bn1.running_mean"], torch.zeros(8))


def test_oneshot_is_dense_before_the_prune_epoch_and_at_the_target_after(mnist_idx_dir, tmp_path):
    assert run(*baseline("oneshot", mnist_idx_dir, tmp_path, "--epochs", "4", "--target-sparsity", "0.7")) == 0
    result = read_json(tmp_path / "mnist" / "oneshot-e2-0.7" / "seed42.json")  # default prune epoch: 4 // 2
    assert [row["sparsity"] for row in result["history"]] == [0.0, 0.0, masked(0.7), masked(0.7)]
    assert result["config"]["prune_epoch"] == 2 and result["epochs_trained"] == 4
    assert run(*baseline("oneshot", mnist_idx_dir, tmp_path, "--epochs", "4", "--target-sparsity", "0.7",
                         "--prune-epoch", "1")) == 0
    result = read_json(tmp_path / "mnist" / "oneshot-e1-0.7" / "seed42.json")  # its own folder and group
    assert [row["sparsity"] for row in result["history"]] == [0.0] + [masked(0.7)] * 3


def test_imp_rounds_sparsities_rewinding_and_monotone_masks(mnist_idx_dir, tmp_path, recorder):
    assert run(*baseline("imp", mnist_idx_dir, tmp_path, "--epochs", "2", "--rounds", "2", "--target-sparsity",
                         "0.75", "--rewind-epoch", "1")) == 0
    result = read_json(tmp_path / "mnist" / "imp-r2-rewind1-0.75" / "seed42.json")
    assert result["rounds"] == 3 and result["epochs_trained"] == len(result["history"]) == 6
    per_round = {r: 1 - (1 - 0.75) ** (r / 2) for r in (0, 1)} | {2: 0.75}
    assert [(row["round"], row["epoch"]) for row in result["history"]] == [(r, e) for r in range(3) for e in range(2)]
    for row in result["history"]:
        assert row["sparsity"] == masked(per_round[row["round"]]), row  # exact, every round
    assert result["final_sparsity"] == masked(0.75)
    # The rewind point: the state at the start of epoch 1 of round 0. Each later round starts from it exactly
    # on the surviving weights (pruned ones zero), with every buffer equal, and the LR schedule reset.
    rewind = next(r["state"] for r in recorder if (r["round"], r["epoch"]) == (0, 1))
    starts = [r for r in recorder if r["round"] > 0 and r["epoch"] == 0]
    assert len(starts) == 2
    for start in starts:
        for k, v in start["state"].items():
            if k.endswith("_mask"):
                continue
            mask = start["state"].get(k[:-len("_orig")] + "_mask") if k.endswith("_orig") else None
            expected = rewind[k] * mask if mask is not None else rewind[k]
            assert torch.equal(v, expected), k
    lr = [row["lr"] for row in result["history"]]
    assert lr[2] == lr[4] == lr[1]  # each round resumes the schedule at the rewind epoch...
    masks = [r["masks"] for r in recorder if r["epoch"] == 0]
    for before, after in zip(masks, masks[1:]):  # ...and masks never regrow across rounds
        assert all(torch.all(after[k] <= before[k]) for k in before)


def test_imp_default_rounds_prune_20_percent_per_round():
    for target, rounds in ((0.2, 1), (0.5, 4), (0.744, 7), (0.9, 11), (0.796, 8)):
        assert config_of("imp", target_sparsity=target).options.rounds == rounds, target
        assert 0.8 ** rounds <= 1 - target < 0.8 ** (rounds - 1)


@pytest.fixture(scope="module")
def donor(mnist_data, tmp_path_factory):
    """A finished progressive run at 0.7 (seed 42) to take a mask from: made once, only read."""
    out = tmp_path_factory.mktemp("donor")
    assert run(*tiny(mnist_data, out, "--target-sparsity", "0.7"), script=train_mnist.SCRIPT) == 0
    return out / "mnist" / "progressive-0.7"


@pytest.mark.parametrize("reinit, seed", [("donor", 7), ("random", 7), ("random", 42)])
def test_ticket_trains_the_donors_mask_from_the_chosen_initialisation(mnist_data, tmp_path, donor, recorder,
                                                                      reinit, seed):
    mask_from = donor / ("seed42.json" if reinit == "donor" else "seed42.model.pt")  # either file names the run
    assert run(*baseline("ticket", mnist_data, tmp_path / "t", "--reinit", reinit, "--seed", str(seed),
                         "--mask-from", str(mask_from))) == 0
    result = read_json(tmp_path / "t" / "mnist" / f"ticket-{reinit}-progressive-0.7" / f"seed{seed}.json")
    assert result["config"]["donor"] == "progressive-0.7" and result["target_sparsity"] == 0.7
    assert [(e["step"], e["kind"]) for e in result["mask_events"]] == [(0, "load")]
    assert [row["sparsity"] for row in result["history"]] == [masked(0.7)] * 3
    donor_weights = load_model(donor / "seed42.model.pt")
    final = load_model(tmp_path / "t" / "mnist" / f"ticket-{reinit}-progressive-0.7" / f"seed{seed}.model.pt")
    start = recorder[0]["state"]
    torch.manual_seed(42)
    donor_init = ResNet18(in_channels=1, width=8).state_dict()
    torch.manual_seed(42 if reinit == "donor" else ticket.control_seed(seed, 42))
    init = ResNet18(in_channels=1, width=8).state_dict()
    if reinit == "random":  # the control never starts from the donor's init, even with the donor's own seed
        assert not torch.equal(init["conv1.weight"], donor_init["conv1.weight"])
    for key, mask in recorder[0]["masks"].items():
        name = key[:-len("_mask")]
        assert torch.equal(mask, (donor_weights[name] != 0).float()), name  # exactly the donor's mask
        assert torch.equal(final[name] != 0, donor_weights[name] != 0), name  # and still at the end
        assert torch.equal(start[name + "_orig"], init[name] * mask), name  # the chosen init, on survivors
    assert torch.equal(start["bn1.weight"], init["bn1.weight"])


def test_ticket_refuses_masks_it_cannot_use(mnist_data, cifar10_root, tmp_path, donor, capsys):
    # (no --mask-from, and a file that is not there: test_bad_input)
    assert run(*baseline("ticket", mnist_data, tmp_path / "t", "--width", "16", "--mask-from", str(donor / "seed42.json"))) == 2
    err = capsys.readouterr().err
    assert "it is a run of mnist resnet18 width 8, this is mnist resnet18 width 16" in err and err.count("\n") == 1, err
    assert run("--dataset", "cifar10", "--method", "ticket", *tiny(cifar10_root, tmp_path / "c", "--mask-from",
                                                                    str(donor / "seed42.json"))) == 2
    assert "it is a run of mnist resnet18 width 8, this is cifar10 resnet18 width 8" in capsys.readouterr().err
    assert run(*baseline("dense", mnist_data, tmp_path / "d", epochs=1)) == 0
    capsys.readouterr()
    assert run(*baseline("ticket", mnist_data, tmp_path / "t", "--mask-from",
                         str(tmp_path / "d" / "mnist" / "dense" / "seed42.json"))) == 2
    assert "is a dense run" in capsys.readouterr().err


def test_aggregate_builds_the_method_table_and_plots_from_real_runs(mnist_idx_dir, tmp_path, capsys):
    for seed in ("1", "2"):
        for method, extra in (("dense", ()), ("progressive", ("--target-sparsity", "0.8")),
                              ("snip", ("--target-sparsity", "0.8")), ("imp", ("--target-sparsity", "0.8", "--rounds", "1"))):
            assert run(*baseline(method, mnist_idx_dir, tmp_path / "r", "--seed", seed, "--epochs", "2", *extra)) == 0
    capsys.readouterr()
    assert aggregate.main([str(tmp_path / "r"), "--strict", "--plot", str(tmp_path / "fig"), "--format", "json",
                           "-o", str(tmp_path / "t.json")]) == 0
    tables = read_json(tmp_path / "t.json")["tables"]
    assert {(r["label"], r["n"], r["epochs_trained"]) for r in tables["main"]} == {
        ("dense", 2, 2), ("progressive", 2, 2), ("snip", 2, 2), ("imp-r1", 2, 4)}
    rows = {r["label"]: r for r in tables["comparison"]}
    assert set(rows) == {"progressive", "snip", "imp-r1"}
    assert rows["snip"]["dense_n"] == rows["snip"]["progressive_n"] == 2
    assert rows["snip"]["delta_progressive_pp"] == pytest.approx(rows["snip"]["acc"] - rows["progressive"]["acc"])
    assert rows["progressive"]["progressive_acc"] is None and rows["imp-r1"]["epochs_trained"] == 4
    for name in ("accuracy_vs_sparsity.png", "accuracy_vs_cost.png", "training_curves.png"):
        assert (tmp_path / "fig" / name).read_bytes()[:4] == b"\x89PNG"
    assert aggregate.main([str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "| mnist | resnet18 | imp-r1 | 80.0% |" in out and "Δ vs progressive" in out


class InitMagnitude(methods.AtInitialisation):
    """README's "Adding a method", as written there: pruning at initialisation by |w| (a baseline of Frankle
    et al. 2021, "Pruning Neural Networks at Initialization: Why are We Missing the Mark?")."""

    name, summary = "init-magnitude", "prune at initialisation by |w|, train with the mask"

    def scores(self, run):
        return {(m, n): getattr(m, n + "_orig").detach().abs() for m, n in run.params}


def test_a_new_method_is_one_class_and_its_registry_line(mnist_data, tmp_path, monkeypatch, recorder, capsys):
    monkeypatch.setitem(methods.METHODS, InitMagnitude.name, InitMagnitude)  # its line in METHODS
    script = loop.Script("train_baseline.py", ("mnist", "fashion-mnist"), tuple(methods.METHODS), "", True)
    assert run(*baseline("init-magnitude", mnist_data, tmp_path, "--target-sparsity", "0.5", "--distribution", "erk",
                         epochs=1), script=script) == 0
    result = read_json(tmp_path / "mnist" / "init-magnitude-erk-0.5" / "seed42.json")  # its label, from its options
    assert result["method"] == "init-magnitude" and result["config"]["distribution"] == "erk"
    assert result["params_prunable"] - result["params_nonzero"] == round(0.5 * N_PRUNABLE)
    torch.manual_seed(42)
    init = ResNet18(in_channels=1, width=8)
    params = pruning.prunable_parameters(init)
    counts = pruning.layer_prune_counts(params, 0.5, "erk")
    names = {id(m): n for n, m in init.named_modules()}
    for (m, _), count in zip(params, counts):  # each layer keeps exactly its largest initial |w|
        mask = recorder[0]["masks"][f"{names[id(m)]}.weight_mask"].flatten()
        w = m.weight.detach().abs().flatten()
        assert int((mask == 0).sum()) == count and (count == 0 or w[mask == 0].max() <= w[mask == 1].min())
    assert run("--dataset", "mnist", "--method", "init-magnitude", "--rounds", "2", *tiny(mnist_data, tmp_path),
               script=script) == 2  # another method's flag is refused, naming its owner
    assert "--rounds is not an option of init-magnitude (it is one of imp)" in capsys.readouterr().err


@pytest.mark.parametrize("n_batches", [1, 2])  # one batch: g and Hg from one graph
def test_grasp_hessian_gradient_product_is_torch_hvp(n_batches):
    torch.manual_seed(0)  # float64: the two computations differ only in rounding, far below the tolerance
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    batches = [(torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1])),
               (torch.randn(4, 6, dtype=torch.float64), torch.tensor([2, 2, 0, 1]))][:n_batches]
    loss = lambda logits, y: torch.nn.functional.cross_entropy(logits / 200.0, y)  # noqa: E731
    params = [net[0].weight, net[2].weight]
    g, hg = methods.hessian_gradient_product(net, params, batches, loss)

    def total_loss(w0, w2):  # the same sum of batch losses as a function of the two weights
        out = lambda x: torch.func.functional_call(net, {"0.weight": w0, "2.weight": w2}, (x,))  # noqa: E731
        return sum(loss(out(x), y) for x, y in batches)
    expected_g = torch.autograd.grad(total_loss(*params), params)
    _, expected_hg = torch.autograd.functional.hvp(total_loss, tuple(p.detach() for p in params), tuple(expected_g))
    for got, want in zip(g + hg, list(expected_g) + list(expected_hg)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-15)
    assert all(float(h.abs().sum()) > 0 for h in hg)


def test_grasp_prunes_the_exact_count_even_when_every_score_ties(mnist_data, tmp_path, monkeypatch, recorder):
    assert run(*baseline("grasp", mnist_data, tmp_path / "a", "--target-sparsity", "0.9", epochs=1)) == 0
    assert run(*baseline("grasp", mnist_data, tmp_path / "b", "--target-sparsity", "0.9", epochs=1)) == 0
    result = read_json(tmp_path / "a" / "mnist" / "grasp-0.9" / "seed42.json")
    assert result["config"]["temperature"] == 200.0 and result["config"]["score_batches"] == 1
    assert result["params_prunable"] - result["params_nonzero"] == round(0.9 * N_PRUNABLE)
    assert same_masks(recorder[0]["masks"], recorder[1]["masks"])  # seeded: the same mask twice
    assert torch.equal(recorder[0]["state"]["bn1.running_mean"], torch.zeros(8))  # scoring left BN as it was
    zeros = lambda model, params, batches, loss: ([torch.zeros_like(p) for p in params],) * 2  # noqa: E731
    monkeypatch.setattr(methods, "hessian_gradient_product", zeros)  # every score 0: one big tie
    assert run(*baseline("grasp", mnist_data, tmp_path / "c", "--target-sparsity", "0.9", epochs=1)) == 0
    tied = read_json(tmp_path / "c" / "mnist" / "grasp-0.9" / "seed42.json")
    assert tied["params_prunable"] - tied["params_nonzero"] == round(0.9 * N_PRUNABLE)


EXTREME = {"progressive": [], "oneshot": [], "snip": [], "random": [], "grasp": [], "imp": ["--rounds", "2"],
           "rigl": ["--update-every", "2"], "set": ["--update-every", "2"]}  # ticket: its donor's target


@pytest.mark.parametrize("method", sorted(EXTREME))
def test_extreme_targets_prune_exactly_and_name_the_layers_they_cut(mnist_data, tmp_path, capsys, method):
    assert set(EXTREME) | {"dense", "ticket"} == set(methods.METHODS)
    assert run(*baseline(method, mnist_data, tmp_path, "--target-sparsity", "0.99", *EXTREME[method], epochs=2)) == 0
    (path,) = tmp_path.rglob("seed42.json")
    result = read_json(path)
    assert result["params_prunable"] - result["params_nonzero"] == round(0.99 * N_PRUNABLE)
    assert result["empty_layers"] == [row["name"] for row in result["per_layer"] if row["nonzero"] == 0]
    assert ("no active weight left" in capsys.readouterr().out) == bool(result["empty_layers"])


def test_a_run_that_cuts_the_network_says_where(tmp_path, capsys):
    # seeded random scores, one global ranking at 99% of width 4: three tensors lose every weight (CPU-independent)
    assert run("--dataset", "mnist", "--method", "random", "--dummy", "--width", "4", "--epochs", "2",
               "--train-subset", "200", "--target-sparsity", "0.99", "--out", str(tmp_path), "--device", "cpu") == 0
    cut = ["conv1.weight", "layer1.1.conv1.weight", "layer2.0.shortcut.0.weight"]
    assert read_json(tmp_path / "mnist" / "random-0.99" / "seed42.json")["empty_layers"] == cut
    out = capsys.readouterr().out
    assert out.count("warning: 3 prunable tensor(s) have no active weight left after epoch 1") == 1  # said once
    assert ", ".join(cut) in out
