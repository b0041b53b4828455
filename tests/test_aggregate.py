"""aggregate.py on hand-written result files: exact statistics, grouping, formats, plots, bad input."""

import csv
import io
import json
import os
import warnings

import pytest

import aggregate
from harness import published, stats

PAPER_CIFAR_SEEDS = {42: 95.28, 123: 95.37, 456: 95.13, 789: 95.10, 999: 95.09}  # the paper's five runs


def result(seed, acc, method="progressive", dataset="cifar10", target=0.796, epochs=200, width=64, **extra):
    prunable = 11_164_352
    nonzero = prunable - round(target * prunable) if method == "progressive" else prunable
    config = {"seed": seed, "epochs": epochs, "width": width, "batch_size": 128, "lr": 0.1, "dataset": dataset,
              "method": method, "script": "train_cifar10.py" if method == "progressive" else "train_dense.py",
              "out": "results", "device": "auto"}
    if method == "progressive":
        config.update(target_sparsity=target, schedule="linear")
    history = [{"epoch": e, "val_accuracy": 50.0 + 10 * e + seed % 3, "sparsity": target * e / 2} for e in range(3)]
    return {"schema": 1, "dataset": dataset, "method": method, "seed": seed,
            "target_sparsity": target if method == "progressive" else 0.0,
            "final_sparsity": (prunable - nonzero) / prunable, "test_accuracy": acc, "test_loss": 0.2,
            "params_total": 11_173_962, "params_prunable": prunable, "params_nonzero": nonzero,
            "config": config, "wall_time_s": 3600.0, "history": history, **extra}


def write(folder, name, obj):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture
def paper_folder(tmp_path):
    for seed, acc in PAPER_CIFAR_SEEDS.items():
        write(tmp_path / "cifar10" / "progressive-0.796", f"seed{seed}.json", result(seed, acc))
    return tmp_path


def tables_of(paths, ddof=1):
    return aggregate.build_tables(aggregate.load_results([str(p) for p in paths], strict=True), ddof)[1]


def test_paper_values_under_both_sd_conventions(paper_folder):
    (row,) = tables_of([paper_folder], ddof=0)["main"]
    assert row["n"] == 5 and row["seeds"] == "42 123 456 789 999"
    assert f"{row['acc_mean']:.2f} ± {row['acc_sd']:.2f}" == "95.19 ± 0.11"  # what the paper printed
    (row,) = tables_of([paper_folder], ddof=1)["main"]
    assert f"{row['acc_sd']:.2f}" == "0.12" and row["acc_mean"] == pytest.approx(95.194)
    assert (row["acc_min"], row["acc_max"]) == (95.09, 95.37)


def test_markdown_shows_the_convention_and_the_values(paper_folder, capsys):
    assert aggregate.main([str(paper_folder), "--ddof", "0"]) == 0
    out = capsys.readouterr().out
    assert "population sd (ddof=0)" in out and "95.19 ± 0.11" in out and "2.28M / 11.16M" in out
    assert aggregate.main([str(paper_folder)]) == 0
    out = capsys.readouterr().out
    assert "sample sd (ddof=1)" in out and "95.19 ± 0.12" in out


def test_single_run_has_no_sd(tmp_path, capsys):
    write(tmp_path, "seed42.json", result(42, 94.5))
    (row,) = tables_of([tmp_path])["main"]
    assert row["n"] == 1 and row["acc_sd"] is None
    aggregate.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "| 94.50 |" in out and "±" not in out.split("###")[1] and "nan" not in out


def test_groups_split_by_differing_config_and_say_why(tmp_path):
    write(tmp_path / "a", "seed1.json", result(1, 90.0, width=8))
    write(tmp_path / "a", "seed2.json", result(2, 92.0, width=8))
    write(tmp_path / "b", "seed1.json", result(1, 95.0, width=64))
    rows = tables_of([tmp_path])["main"]  # a recipe entry: in the tables' titles
    assert sorted((r["n"], r["acc_mean"], r["recipe"], r["config"]) for r in rows) == \
        [(1, 95.0, "width=64", ""), (2, 91.0, "width=8", "")]


def test_output_folder_and_device_do_not_split_groups(tmp_path):
    a, b = result(1, 90.0), result(2, 92.0)
    b["config"].update(out="elsewhere", device="cuda")
    write(tmp_path, "a.json", a)
    write(tmp_path, "b.json", b)
    (row,) = tables_of([tmp_path])["main"]
    assert row["n"] == 2


