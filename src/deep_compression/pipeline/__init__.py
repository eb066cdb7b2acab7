"""The whole pipeline, driven by one recipe (:mod:`deep_compression.recipe`):
dense -> [shrink] -> [plan] -> prune -> quantize -> encode -> report.

:func:`compress` is the one driver of every way to compress: a recipe, a search to an
accuracy budget with retraining, and a search without retraining. A search is a
*planner* (:mod:`.plan`): it chooses the recipe (``recipe.toml``, every candidate in
``search.json``), and the same loop runs it. Each phase writes one file into the run
directory (``dense.safetensors``, ``shrunk.safetensors`` with a ``[shrink]`` table,
``pruned.safetensors``, ``quantized.safetensors``, ``model.dcz`` with its stage files
``stage-p.dcz`` and ``stage-pq.dcz``) and records in ``pipeline.json`` a digest of
everything it depends on. Run again on the same directory, finished phases whose digest
still matches are reused (so changing ``[encode]`` re-encodes without re-pruning, and a
finished search is not searched again); the pruning phase also resumes after its last
finished round. Every run ends with the same typed report (``report.json``,
``report.md``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deep_compression import distributed as dist
from deep_compression.data import Data
from deep_compression.dcz import open_dcz
from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write, write_json
from deep_compression.models import make_model
from deep_compression.phases import Log, PhaseContext
from deep_compression.pipeline.plan import Given, Plan, Planner, load_plan, write_plan
from deep_compression.pipeline.run import Run
from deep_compression.pipeline.source import base_meta, describe_source, open_state, split_data
from deep_compression.pipeline.state import (
    PHASES,
    STAGE_FILES,
    RunState,
    phase_digests,
    plan_digest,
)
from deep_compression.pipeline.steps import (
    dense_step,
    encode_step,
    prune_step,
    quantize_step,
    shrink_step,
)
from deep_compression.progress import log as default_log
from deep_compression.recipe import NoRetrainRecipe, Recipe, digest, load_recipe
from deep_compression.records import RunReport, SearchSummary
from deep_compression.report.markdown import report_markdown
from deep_compression.report.run import build_report

__all__ = [
    "Recipe",
    "NoRetrainRecipe",
    "load_recipe",
    "compress",
    "copy_final",
    "phase_digests",
    "describe_source",
    "base_meta",
    "split_data",
    "Given",
    "Plan",
    "Planner",
    "Run",
    "PHASES",
    "STAGE_FILES",
]


def compress(
    recipe: Recipe | NoRetrainRecipe,
    run_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    planner: Planner | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    restart: bool = False,
    force: bool = False,
    allow_code: bool = False,
    progress: bool = True,
    log: Log = default_log,
) -> RunReport:
    """Run ``recipe`` from a dense checkpoint (or from scratch) to a ``.dcz`` file.

    Args:
        recipe: the recipe (:class:`Recipe`, or a :class:`NoRetrainRecipe`: no training
            step); with a ``planner``, where its search starts (model, dataset, split,
            seed and the settings it does not search).
        run_dir: directory for every phase's output; resumed if it holds finished phases
            of the same recipe (and search) and starting point.
        checkpoint: dense starting checkpoint; ``None`` trains one with ``recipe.train``.
        planner: a search that chooses the recipe to run after the dense phase
            (:class:`~.plan.Planner`).
        data_dir: where the dataset is (see :mod:`deep_compression.data`).
        restart: discard the run state in ``run_dir`` and start over.
        force: ``run_dir`` may hold a run of another recipe or checkpoint: reuse the
            phases that still match and redo the rest (replacing their files).
        allow_code: the recipe's model or dataset may be the user's own Python code
            (``net.py:name``), imported and so run.
        progress: progress bars (or log lines) through training phases.
        log: where progress lines go.

    Returns:
        The report (also written as ``report.json`` / ``report.md`` in ``run_dir``).

    Raises:
        ConfigError: checkpoint and recipe disagree, a recipe key matches no layer, or
            ``run_dir`` holds another run and neither ``force`` nor ``restart`` is given;
            all checked before any work.
    """
    run, state, source, data = _start(
        recipe,
        Path(run_dir),
        checkpoint,
        planner,
        data_dir=data_dir,
        restart=restart,
        force=force,
        allow_code=allow_code,
        progress=progress,
        log=log,
    )
    recipe = run.recipe
    run_dir = run.run_dir
    _run_phase(run, state, "dense", lambda: dense_step(run))
    if isinstance(recipe, Recipe) and recipe.shrink is not None:
        _run_phase(run, state, "shrunk", lambda: shrink_step(run))
    summary = None
    if planner is not None:
        run.recipe, summary = _plan(run, state, planner)
        run.digests = phase_digests(run.recipe, source)
    write_json(run_dir / "recipe.json", run.recipe.to_dict())
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        **({"pruned": lambda: prune_step(run)} if isinstance(run.recipe, Recipe) else {}),
        "quantized": lambda: quantize_step(run),
        "encoded": lambda: encode_step(run, _confidence(run.recipe, summary)),
    }
    for phase, step in steps.items():
        _run_phase(run, state, phase, step)
    final = run.final if run.final is not None else open_dcz(run_dir / STAGE_FILES["P+Q+H"])
    val = data.val is not None
    splits = recipe.validation.describe(len(data.val), len(data.test)) if val else ""
    report = build_report(final, state.phases, run.recipe, splits, summary)
    write_json(run_dir / "report.json", report.to_dict())
    atomic_write(run_dir / "report.md", report_markdown(report))
    return report


def _start(
    recipe: Recipe | NoRetrainRecipe,
    run_dir: Path,
    checkpoint: str | os.PathLike[str] | None,
    planner: Planner | None,
    *,
    data_dir: str | os.PathLike[str] | None,
    restart: bool,
    force: bool,
    allow_code: bool,
    progress: bool,
    log: Log,
) -> tuple[Run, RunState, str, Data]:
    """Everything checked before any work (starting point, recipe, split, run state),
    and the :class:`Run` the steps share; the run directory made."""
    ckpt = Path(checkpoint) if checkpoint is not None else None
    source, ckpt_meta = describe_source(recipe, ckpt)
    if planner is not None and ckpt is None:
        raise ConfigError("a search starts from a dense CHECKPOINT")
    if isinstance(recipe, Recipe):
        recipe.check_layers(make_model(recipe.model, recipe.model_args, allow_code=allow_code))
    data, recipe = split_data(
        recipe,
        ckpt_meta,
        from_checkpoint=ckpt is not None,
        data_dir=data_dir,
        allow_code=allow_code,
        log=log,
    )
    searched = [planner.kind, dict(planner.settings())] if planner is not None else []
    state = open_state(run_dir, restart, force, digest(source, recipe.digest(), *searched))
    val = data.val is not None
    ctx = PhaseContext(
        data.train,
        data.val if data.val is not None else data.test,
        data.test if val else None,
        seed=recipe.seed,
        progress=progress,
        log=log,
    )
    run = Run(
        recipe,
        run_dir,
        ctx,
        base_meta(recipe, ckpt_meta, data.info.preprocessing),
        phase_digests(recipe, source),
        allow_code=allow_code,
        checkpoint=ckpt,
        paired=planner is not None or isinstance(recipe, NoRetrainRecipe),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run, state, source, data


def _confidence(recipe: Recipe | NoRetrainRecipe, search: SearchSummary | None) -> float:
    """The confidence of the final file's paired increase in the report: the search's."""
    if search is not None:
        return search.confidence
    return recipe.no_retrain.confidence if isinstance(recipe, NoRetrainRecipe) else 0.9


def _run_phase(run: Run, state: RunState, phase: str, step: Callable[[], dict[str, Any]]) -> None:
    """Run ``step`` unless ``state`` holds ``phase`` done with the same digest."""
    done = state.done(phase, run.digests[phase])
    dist.check_same_value(json.dumps([phase, done]), "resume")  # every rank resumes alike
    if done:
        run.ctx.log(f"[{phase}] reused from an earlier run in {run.run_dir}")
        return
    state.record(phase, run.digests[phase], step())


def _plan(
    run: Run, state: RunState, planner: Planner
) -> tuple[Recipe | NoRetrainRecipe, SearchSummary]:
    """The recipe ``planner`` chooses (its ``plan`` phase: ``recipe.toml`` and
    ``search.json``), or the one a finished search of the same settings left."""
    # The search depends on the dense model, its own settings and the starting recipe.
    settings = {**planner.settings(), "recipe": run.recipe.digest()}
    key = plan_digest(run.digests["dense"], planner.kind, settings)
    done = state.done("plan", key)
    dist.check_same_value(json.dumps(["plan", done]), "resume")
    if done:
        run.ctx.log(f"[plan] reused the search of an earlier run: {run.run_dir / 'recipe.toml'}")
        recipe = load_plan(run.run_dir, type(run.recipe))
        return recipe, SearchSummary.from_dict(state.phases["plan"]["search"])
    t0 = time.perf_counter()
    dense, _ = run.load(run.file("dense"))
    plan = planner.plan(run, dense)
    del dense
    write_plan(run.run_dir, plan)
    run.given = dict(plan.given)
    record = {
        "files": ["recipe.toml", "search.json"],
        "search": plan.summary.to_dict(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    state.record("plan", key, record)
    return plan.recipe, plan.summary


def copy_final(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Copy the run's final ``.dcz`` to ``out`` (e.g. ``models/lenet-5.dcz``), with its
    report next to it (``lenet-5.report.json`` and ``lenet-5.report.md``), so a shipped
    file travels with the measurements that describe it. Each copy is atomic."""
    out = Path(out)
    for src, dst in [
        (Path(run_dir) / STAGE_FILES["P+Q+H"], out),
        (Path(run_dir) / "report.json", out.with_name(f"{out.stem}.report.json")),
        (Path(run_dir) / "report.md", out.with_name(f"{out.stem}.report.md")),
    ]:
        if src.is_file():
            atomic_write(dst, src.read_bytes())
    return out
