"""harness/results.py and harness/config.py: the schema both sides share, reading files of the first release, the config
that generates the command line, and that neither the loop nor aggregate.py names a method."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import aggregate
from harness import config, methods, results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCHEMA1 = {"progressive": HERE / "data" / "schema1-progressive-seed42.json",  # written by the first release's
           "dense": HERE / "data" / "schema1-dense-seed42.json"}            # code (quick start, seed 42)


def test_schema1_files_are_read_with_the_meaning_they_had():
    for method, path in SCHEMA1.items():
        raw = json.loads(path.read_text())
        assert raw["schema"] == 1 and raw["config"]["precision"] == "auto"
        r = results.read_result(str(path))
        assert r["schema"] == results.SCHEMA and r["method"] == method and r["label"] == method
        assert r["precision"] == r["config"]["precision"] == "fp32"  # CPU run, auto meant fp32
        assert r["epochs_trained"] == r["epochs"] == 3 and [row["round"] for row in r["history"]] == [0, 0, 0]
        assert set(config.FIELDS) <= set(r["config"])  # fields added since: their defaults
        assert r["test_accuracy"] == raw["test_accuracy"]


def test_schema1_files_aggregate_into_the_comparison(tmp_path):
    for path in SCHEMA1.values():
        shutil.copy(path, tmp_path / path.name)
    summaries, tables = aggregate.build_tables(aggregate.load_results([str(tmp_path)], strict=True), 1)
    assert [r["method"] for r in tables["main"]] == ["dense", "progressive"]
    (row,) = tables["comparison"]
    assert row["dense_acc"] == pytest.approx(76.61) and row["acc"] == pytest.approx(76.92)
    assert row["delta_dense_pp"] == pytest.approx(0.31)


def test_fp32_and_bf16_runs_never_average_together(tmp_path):
    raw = json.loads(SCHEMA1["progressive"].read_text())
    for seed, precision in ((1, "fp32"), (2, "fp32"), (3, "bf16")):
        r = results.upgrade(dict(raw, seed=seed))
        r["config"] = dict(r["config"], seed=seed, precision=precision)
        (tmp_path / f"s{seed}.json").write_text(json.dumps(r))
    rows = aggregate.build_tables(aggregate.load_results([str(tmp_path)], strict=True), 1)[1]["main"]
    assert sorted((r["n"], r["recipe"]) for r in rows) == [(1, "precision=bf16"), (2, "precision=fp32")]


def test_group_keys_come_from_the_config_fields():
    assert results.NOT_GROUPING == {"seed", "out", "force", "data_dir", "no_download", "device", "compile", "channels_last", "script",
                                    "mask_from",  # the donor's path: its label and target are the "donor" field
                                    "donor_id"}  # the donor's seed and mask hash: one per seed, like the seed
    assert results.RECIPE_FIELDS == {"recipe", "epochs", "steps", "batch_size", "lr", "lr_schedule", "lr_milestones",
                                     "lr_decay", "momentum", "weight_decay", "label_smoothing", "augment", "arch",
                                     "width", "train_subset", "val_fraction", "dummy",
                                     "eval_batch_size", "no_sync_bn", "precision"}
    for name, f in config.FIELDS.items():  # no method's option among the common fields
        assert f.metadata["help"] and f.metadata["role"] in (config.TASK, config.RECIPE, config.RUN), name
    for m in methods.METHODS.values():
        for name, f in config.option_fields(m.Options).items():
            assert name not in config.FIELDS and f.metadata["help"] and f.metadata["role"] in (config.OPTION, config.RUN)
            assert f.default is None, (m.name, name)  # None until the method fills it: an absent entry means None
    mask_from = config.option_fields(methods.METHODS["ticket"].Options)["mask_from"]
    assert mask_from.metadata["role"] == config.RUN  # what NOT_GROUPING names


def test_every_field_is_a_flag_of_a_script_that_uses_it():
    parser = config.build_parser("x", "", tuple(config.PAPER_RECIPES), methods.options_of(tuple(methods.METHODS)), None)
    flags = {a.dest for a in parser._actions}
    every = {**config.FIELDS, **{n: f for m in methods.METHODS.values() for n, f in config.option_fields(m.Options).items()}}
    derived = {name for name, f in every.items() if not f.metadata["flag"]}
    assert derived == {"script", "donor", "donor_id"} and set(every) - derived <= flags
    options = {n for m in methods.METHODS.values() for n in config.option_fields(m.Options)}
    assert "target_sparsity" in options and len(options) == 18  # one flag per name, shared where methods share it


def test_a_method_takes_exactly_its_own_flags():
    import train_baseline
    script = train_baseline.SCRIPT
    for name, m in methods.METHODS.items():
        own = {n for n, f in config.option_fields(m.Options).items() if f.metadata["flag"]}
        parsed = config.parse_config(["--dataset", "mnist", "--method", name], "x", "", script.datasets,
                                     methods.options_of(script.methods), None)
        assert type(parsed.options) is m.Options and set(dataclasses.asdict(parsed.options)) >= own
        flat = parsed.to_dict()
        assert set(flat) == set(config.FIELDS) | set(config.option_fields(m.Options))  # the JSON's config


def test_paper_recipes_cover_every_dataset():
    from harness import data
    assert set(config.PAPER_RECIPES) == set(data.DATASETS)


def test_a_config_field_added_later_takes_its_default_when_reading(tmp_path):
    r = results.upgrade(json.loads(SCHEMA1["progressive"].read_text()))
    del r["config"]["no_sync_bn"]  # as written before that field existed
    (tmp_path / "old.json").write_text(json.dumps(r))
    assert results.read_result(str(tmp_path / "old.json"))["config"]["no_sync_bn"] is False
    assert config.config_difference(results.upgrade(r)["config"], results.upgrade(json.loads(
        SCHEMA1["progressive"].read_text()))["config"]) == ""
