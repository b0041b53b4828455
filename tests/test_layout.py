"""The shape of the project: the root holds only what a user runs or copies, everything else is one package;
imports point down with no cycle, the torch-free modules stay torch-free, no module but pruning.py grows past
~450 lines, and pruning.py imports only torch and the standard library."""

import ast
import subprocess
import sys

from helpers import ROOT

PACKAGE = "harness"
ROOT_FILES = {"train_cifar10", "train_mnist", "train_dense", "train_baseline", "sweep", "aggregate", "pruning",
              "fetch_mnist"}  # what a user runs (or, pruning.py, copies)
MODULES = sorted([p.stem for p in ROOT.glob("*.py")] +
                 [f"{PACKAGE}.{p.stem}" for p in (ROOT / PACKAGE).glob("*.py") if p.stem != "__init__"])
TORCH_FREE = {"aggregate", "fetch_mnist", *(f"{PACKAGE}.{m}" for m in ("config", "results", "stats", "plots",
                                                                       "published"))}  # aggregate.py never imports torch


def path_of(module: str):
    return ROOT / f"{module.replace('.', '/')}.py"


def imports_of(module: str) -> set[str]:
    """Every name an import statement of ``module`` names, wherever it stands (deferred ones too): top-level
    packages as themselves, and each module of this package as ``harness.<module>``."""
    names = set()
    for node in ast.walk(ast.parse(path_of(module).read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name if a.name.startswith(PACKAGE + ".") else a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == PACKAGE:
                names |= {f"{PACKAGE}.{a.name}" for a in node.names}
            else:
                names.add(node.module if node.module.startswith(PACKAGE + ".") else node.module.split(".")[0])
    return names


def project_graph() -> dict[str, set[str]]:
    return {m: imports_of(m) & set(MODULES) - {m} for m in MODULES}


def test_the_root_holds_what_a_user_runs_and_the_package_the_rest():
    assert {m for m in MODULES if "." not in m} == ROOT_FILES
    assert (ROOT / PACKAGE / "__init__.py").exists()
    init = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    assert not [n for n in ast.walk(init) if isinstance(n, (ast.Import, ast.ImportFrom))]  # imports nothing


def test_package_modules_never_import_a_root_script():
    for m in MODULES:
        if m.startswith(PACKAGE + "."):
            assert not imports_of(m) & (ROOT_FILES - {"pruning"}), m  # pruning.py: the library, below everything


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


def test_aggregate_runs_without_torch_in_a_fresh_interpreter():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None; sys.argv = ['aggregate.py', '-h']\n"
            "import runpy\ntry:\n    runpy.run_path('aggregate.py', run_name='__main__')\nexcept SystemExit as e:\n"
            "    raise SystemExit(e.code)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_pruning_is_one_copyable_file():
    stdlib = set(sys.stdlib_module_names)
    assert imports_of("pruning") - stdlib == {"torch"}


def test_no_module_but_pruning_is_longer_than_about_450_lines():
    lengths = {m: len(path_of(m).read_text().splitlines()) for m in MODULES}
    assert {m: n for m, n in lengths.items() if n > 460 and m != "pruning"} == {}


def test_the_loop_and_aggregate_name_no_method():
    from harness import config, methods
    for module in ("harness.loop", "harness.run", "harness.runfolder", "harness.record", "aggregate", "harness.stats",
                   "harness.plots", "harness.config"):  # results: its two references
        source = path_of(module).read_text()
        for name in set(methods.METHODS) - set(config.RECIPES):  # a recipe may share a method's name: SNIP's
            assert f'"{name}"' not in source and f"'{name}'" not in source, (module, name)
    assert "snip" in config.RECIPES and '"snip"' not in path_of("harness.loop").read_text()


def test_only_the_run_writes_a_mask_buffer():
    """Masks change through Run's own methods (prune, set_masks, lift_masks / lower_masks; run.py says so):
    no other module of the harness, script or study writes a ``*_mask`` buffer in place or assigns one."""
    import re
    writes = re.compile(r"""_mask"?\)?\s*\.\s*(fill_|copy_|zero_|masked_fill_|mul_|set_|data\b|index_put_)|"""
                        r"""\w+_mask\s*\[[^\]]*\]\s*=[^=]""")
    offenders = {m: [line.strip() for line in path_of(m).read_text().splitlines() if writes.search(line)]
                 for m in MODULES if m not in ("harness.run", "pruning")}
    assert {m: lines for m, lines in offenders.items() if lines} == {}
    for line in ('getattr(m, n + "_mask").fill_(1)', 'getattr(m, n + "_mask").copy_(mask)',
                 "module.weight_mask[0] = 0", "run.model.fc.weight_mask.zero_()"):  # the pattern sees each write
        assert writes.search(line), line
