"""The tree shows the pipeline: imports flow one way, pure algorithms stay numpy-only,
modules and functions stay readable. Checked statically on the source (every import,
those inside functions included), so a violation fails here, not in a user's traceback.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "deep_compression"

# The pipeline, bottom to top. A module may import from its own rank or below, never
# above. (Same-rank imports are allowed but may not form a cycle: checked separately.)
LAYERS: list[tuple[str, ...]] = [
    ("", "errors", "table", "layer_config", "recipe_io", "fileio", "progress", "records"),
    ("coding",),
    ("dcz", "han_net"),
    ("neuron", "data", "models", "caffe_models", "checkpoint", "distributed"),
    ("train", "batchnorm", "selection"),
    ("prune", "shrink"),
    ("quantize",),
    ("sparse",),
    ("encode",),
    ("loading",),
    ("phases", "recipe", "export", "no_retrain"),
    ("report",),
    ("pipeline",),
    ("budget",),
    ("cli", "__main__"),
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}

# Modules that must run where torch is absent (the numpy-only decoder and algorithms).
NO_TORCH = ("errors", "table", "layer_config", "recipe_io", "fileio", "records", "coding",
            "dcz", "neuron", "quantize/kmeans.py", "selection/paired.py")  # fmt: skip

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Dotted name relative to the package -> file ("" is the package itself)."""
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _unit(module: str) -> str:
    return module.split(".")[0]


def _imports(path: Path) -> list[str]:
    """Every ``deep_compression`` module ``path`` imports, as dotted names relative to
    the package (``from deep_compression.prune import x`` gives ``prune``, or
    ``prune.x`` when ``x`` is a submodule)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name == "deep_compression" or name.startswith("deep_compression."):
                rel = name.removeprefix("deep_compression").removeprefix(".")
                if rel in MODULES:
                    found.append(rel)
    return found


def test_every_module_has_a_layer() -> None:
    assert {_unit(m) for m in MODULES} <= set(RANK), set(map(_unit, MODULES)) - set(RANK)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_down_the_pipeline(module: str) -> None:
    rank = RANK[_unit(module)]
    for target in _imports(MODULES[module]):
        if _unit(target) == _unit(module):
            continue
        assert RANK[_unit(target)] <= rank, (
            f"{module} (layer {rank}) imports {target} (layer {RANK[_unit(target)]})"
        )


def test_no_import_cycles() -> None:
    """Between modules, counting imports inside functions too. A package's __init__
    re-exporting its own submodules is not a cycle, so those edges are left out."""

    def related(a: str, b: str) -> bool:  # a package and one of its own submodules
        return a == "" or b == "" or a.startswith(b + ".") or b.startswith(a + ".")

    graph = {
        m: {t for t in _imports(p) if t != m and not related(m, t)} for m, p in MODULES.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycle = path[path.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_pure_algorithms_do_not_import_torch() -> None:
    for rel in NO_TORCH:
        target = SRC / rel
        files = [target] if target.suffix == ".py" else list(target.rglob("*.py"))
        if not target.suffix and (SRC / f"{rel}.py").is_file():
            files = [SRC / f"{rel}.py"]
        assert files, rel
        for path in files:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                else:
                    continue
                assert not any(n == "torch" or n.startswith("torch.") for n in names), path


def test_modules_and_functions_stay_readable() -> None:
    too_long = []
    for module, path in sorted(MODULES.items()):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{module}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{module}.{node.name}: {length} lines")
    assert not too_long, too_long