def test_tickets_of_each_seed_s_own_donor_form_one_group_but_other_donors_do_not(tmp_path):
    for seed, acc in ((1, 90.0), (2, 92.0)):  # each seed retrains its own seed's donor mask: one group
        r = result(seed, acc)
        r["config"].update(donor="progressive-0.9", donor_id=f"seed{seed}-mask-{seed:016x}", reinit="donor")
        write(tmp_path / "a", f"seed{seed}.json", r)
    other = result(1, 80.0)
    other["config"].update(donor="progressive-cubic-0.9", donor_id="seed1-mask-ff", reinit="donor")
    write(tmp_path / "b", "seed1.json", other)
    rows = tables_of([tmp_path])["main"]
    assert sorted((r["n"], r["acc_mean"]) for r in rows) == [(1, 80.0), (2, 91.0)]


def test_duplicate_seed_is_reported_and_counted_once(tmp_path, capsys):
    write(tmp_path / "x", "seed1.json", result(1, 90.0))
    write(tmp_path / "y", "seed1.json", result(1, 99.0))
    write(tmp_path / "y", "seed2.json", result(2, 92.0))
    (row,) = tables_of([tmp_path])["main"]
    assert row["n"] == 2 and row["acc_mean"] == 91.0
    assert "seed 1 appears twice" in capsys.readouterr().err


