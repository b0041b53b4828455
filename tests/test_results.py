"""results.py and config.py: the schema both sides share, reading files of the first release, the config
that generates the command line, and that neither the loop nor aggregate.py names a method."""

import json
import os
import shutil
from pathlib import Path

import pytest

import aggregate
import config
import methods
import results

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
    assert sorted((r["n"], r["config"]) for r in rows) == [(1, "precision=bf16"), (2, "precision=fp32")]


def test_group_keys_come_from_the_config_fields():
    assert results.NOT_GROUPING == {"seed", "out", "force", "data_dir", "no_download", "device", "compile", "channels_last", "script",
                                    "mask_from",  # the donor's path: its label and target are the "donor" field
                                    "donor_id"}  # the donor's seed and mask hash: one per seed, like the seed
    assert {"target_sparsity", "schedule", "rounds", "reinit", "donor", "prune_epoch"} <= config.METHOD_FIELDS
    for name, f in config.FIELDS.items():
        assert f.metadata["help"] and f.metadata["kind"] in (config.RECIPE, config.METHOD, config.RUN), name


def test_every_field_is_a_flag_of_a_script_that_uses_it():
    every_method = {m: methods.METHODS[m].options for m in methods.METHODS}
    parser = config.build_parser("x", "", tuple(config.PAPER_RECIPES), every_method, None)
    flags = {a.dest for a in parser._actions}
    derived = {name for name, f in config.FIELDS.items() if not f.metadata["flag"]}
    assert derived == {"script", "donor", "donor_id"} and set(config.FIELDS) - derived <= flags


def test_paper_recipes_cover_every_dataset():
    import data
    assert set(config.PAPER_RECIPES) == set(data.DATASETS)


def test_neither_the_training_loop_nor_aggregate_names_a_method():
    for module in ("experiment.py", "aggregate.py"):
        source = (ROOT / module).read_text()
        for name in methods.METHODS:
            assert f'"{name}"' not in source and f"'{name}'" not in source, (module, name)


def test_a_config_field_added_later_takes_its_default_when_reading(tmp_path):
    r = results.upgrade(json.loads(SCHEMA1["progressive"].read_text()))
    del r["config"]["no_sync_bn"]  # as written before that field existed
    (tmp_path / "old.json").write_text(json.dumps(r))
    assert results.read_result(str(tmp_path / "old.json"))["config"]["no_sync_bn"] is False
    assert config.config_difference(results.upgrade(r)["config"], results.upgrade(json.loads(
        SCHEMA1["progressive"].read_text()))["config"]) == ""
