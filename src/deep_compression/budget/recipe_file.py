"""What the budget search leaves besides the run's files: how it chose its recipe (the
header of ``recipe.toml``, which the pipeline writes) and every candidate it measured
(``search.json``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deep_compression import __version__
from deep_compression.budget.config import BudgetConfig, Trial
from deep_compression.fileio import write_json
from deep_compression.phases import pct
from deep_compression.recipe import Recipe

__all__ = ["recipe_header", "write_search"]


def recipe_header(
    recipe: Recipe,
    config: BudgetConfig,
    found: Mapping[str, float],
    *,
    checkpoint: Path | None,
    path: str = "recipe.toml",
) -> list[str]:
    """The comment lines heading the chosen recipe: the budget, the split it decided on
    and what the search found (``found``: ``dense_val_error``, ``kept_fraction``,
    ``pruned_val_error``, ``quantized_val_error``, fractions)."""
    dense = found["dense_val_error"]
    return [
        f"# Chosen by deep-compression {__version__} (compress --max-error-increase "
        f"{config.max_error_increase}) for",
        f"# {checkpoint}",
        f"# deciding on validation = {recipe.validation.to_dict()} (each candidate paired "
        f"with the dense model, {100 * config.confidence:g}% confidence):",
        f"#   dense      validation error {pct(dense)}, limit "
        f"{pct(dense + config.max_error_increase / 100)}",
        f"#   pruned     {pct(found['kept_fraction'])} of the weights kept, validation "
        f"error {pct(found['pruned_val_error'])}",
        f"#   quantized  validation error {pct(found['quantized_val_error'])}",
        "# Repeat the run exactly (same checkpoint, same files byte for byte):",
        f"#   deep-compression compress --recipe {path} {checkpoint}",
    ]


def write_search(
    path: str | os.PathLike[str],
    config: BudgetConfig,
    limit: float,
    found: Mapping[str, Any],
    trials: list[Trial],
    seconds: float,
) -> Path:
    """``search.json``: the settings, the limit, what was found and every trial."""
    doc = {
        "tool_version": __version__,
        "config": config.to_dict(),
        "limit_val_error": limit,
        "found": dict(found),
        "trials": [t.to_dict() for t in trials],
        "seconds": round(seconds, 1),
    }
    write_json(path, doc)
    return Path(path)
