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
    ("encode", "encode_config"),
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


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the import statements under ``if TYPE_CHECKING:`` (never run)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).split(".")[-1] == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(path: Path, *, runtime_only: bool = False) -> list[str]:
    """Every ``deep_compression`` module ``path`` imports, as dotted names relative to
    the package (``from deep_compression.prune import x`` gives ``prune``, or
    ``prune.x`` when ``x`` is a submodule); with ``runtime_only``, not those under
    ``if TYPE_CHECKING:``."""
    found = []
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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


# The package's face (``import deep_compression as dc``, its __init__) imports every stage,
# but lazily: its run-time imports are errors alone (checked below); the rest sit under
# ``if TYPE_CHECKING:`` for type checkers and never run, so they are not edges.
FACE = ""


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_down_the_pipeline(module: str) -> None:
    rank = RANK[_unit(module)]
    for target in _imports(MODULES[module], runtime_only=module == FACE):
        if _unit(target) == _unit(module):
            continue
        assert RANK[_unit(target)] <= rank, (
            f"{module} (layer {rank}) imports {target} (layer {RANK[_unit(target)]})"
        )


def test_the_face_imports_its_names_lazily() -> None:
    """``import deep_compression`` runs no stage's import (torch stays out; the decoder
    needs numpy alone): at run time the face imports only the errors."""
    assert _imports(MODULES[FACE], runtime_only=True) == ["errors"]


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


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(module: str, path: Path) -> set[tuple[str, str, str]]:
    """``(module, defining module, name)`` for every private name ``module`` takes from
    another ``deep_compression`` module: ``from deep_compression.x import _y``, and
    ``x._y`` on a module it imported as ``x``. (A private *module* such as ``cli._common``
    is its package's own business: what counts is the name taken from it.)"""
    tree = ast.parse(path.read_text())
    found = set()
    aliases: dict[str, str] = {}  # local name -> imported deep_compression module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (
                node.module == "deep_compression" or node.module.startswith("deep_compression.")
            ):
                source = node.module.removeprefix("deep_compression").removeprefix(".")
            else:
                continue
            for a in node.names:
                full = f"{source}.{a.name}" if source else a.name
                if full in MODULES:
                    aliases[a.asname or a.name] = full
                if _is_private(a.name) and full not in MODULES and source != module:
                    found.add((module, source, a.name))
        elif isinstance(node, ast.Import):
            for a in node.names:
                rel = a.name.removeprefix("deep_compression").removeprefix(".")
                if a.asname and a.name.startswith("deep_compression") and rel in MODULES:
                    aliases[a.asname] = rel
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _is_private(node.attr)
            and aliases[node.value.id] != module
        ):
            found.add((module, aliases[node.value.id], node.attr))
    return found


def test_no_private_names_across_modules() -> None:
    """A ``_name`` is its module's own: a helper another module needs is public (with a
    docstring) or lives where it is used."""
    found = sorted(set().union(*(_private_uses(m, p) for m, p in MODULES.items())))
    assert not found, "private names imported across modules: " + ", ".join(
        f"{m} imports {name} from {src}" for m, src, name in found
    )


def test_the_private_name_check_sees_what_it_should(tmp_path: Path) -> None:
    """The check above on made-up modules: it must flag these and only these."""
    path = tmp_path / "mod.py"
    path.write_text(
        "from deep_compression.quantize.rdq_ecsq import _grid, rd_quantize\n"
        "from deep_compression import __version__\n"
        "from deep_compression.quantize import rdq_lloyd as lloyd\n"
        "from . import _sibling_helper\n"
        "import numpy as np\n"
        "x = lloyd._lengths, lloyd.lower_envelope, np._NoValue\n"
    )
    assert _private_uses("train.mod", path) == {
        ("train.mod", "quantize.rdq_ecsq", "_grid"),
        ("train.mod", "quantize.rdq_lloyd", "_lengths"),
        ("train.mod", "train", "_sibling_helper"),
    }
