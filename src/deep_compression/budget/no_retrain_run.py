"""Compression with no training step, from the CLI: ``compress CKPT --no-retrain
--max-error-increase P`` or ``compress --recipe NR.toml CKPT`` (a recipe with a
``[no_retrain]`` table, :class:`~deep_compression.recipe.NoRetrainRecipe`).

With a budget, :class:`NoRetrainPlanner` is the run's planner: it searches the
rate-distortion quantizer's ``lam`` (:func:`deep_compression.no_retrain.
compress_without_retraining`) for the smallest file within the budget (no pruning beyond
what quantizing to zero does), on the same validation split as the retraining search,
and chooses a recipe that quantizes once with that setting (``recipe.toml``: it gives the
same file byte for byte). Without a budget the recipe's ``lam`` is applied once. Either
way :func:`~deep_compression.pipeline.compress` runs it, with the same files, state,
resume rules and typed report as any run; the test set is measured once, on the decoded
file, for the report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from deep_compression import __version__
from deep_compression.fileio import write_json
from deep_compression.no_retrain import NoRetrainResult, compress_without_retraining
from deep_compression.no_retrain.config import CALIBRATION_IMAGES, NoRetrainPlan
from deep_compression.no_retrain.search import Trial
from deep_compression.phases import Log, pct
from deep_compression.pipeline import Given, Plan, Run, compress
from deep_compression.pipeline.run import file_metadata_of
from deep_compression.progress import log as default_log
from deep_compression.prune.schedule import calibration_batch
from deep_compression.recipe import NoRetrainRecipe
from deep_compression.records import RunReport, SearchSummary
from deep_compression.selection import PairedJudge

# A bisection of lam stops when its two ends' files differ by less than 1%: each step costs
# a full evaluation (ResNet-44: about a minute on the shared machine), and the last steps
# of 5 moved the file by 0.5% (291,836 -> 290,502 B).
MIN_GAIN = 0.01

__all__ = ["CALIBRATION_IMAGES", "MIN_GAIN", "NoRetrainPlanner", "compress_no_retrain"]


@dataclass
class NoRetrainPlanner:
    """The search over ``lam`` as a planner of :func:`~deep_compression.pipeline.compress`:
    the run's recipe (a :class:`NoRetrainRecipe` with a budget) says the budget, the
    confidence, the calibration images and where the search starts.

    Attributes:
        max_trials: candidates per importance tried, at most (None: the search's
            default).
    """

    max_trials: int | None = None
    kind: str = "no-retrain"

    def settings(self) -> Mapping[str, Any]:
        return {"max_trials": self.max_trials, "min_gain": MIN_GAIN}

    def plan(self, run: Run, dense: nn.Module) -> Plan:
        """Search ``lam`` on ``run``'s validation split from ``dense`` (unchanged)."""
        recipe, ctx = run.recipe, run.ctx
        assert isinstance(recipe, NoRetrainRecipe)
        budget = recipe.no_retrain.max_error_increase
        assert budget is not None, "a search needs a budget"
        t0 = time.perf_counter()
        judge = PairedJudge(
            dense,
            ctx.eval,
            budget,
            recipe.no_retrain.confidence,
            seed=recipe.validation.seed,
            reference_errors=run.dense_reference()["val"],
        )
        result = _search(run, recipe, dense, judge, self.max_trials)
        seconds = time.perf_counter() - t0
        trials = [dict(vars(t)) for t in result.trials]
        write_json(
            run.run_dir / "search.json",
            {"tool_version": __version__, "seconds": round(seconds, 1), "trials": trials},
        )
        plan = NoRetrainPlan(result.config, None, recipe.no_retrain.calibration, True)
        chosen = replace(recipe, no_retrain=plan)
        config = result.config
        summary = SearchSummary(
            self.kind,
            budget,
            recipe.no_retrain.confidence,
            len(result.trials),
            round(seconds, 1),
            f"importance {config.importance}, lam {config.lam:.4g}, "
            f"{plan.calibration} calibration images",
        )
        header = _header(run, budget, judge.reference_error / 100, result)
        return Plan(chosen, summary, header, {"quantized": Given(result.model, result.report)})


