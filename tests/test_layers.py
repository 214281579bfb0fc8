"""The import graph between packages follows the layer order (README "Layout", Setup/NOTES.md §8).

Every `import` and `from ... import` in every module counts, those inside functions included, so a
cycle cannot hide behind a function-level import. A package may import only from packages on a
lower layer; `training` and `evals` share a layer and must not import each other.

    python -m pytest -q tests/test_layers.py
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Lowest first. Packages on the same layer may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("utils",),
    ("vlm_datasets",),
    ("scoring",),
    ("training", "evals"),
    ("studies",),
    ("scripts", "bench"),
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}

# Imports that break the order today: (importing package, imported package) -> reason. Each fix removes
# its line; the test fails when an edge here is gone (so the list cannot go stale) or a new one appears.
KNOWN: dict[tuple[str, str], str] = {}


def module_imports(path: Path, package: str) -> set[str]:
    """Top-level package names that `path` (inside `package`) imports, at any depth of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.add(package if node.level else (node.module or "").split(".")[0])
    return out


def package_graph(repo: Path) -> dict[tuple[str, str], list[str]]:
    """`(importer, imported) -> [files]` for every import between two different layered packages."""
    edges: dict[tuple[str, str], list[str]] = {}
    for pkg in RANK:
        for path in sorted((repo / pkg).rglob("*.py")):
            for target in module_imports(path, pkg):
                if target in RANK and target != pkg:
                    edges.setdefault((pkg, target), []).append(path.relative_to(repo).as_posix())
    return edges


def violations(edges) -> dict[tuple[str, str], list[str]]:
    """The edges that do not point strictly down the layer order."""
    return {e: files for e, files in edges.items() if RANK[e[0]] <= RANK[e[1]]}


def test_layer_order_holds():
    bad = violations(package_graph(REPO))
    new = {e: f for e, f in bad.items() if e not in KNOWN}
    assert not new, "imports against the layer order (README 'Layout'): " + "; ".join(
        f"{a} -> {b} in {', '.join(files)}" for (a, b), files in sorted(new.items()))
    fixed = sorted(set(KNOWN) - set(bad))
    assert not fixed, f"fixed, remove from KNOWN in tests/test_layers.py: {fixed}"


def test_every_package_is_layered():
    """A new top-level package must be given a layer, or its imports would go unchecked."""
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} | {"scripts", "bench"}
    assert packages - {"tests"} <= set(RANK), sorted(packages - set(RANK) - {"tests"})


def _write(tmp: Path, rel: str, text: str) -> None:
    p = tmp / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def test_checker_catches_a_forbidden_import(tmp_path):
    """A synthetic repo: a lazy import of evals inside a training function, utils reaching up to
    vlm_datasets through a relative-free `from`, and a library module importing a script."""
    for pkg in RANK:
        _write(tmp_path, f"{pkg}/__init__.py", "")
    _write(tmp_path, "training/ok.py", "import utils.io\nfrom vlm_datasets import prompts\n")
    _write(tmp_path, "training/bad.py", "def f():\n    from evals.metrics import consistency\n    return consistency\n")
    _write(tmp_path, "utils/bad.py", "import os\nfrom vlm_datasets.nlvr2 import parse_uid\n")
    _write(tmp_path, "studies/bad.py", "import scripts.evaluate\n")
    _write(tmp_path, "scripts/ok.py", "from studies import reproduce\nfrom . import ok\n")
    bad = violations(package_graph(tmp_path))
    assert set(bad) == {("training", "evals"), ("utils", "vlm_datasets"), ("studies", "scripts")}
    assert bad[("training", "evals")] == ["training/bad.py"]


def test_side_by_side_packages_may_not_import_each_other():
    edges = {("evals", "training"): ["x"], ("training", "evals"): ["y"], ("evals", "scoring"): ["z"]}
    assert set(violations(edges)) == {("evals", "training"), ("training", "evals")}


def test_data_layer_loads_no_model():
    """vlm_datasets holds data and prompts, no model code: a caller that needs a processor passes it in."""
    loads = [p.relative_to(REPO).as_posix() for p in sorted((REPO / "vlm_datasets").rglob("*.py"))
             if {"utils.models", "utils.tiny_model"} & _modules(p)]
    assert not loads, loads


def _modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out
