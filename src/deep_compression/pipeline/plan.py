"""Searches as planners: a search (to an accuracy budget, with or without retraining)
chooses a recipe, and :func:`~deep_compression.pipeline.compress` runs it like any other.

A :class:`Planner` evaluates its candidates on the run's data and dense model, keeps its
own record of them (``search.json``) and returns a :class:`Plan`: the recipe it chose
(written as ``recipe.toml``, which replays the run byte for byte), a summary for the
report, and the models it already made for the chosen recipe, so that the pipeline saves
them instead of computing them again. The pipeline records the plan as a phase of the
run: run again, a finished search is reused from ``recipe.toml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import tomli_w
from torch import nn

from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write
from deep_compression.pipeline.run import Given, Run
from deep_compression.recipe import NoRetrainRecipe, Recipe, load_any_recipe
from deep_compression.records import SearchSummary

__all__ = ["Given", "Plan", "Planner", "load_plan", "write_commented_toml", "write_plan"]

PLAN_FILE = "recipe.toml"


@dataclass(frozen=True)
class Plan:
    """What a :class:`Planner` chose.

    Attributes:
        recipe: the recipe to run (``recipe.toml``).
        summary: the search in a few numbers, for the report.
        header: comment lines heading ``recipe.toml`` (how it was chosen).
        given: per phase (``"pruned"``, ``"quantized"``), the model already made.
    """

    recipe: Recipe | NoRetrainRecipe
    summary: SearchSummary
    header: Sequence[str] = ()
    given: Mapping[str, Given] = field(default_factory=dict)


class Planner(Protocol):
    """A search that chooses the recipe of a run (see the module docs)."""

    kind: str  # "budget" or "no-retrain"

    def settings(self) -> Mapping[str, Any]:
        """What the search depends on besides the checkpoint and the starting recipe:
        its digest decides whether a finished search is reused."""
        ...

    def plan(self, run: Run, dense: nn.Module) -> Plan:
        """Search on ``run``'s data from ``dense`` (left unchanged); write the
        candidates to ``run.run_dir / "search.json"``."""
        ...


def write_commented_toml(
    path: str | os.PathLike[str], header: Sequence[str], table: Mapping[str, Any]
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


def write_plan(run_dir: Path, plan: Plan) -> Path:
    """``recipe.toml`` in ``run_dir``: the plan's recipe under its header. It loads back
    (:func:`load_plan`) to the same recipe."""
    return write_commented_toml(run_dir / PLAN_FILE, plan.header, plan.recipe.to_dict())


def load_plan(
    run_dir: Path, kind: type[Recipe] | type[NoRetrainRecipe]
) -> Recipe | NoRetrainRecipe:
    """The recipe a finished search left in ``run_dir`` (a ``kind``).

    Raises:
        ConfigError: it is missing, invalid or of another kind.
    """
    recipe = load_any_recipe(run_dir / PLAN_FILE)
    if not isinstance(recipe, kind):
        raise ConfigError(f"{run_dir / PLAN_FILE}: not the recipe of this search; use --restart")
    return recipe
