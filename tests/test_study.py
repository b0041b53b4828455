"""The committed studies stay readable and reachable: their sweeps' commands name exactly the committed runs,
the harness of today recognises each committed result as finished (a rerun skips it), and each committed table
is what aggregate.py makes of the committed JSON."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aggregate
from harness import loop, methods, runfolder
import train_baseline

ROOT = Path(__file__).resolve().parent.parent
STUDIES = [("run_study.py", "study"), ("run_first.py", "study/first"), ("run_schedules.py", "study/schedules"),
           ("run_third.py", "study/third"), ("run_fourth.py", "study/fourth")]
IN_PROGRESS: list[tuple[str, str]] = []  # still running: each committed run is a command's
PUBLISHED = {"study/fourth"}  # tables made with --published: beside the figures the papers published


def planned_result(argv: list[str]) -> str | None:
    """The result file a run's command writes (as loop.train_process names it), without running it; None
    for a ticket whose donor's model file is not committed (the first study's): its folder names the donor."""
    if "ticket" in argv and not Path(argv[argv.index("--mask-from") + 1]).with_suffix(".model.pt").exists():
        return None
    config = loop.parse(train_baseline.SCRIPT, argv)
    return runfolder.run_paths(config, methods.create(config).folder())["result"]


@pytest.mark.parametrize("script, folder", STUDIES + IN_PROGRESS)
def test_the_study_commands_are_exactly_the_committed_runs_and_are_skipped(script, folder, tmp_path, capsys):
    out = tmp_path / "results"
    shutil.copytree(ROOT / folder / "results", out, ignore=shutil.ignore_patterns("logs"))
    dry = subprocess.run([sys.executable, f"study/{script}", "--dry-run", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    commands = [shlex.split(line)[2:] for line in dry.stdout.splitlines()]
    planned = [planned_result(argv) for argv in commands]
    known = [r for r in planned if r is not None]
    expected = sorted(str(p) for p in out.rglob("seed*.json"))
    assert len(set(known)) == len(known)  # each command its own run
    assert all("ticket" in r for r in set(expected) - set(known))  # every committed run is a command's
    if (script, folder) not in IN_PROGRESS:  # and every command's run is committed
        assert len(commands) == len(expected) and set(known) <= set(expected)
    for argv, result in zip(commands, planned):
        if result is None or not Path(result).exists():  # a donor not committed; a run not made yet
            continue
        assert loop.main(train_baseline.SCRIPT, argv) == 0
        said = capsys.readouterr().out
        assert f"{result} is finished (test accuracy" in said, argv


@pytest.mark.parametrize("folder", [folder for _, folder in STUDIES + IN_PROGRESS])
def test_the_committed_table_is_what_aggregate_makes_of_the_committed_json(folder, tmp_path):
    made = tmp_path / "table.md"
    extra = ["--published"] if folder in PUBLISHED else []
    assert aggregate.main([str(ROOT / folder / "results"), "-o", str(made), *extra]) == 0
    assert made.read_text() == (ROOT / folder / "table.md").read_text()


def markdown_tables(text: str) -> list[tuple[str, list[dict[str, str]]]]:
    """Every Markdown table in ``text``: (the last heading above it, its rows as header name -> cell)."""
    tables, lines, heading = [], text.splitlines(), ""
    for i, line in enumerate(lines):
        heading = line if line.startswith("#") else heading
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace(" ", "")) <= set("|-") \
                and (i == 0 or not lines[i - 1].startswith("|")):
            header = cells(line)
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, cells(row))))
            tables.append((heading, rows))
    return tables


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def group(row: dict[str, str]) -> tuple:
    """A row's group: dataset, network, label, target and recipe; a page's table may leave out the dataset
    (the first three studies': Fashion-MNIST), the network (the second study's ResNet-18) and the recipe (the
    paper's)."""
    return (row.get("dataset", "fashion-mnist"), row.get("arch", "resnet18"), row["label"], row["target"],
            row.get("recipe", "paper"))


def committed_groups(folder: str) -> dict:
    """Every group of a committed table: its key (:func:`group`) -> its cells, from all its tables; the recipe is
    the one aggregate.py names in the table's title."""
    committed = {}
    for heading, rows in markdown_tables((ROOT / folder / "table.md").read_text()):
        recipe = re.search(r"recipe=(\w+)", heading)
        for row in rows:
            if "label" in row and "target" in row:
                row = {**row, "recipe": recipe.group(1) if recipe else "paper"}
                committed.setdefault(group(row), {}).update(row)
    return committed


def shown_groups(text: str, committed: dict) -> set:
    """The groups a page's tables show, each checked cell by cell against the committed tables."""
    shown = set()
    for _, rows in markdown_tables(text):
        for row in rows:
            if "label" in row and "target" in row and "test acc (%)" in row:
                assert {k: committed[group(row)].get(k, "–") for k in row} == row  # "–": no such cell
                shown.add(group(row))
    return shown


def test_the_study_page_and_readme_numbers_are_the_committed_tables():
    second, third, fourth = (committed_groups(f) for f in ("study", "study/third", "study/fourth"))
    page = shown_groups((ROOT / "docs" / "study.md").read_text(), {**second, **fourth})
    assert set(second) <= page  # every group of the second study
    snip = lambda arch, label, target: ("mnist", arch, label, target, "snip")  # noqa: E731
    assert {snip("lenet300", "snip", "98.0%"), snip("lenet300", "dense", "–"), snip("lenet5", "snip", "99.0%"),
            snip("lenet5", "dense", "–")} <= page  # the fourth study: ours beside SNIP's published figures
    headline = shown_groups((ROOT / "README.md").read_text(), {**second, **third, **fourth})  # a few, as committed
    fashion = lambda arch, label, target: ("fashion-mnist", arch, label, target, "paper")  # noqa: E731
    assert len(headline & set(second)) >= 8
    assert {fashion("resnet18", "progressive", "95.0%"), fashion("resnet18", "dense", "–")} <= headline
    assert {fashion("lenet300", "progressive", "99.0%"), fashion("lenet300", "dense", "–")} <= headline
    assert {snip("lenet300", "snip", "98.0%"), snip("lenet300", "progressive", "98.0%")} <= headline


def test_the_study_page_s_pivot_blocks_are_what_pivot_makes_of_the_committed_json():
    sys.path.insert(0, str(ROOT / "study"))
    import pivot
    blocks = pivot.BLOCK.findall((ROOT / "docs" / "study.md").read_text())
    assert [folder for folder, _ in blocks] == ["study/fourth/results/recipesnip", "study/fourth/results/recipepaper",
                                                "study/third/results"]
    for folder, body in blocks:
        assert body == pivot.pivot([str(ROOT / folder)])


OUTPUT_BLOCK = re.compile(r"^<!-- output of: (python study/\S+\.py[^>]*?) -->\n(.*?)^<!-- /output -->$", re.M | re.S)


def test_the_study_page_s_printed_tables_are_what_their_commands_print_now():
    """A table the page quotes from a study script (the SNIP probe, paired comparisons) is that script's output
    on the committed files, rerun here (torch-free, seconds)."""
    blocks = OUTPUT_BLOCK.findall((ROOT / "docs" / "study.md").read_text())
    assert len(blocks) >= 3
    for command, body in blocks:
        done = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and done.stdout == body, command


def test_pivot_update_rewrites_only_its_blocks_and_refuses_a_page_without_one(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "study"))
    import pivot
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- pivot: study/third/results -->\nstale\n<!-- /pivot -->\nafter\n")
    assert pivot.main(["--update", str(page)]) == 0
    assert page.read_text() == ("before\n<!-- pivot: study/third/results -->\n"
                                f"{pivot.pivot([str(ROOT / 'study/third/results')])}<!-- /pivot -->\nafter\n")
    (tmp_path / "plain.md").write_text("no block\n")
    assert pivot.main(["--update", str(tmp_path / "plain.md")]) == 2
    assert (tmp_path / "plain.md").read_text() == "no block\n"
    assert capsys.readouterr().err.splitlines()[-1].startswith("pivot.py: error: ")
