"""What the budget search leaves besides the run's files: the schedule it chose as a recipe
TOML (to repeat the run, or to edit it), and every candidate it measured (``search.json``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from deep_compression import __version__
from deep_compression.budget.config import BudgetConfig, Trial
from deep_compression.fileio import atomic_write, write_json
from deep_compression.recipe import Recipe

__all__ = ["write_commented_toml", "write_recipe", "write_search"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def write_recipe(
    path: str | os.PathLike[str],
    recipe: Recipe,
    config: BudgetConfig,
    records: Mapping[str, Mapping[str, Any]],
    *,
    checkpoint: Path,
) -> Path:
    """Write ``recipe`` as TOML with a header saying how it was chosen; it loads back
    with :func:`~deep_compression.recipe.load_recipe` to the same recipe."""
    dense, pruned, quantized = records["dense"], records["pruned"], records["quantized"]
    header = [
        f"# Chosen by deep-compression {__version__} (compress --max-error-increase "
        f"{config.max_error_increase}) for",
        f"# {checkpoint}",
        f"# deciding on validation = {recipe.validation.to_dict()} (each candidate paired "
        f"with the dense model, {100 * config.confidence:g}% confidence):",
        f"#   dense      validation error {_pct(dense['val_error'])}, limit "
        f"{_pct(dense['val_error'] + config.max_error_increase / 100)}",
        f"#   pruned     {_pct(pruned['kept_fraction'])} of the weights kept, validation "
        f"error {_pct(pruned['val_error'])}",
        f"#   quantized  validation error {_pct(quantized['val_error'])}",
        "# Repeat the run exactly (same checkpoint, same files byte for byte):",
        f"#   deep-compression compress --recipe {path} {checkpoint}",
    ]
    return write_commented_toml(path, header, recipe.to_dict())


def write_commented_toml(
    path: str | os.PathLike[str], header: list[str], table: Mapping[str, Any]
) -> Path:
    """Write ``table`` as TOML (``None`` entries dropped) after the ``header`` comment
    lines, atomically."""
    text = "\n".join(header) + "\n\n" + tomli_w.dumps(_toml_ready(table))
    atomic_write(path, text.encode())
    return Path(path)


def _toml_ready(value: Any) -> Any:
    """``value`` without ``None`` entries (TOML has no null) and with tuples as lists."""
    if isinstance(value, Mapping):
        return {str(k): _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_toml_ready(v) for v in value]
    return value


def write_search(
    path: str | os.PathLike[str],
    config: BudgetConfig,
    limit: float,
    records: Mapping[str, Mapping[str, Any]],
    trials: list[Trial],
    seconds: float,
) -> Path:
    """``search.json``: the settings, the limit, each phase's record and every trial."""
    doc = {
        "tool_version": __version__,
        "config": config.to_dict(),
        "limit_val_error": limit,
        "phases": {k: dict(v) for k, v in records.items()},
        "trials": [t.to_dict() for t in trials],
        "seconds": round(seconds, 1),
    }
    write_json(path, doc)
    return Path(path)