def test_welch_p_value_against_known_cases():
    # Two samples with unequal variances; reference p-values computed by scipy 1.17.1 (kept from when this
    # project had its own implementation, which agreed to 1e-10).
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    assert stats.welch_p_value(a, b) == pytest.approx(0.021378001462866992, rel=1e-10)
    paper, dense = [95.28, 95.37, 95.13, 95.10, 95.09], [95.30, 95.20, 95.31]
    assert stats.welch_p_value(paper, dense) == pytest.approx(0.2929443592230083, rel=1e-10)
    # Identical means: p = 1; no spread or n = 1: undefined.
    assert stats.welch_p_value([1.0, 2.0, 3.0], [1.5, 2.0, 2.5]) == pytest.approx(1.0)
    assert stats.welch_p_value([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) is None
    assert stats.welch_p_value([1.0], [2.0, 2.5, 3.0]) is None


def test_welch_p_value_with_one_constant_group_is_the_one_sample_test_and_quiet():
    # A method at chance on every seed (VGG-19 SNIP at 98% in the third study): Welch's df reduces to n - 1 of
    # the other group, i.e. the one-sample t-test against the constant; SciPy's precision warning is silenced.
    from scipy.stats import ttest_1samp
    chance, other = [10.0, 10.0, 10.0], [87.39, 88.38, 88.32]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = stats.welch_p_value(chance, other)
        paired = stats.paired_difference({"seeds": [1, 2, 3], "acc": chance}, {"seeds": [1, 2, 3], "acc": other})
    assert p == pytest.approx(ttest_1samp(other, 10.0).pvalue, rel=1e-9)
    assert paired[2] == pytest.approx(p, rel=1e-9)  # the differences are the other group shifted


def test_comparison_against_dense_of_same_recipe(paper_folder):
    for seed, acc in {42: 95.30, 123: 95.20, 456: 95.31}.items():
        write(paper_folder / "cifar10" / "dense", f"seed{seed}.json", result(seed, acc, method="dense"))
    write(paper_folder / "other", "seed1.json", result(1, 80.0, method="dense", epochs=10))  # another recipe
    (row,) = tables_of([paper_folder])["comparison"]
    assert row["dense_n"] == 3 and row["dense_acc"] == pytest.approx(95.27)
    assert row["delta_dense_pp"] == pytest.approx(95.194 - 95.27)
    assert row["param_reduction"] == pytest.approx(round(0.796 * 11_164_352) / 11_164_352)
    assert row["dense_welch_p"] == pytest.approx(0.2929443592230083, rel=1e-10)
    assert row["progressive_acc"] is None  # the paper's method is not compared with itself


def test_sweep_sorted_by_sparsity(tmp_path):
    for target, acc in ((0.9, 93.0), (0.7, 95.0), (0.8, 94.5)):
        write(tmp_path / f"p{target}", "seed1.json", result(1, acc, target=target))
    write(tmp_path / "dense", "seed1.json", result(1, 95.3, method="dense"))
    rows = tables_of([tmp_path])["sweep"]
    assert [r["method"] for r in rows] == ["dense", "progressive", "progressive", "progressive"]  # labels
    assert [r["target_sparsity"] for r in rows[1:]] == [0.7, 0.8, 0.9]


def test_every_format_parses(paper_folder, tmp_path):
    write(paper_folder / "cifar10" / "dense", "seed42.json", result(42, 95.3, method="dense"))
    out = tmp_path / "t.csv"
    assert aggregate.main([str(paper_folder), "--format", "csv", "-o", str(out)]) == 0
    blocks = out.read_text().split("\n\n")
    main_rows = list(csv.DictReader(io.StringIO(blocks[0])))
    assert len(main_rows) == 2 and {r["table"] for r in main_rows} == {"main"}
    assert float(next(r for r in main_rows if r["method"] == "progressive")["acc_mean"]) == pytest.approx(95.194)
    assert list(csv.DictReader(io.StringIO(blocks[1])))[0]["table"] == "comparison"
    assert aggregate.main([str(paper_folder), "--format", "json", "-o", str(tmp_path / "t.json")]) == 0
    parsed = json.loads((tmp_path / "t.json").read_text())
    assert {"main", "comparison", "sweep"} == set(parsed["tables"]) and len(parsed["tables"]["main"]) == 2
    assert aggregate.main([str(paper_folder), "--format", "latex", "-o", str(tmp_path / "t.tex")]) == 0
    tex = (tmp_path / "t.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex and r"95.19 $\pm$ 0.12" in tex


def test_plots_are_written(paper_folder, tmp_path):
    write(paper_folder / "cifar10" / "dense", "seed42.json", result(42, 95.3, method="dense"))
    dense_only = result(42, 91.0, method="dense")  # a panel (another network) that holds only dense runs so far
    dense_only["config"]["arch"] = "vgg19"
    write(paper_folder / "cifar10" / "vgg19-dense", "seed42.json", dense_only)
    assert aggregate.main([str(paper_folder), "--plot", str(tmp_path / "fig")]) == 0
    for name in ("accuracy_vs_sparsity.png", "accuracy_vs_cost.png", "training_curves.png"):
        path = tmp_path / "fig" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"schema": 1, "dataset": "cifar10"', "not valid JSON"),  # partial write
    (json.dumps({k: v for k, v in result(1, 90.0).items() if k != "test_accuracy"}), "missing key(s) test_accuracy"),
    (json.dumps({**result(1, 90.0), "schema": 7}), "unknown schema version 7"),
    (json.dumps(result(1, float("nan"))), "test_accuracy nan is not a percentage in [0, 100]"),
    (json.dumps(result(1, float("inf"))), "test_accuracy inf is not a percentage in [0, 100]"),
    (json.dumps(result(1, -50)), "test_accuracy -50 is not a percentage in [0, 100]"),
    (json.dumps(result(1, 250.0)), "test_accuracy 250.0 is not a percentage in [0, 100]"),
    (json.dumps(result(1, True)), "test_accuracy must be a number"),
])
def test_bad_files_are_named_and_skipped_or_fatal_when_strict(paper_folder, capsys, content, message):
    bad = write(paper_folder, "bad.json", content)
    assert aggregate.main([str(paper_folder)]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipping {bad}: {message}" in captured.err and "95.19 ± 0.12" in captured.out
    assert aggregate.main([str(paper_folder), "--strict"]) == 2
    err = capsys.readouterr().err
    assert bad in err and message in err and err.count("\n") == 1


def test_no_results_is_an_error(tmp_path, capsys):
    assert aggregate.main([str(tmp_path)]) == 2
    assert "no result files found" in capsys.readouterr().err
    assert aggregate.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_flags_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        aggregate.main(["results", "--ddof", "3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--ddof: invalid choice: 3" in err and err.count("\n") == 1


def test_holm_adjustment_is_step_down_in_the_input_order():
    # Holm (1979): the k-th smallest of m p-values times m - k + 1, then non-decreasing; capped at 1
    assert stats.holm_adjust([0.05, 0.01, 0.04, 0.02, 0.03]) == [0.09, 0.05, 0.09, 0.08, 0.09]
    assert stats.holm_adjust([0.5, None, 0.4]) == [0.8, None, 0.8]
    assert stats.holm_adjust([0.9, 0.6]) == [1.0, 1.0]
    assert stats.holm_adjust([None]) == [None]


def test_paired_differences_where_groups_share_their_seeds(tmp_path):
    # a pruned group and dense on the same three seeds: paired over seeds; a group on other seeds: Welch only
    dense = {42: 95.0, 123: 95.4, 456: 94.8}
    pruned = {42: 94.5, 123: 95.1, 456: 94.0}
    for seed in dense:
        write(tmp_path / "d", f"seed{seed}.json", result(seed, dense[seed], method="dense"))
        write(tmp_path / "p", f"seed{seed}.json", result(seed, pruned[seed]))
    for seed, acc in ((1, 94.0), (2, 94.6)):
        write(tmp_path / "o", f"seed{seed}.json", result(seed, acc, target=0.9))
    (row,) = [r for r in tables_of([tmp_path])["comparison"] if r["target_sparsity"] == 0.796]
    from scipy import stats
    assert row["dense_paired_delta_pp"] == pytest.approx(-0.5333333333, abs=1e-9)  # (-0.5, -0.3, -0.8) / 3
    assert row["dense_paired_sd"] == pytest.approx(0.2516611478, abs=1e-9)
    assert row["dense_paired_p"] == pytest.approx(float(stats.ttest_rel(list(pruned.values()), list(dense.values())).pvalue))
    assert row["dense_paired_holm_p"] == pytest.approx(row["dense_paired_p"])  # the only paired test: Holm = p
    (other,) = [r for r in tables_of([tmp_path])["comparison"] if r["target_sparsity"] == 0.9]
    assert other["dense_paired_delta_pp"] is None and other["dense_welch_p"] is not None  # seeds 1, 2 vs 42, ...
    text = aggregate.render_markdown(tables_of([tmp_path]), "")
    assert "-0.53 ± 0.25 (p " in text and "paired Δ vs dense" in text


def test_published_figures_sit_beside_the_matching_groups_and_say_how_the_settings_differ(paper_folder, capsys):
    assert aggregate.main([str(paper_folder), "--published"]) == 0
    section = capsys.readouterr().out.split("### Against the published figures")[1]
    assert ("| cifar10 | resnet18 | progressive | 79.6% | 95.19 ± 0.12 (5) | 95.19 ± 0.11 | +0.00 | the paper (README), "
            "its Expected outputs | no (in what the source states) |") in section
    write(paper_folder / "short", "seed1.json", result(1, 90.0, epochs=30))  # another budget: said, in its own row
    write(paper_folder / "vgg", "seed1.json", result(1, 91.0, target=0.9797))  # made a VGG-19 below
    slow = result(1, 94.0)
    slow["config"]["lr"] = 0.01  # another learning rate than the row's 0.1: said
    write(paper_folder / "slow", "seed1.json", slow)
    found = aggregate.load_results([str(paper_folder)], strict=True)
    found[-1]["config"]["arch"] = "vgg19"
    rows = aggregate.build_tables(found, 1, published.load())[1]["published"]
    assert sorted((r["arch"], r["acc_mean"], r["delta_pp"], r["differs"]) for r in rows) == [
        ("resnet18", 90.0, pytest.approx(90.0 - 95.19), "epochs 30 vs 200"),
        ("resnet18", 94.0, pytest.approx(94.0 - 95.19), "lr 0.01 vs 0.1"),
        ("resnet18", pytest.approx(95.194), pytest.approx(0.004), ""),
        ("vgg19", 91.0, pytest.approx(91.0 - 93.44), "budget: theirs not stated; recipe: theirs not stated")]


@pytest.mark.parametrize("text, message", [
    ("source,accuracy\nx,1\n", "expected the columns source, where"),
    (",".join(published.COLUMNS) + "\n" + "s,w,mnist,lenet300,snip,0.98,ninety,,,,,,,\n", "line 2: accuracy 'ninety' is not a number"),
])
def test_a_bad_published_file_is_one_line(tmp_path, paper_folder, capsys, text, message):
    path = write(tmp_path, "published.csv", text)
    assert aggregate.main([str(paper_folder), "--published", path]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_committed_published_figures_name_settings_this_harness_runs():
    from harness import config, methods
    rows = published.load()
    assert len(rows) >= 13 and all(0 < r["accuracy"] <= 100 for r in rows)
    for r in rows:
        assert r["dataset"] in config.RECIPES["paper"] and r["arch"] in config.ARCHS and r["label"] in methods.METHODS
        assert (r["target_sparsity"] is None) == (r["label"] == "dense") and r["recipe"] in ("", *config.RECIPE_NAMES)
