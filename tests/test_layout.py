"""The shape of the project: imports point down with no cycle, the torch-free modules stay torch-free, no
module but pruning.py grows past ~450 lines, and pruning.py imports only torch and the standard library."""

import ast
import sys

from helpers import ROOT

MODULES = sorted(p.stem for p in ROOT.glob("*.py"))
TORCH_FREE = {"config", "results", "aggregate", "stats", "plots", "published", "fetch_mnist"}  # aggregate.py never imports torch


def imports_of(module: str) -> set[str]:
    """The top-level names every import statement of ``module`` names, wherever it stands (deferred ones too)."""
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def project_graph() -> dict[str, set[str]]:
    return {m: imports_of(m) & set(MODULES) - {m} for m in MODULES}


def test_imports_form_no_cycle():
    graph, done, order = project_graph(), set(), []

    def visit(m: str, path: tuple) -> None:
        assert m not in path, f"import cycle: {' -> '.join(path + (m,))}"
        if m not in done:
            for dep in sorted(graph[m]):
                visit(dep, path + (m,))
            done.add(m)
            order.append(m)
    for m in MODULES:
        visit(m, ())
    assert set(order) == set(MODULES)


def test_torch_free_modules_never_reach_torch():
    graph = project_graph()
    for start in TORCH_FREE:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            assert not imports_of(m) & {"torch", "torchvision", "numpy"}, (start, m)
            todo += sorted(graph[m])


def test_pruning_is_one_copyable_file():
    stdlib = set(sys.stdlib_module_names)
    assert imports_of("pruning") - stdlib == {"torch"}


def test_no_module_but_pruning_is_longer_than_about_450_lines():
    lengths = {m: len((ROOT / f"{m}.py").read_text().splitlines()) for m in MODULES}
    assert {m: n for m, n in lengths.items() if n > 460 and m != "pruning"} == {}


def test_the_loop_and_aggregate_name_no_method():
    import config
    import methods
    for module in ("harness", "runfolder", "record", "aggregate", "stats", "plots", "config"):  # results: its two references
        source = (ROOT / f"{module}.py").read_text()
        for name in set(methods.METHODS) - set(config.RECIPES):  # a recipe may share a method's name: SNIP's
            assert f'"{name}"' not in source and f"'{name}'" not in source, (module, name)
    assert "snip" in config.RECIPES and '"snip"' not in (ROOT / "harness.py").read_text()