def _search(
    run: Run, recipe: NoRetrainRecipe, dense: nn.Module, judge: PairedJudge, max_trials: int | None
) -> NoRetrainResult:
    """Every candidate judged against the dense model on the same images, each sized as
    the final file will be written (its coding and metadata)."""
    plan, ctx = recipe.no_retrain, run.ctx
    budget = plan.max_error_increase
    ctx.log(
        f"[no-retrain] dense validation error {judge.reference_error:.2f}% on "
        f"{judge.images:,} images; a candidate is kept when its increase is within "
        f"{budget} points with {100 * plan.confidence:g}% confidence "
        "(paired with the dense model, image by image)"
    )

    def progress(t: Trial) -> None:
        word = "within" if t.accepted else "over" if t.broken else "not clearly within"
        ctx.log(
            f"[no-retrain] {t.importance:<11} lam {t.lam:<9.3g} {t.file_bytes:>9,} B  "
            f"{t.increase:+.2f} points (bound {t.high:+.2f}) on {t.images:,} images: {word}"
        )

    calibration = None
    if plan.calibration:
        calibration = calibration_batch(ctx.training, plan.calibration, recipe.seed)
    # The file's metadata, given to the search too so that its sizes are the file's.
    file_meta = file_metadata_of(recipe, run.base, run.base).to_dict()
    result = compress_without_retraining(
        dense,
        lambda m: judge(m).error,
        budget if budget is not None else 0.0,
        config=plan.config,
        calibration=calibration,
        coder=recipe.encode.coder,
        gap_bits=dict(recipe.encode.gap_bits),
        metadata=file_meta,
        lam_start=plan.config.lam if plan.lam_given else None,
        progress=progress,
        dense_error=judge.reference_error,
        judge=judge,
        min_gain=MIN_GAIN,
        **({"max_trials": max_trials} if max_trials is not None else {}),
    )
    measured = [(t.images, t.increase, t.high) for t in result.trials if t.high is not None]
    judge.warn_if_underpowered(measured, ctx.log)
    return result


def _header(run: Run, budget: float, dense_error: float, result: NoRetrainResult) -> list[str]:
    """The comment lines heading the chosen recipe."""
    path = run.run_dir / "recipe.toml"
    splits = run.splits()
    decisions = run.recipe.validation.describe(len(splits["val"]), len(splits["test"]))
    return [
        f"# Chosen by deep-compression {__version__} (compress --no-retrain "
        f"--max-error-increase {budget}) for",
        f"# {run.checkpoint}",
        f"#   dense      validation error {pct(dense_error)}",
        f"#   model.dcz  {result.file_bytes:,} bytes, validation error "
        f"{pct(result.val_error / 100)}",
        f"#   {decisions}",
        "# Repeat the run exactly (same checkpoint, same file byte for byte):",
        f"#   deep-compression compress --recipe {path} {run.checkpoint}",
    ]


def compress_no_retrain(
    recipe: NoRetrainRecipe,
    checkpoint: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    restart: bool = False,
    allow_code: bool = False,
    log: Log = default_log,
    max_trials: int | None = None,
) -> RunReport:
    """Run ``recipe`` from ``checkpoint`` into ``run_dir``: with a budget
    (``recipe.no_retrain.max_error_increase``) through :class:`NoRetrainPlanner`'s search
    (``recipe.toml``, ``search.json``), else quantizing once with its ``lam``.

    Args:
        recipe: model, dataset, validation split, the ``[no_retrain]`` plan (a budget
            ``max_error_increase`` in points of validation error, or a fixed ``lam``;
            ``calibration`` training images, 0 for none) and the ``[encode]`` settings.
        checkpoint: the trained model.
        max_trials: candidates per importance the search tries, at most.

    Returns:
        The report (``report.json``'s content).
    """
    searched = recipe.no_retrain.max_error_increase is not None
    return compress(
        recipe,
        run_dir,
        checkpoint=checkpoint,
        planner=NoRetrainPlanner(max_trials) if searched else None,
        data_dir=data_dir,
        restart=restart,
        force=force,
        allow_code=allow_code,
        log=log,
    )
