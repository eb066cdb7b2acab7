"""Pruning to a validation-error limit: per-layer sensitivity sets how hard each layer is
pruned relative to the others, gradual rounds with retraining go as far as the limit
allows, and a round that breaks it is undone and retried with a smaller step.

Layer ``l`` keeps ``s ** a_l`` of its weights, where ``s`` (the kept fraction of the
largest layer) shrinks by ``step`` every round. The exponent is a size prior,
``a_l = (log n_l / log n_max) ** 2`` for a layer of ``n_l`` weights, halved for a layer the
sensitivity scan finds fragile (pruning it alone to half its weights, without retraining,
already costs more than ``delta`` points of validation error). Big layers are both where the
bytes are and the most redundant: on LeNet-300-100 the prior gives fc1 : fc2 : fc3 =
1 : 0.69 : 0.31 in log-kept terms, the hand-tuned recipe 1 : 0.77 : 0.38; on LeNet-5
conv1 : conv2 : fc1 : fc2 = 0.23 : 0.62 : 1 : 0.44, hand-tuned 0.16 : 0.60 : 1 : 0.55. The
one-shot scan alone is a poor guide to what retraining recovers (it ranks LeNet-300-100's
fc1 as the most fragile layer, and retraining prunes it hardest), so it only flags
outliers such as a final classifier or a depthwise convolution.

Each round is a round of :func:`~deep_compression.prune.run_schedule` on the schedule of
the rounds accepted so far plus the candidate (``start`` = rounds accepted, ``reference`` =
the dense model), so replaying the accepted schedule gives the same model bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from torch import nn
from torch.utils.data import Dataset

from deep_compression.budget.config import BudgetConfig, Clock, Trial
from deep_compression.phases import PhaseContext
from deep_compression.prune import (
    KeepFraction,
    NoPruning,
    PruneRound,
    PruneSchedule,
    RoundResult,
    prunable_layers,
    prune_,
    run_schedule,
)
from deep_compression.selection import Verdict
from deep_compression.train import TrainConfig, evaluate

__all__ = ["SENSITIVITY_KEEP", "layer_exponents", "PruneSearch", "search_pruning"]

# The sensitivity check: each layer pruned alone to half its weights, no retraining.
SENSITIVITY_KEEP = 0.5
MIN_EXPONENT = 0.1  # every layer is pruned at least a little as the others go down
MIN_KEEP = 0.002  # no layer keeps less than 0.2% of its weights

Judge = Callable[[nn.Module], Verdict]


def describe(verdict: Verdict) -> str:
    """``+0.42 points, bound +0.80: within`` for a log line."""
    est = verdict.estimate
    word = "within" if verdict.accepted else "over" if verdict.broken else "not clearly within"
    return f"{est.increase:+.2f} points, bound {est.high:+.2f} on {est.n:,} images: {word}"


def _error(model: nn.Module, data: Dataset) -> float:
    return 1.0 - evaluate(model, data)[1]


def layer_exponents(
    model: nn.Module,
    val: Dataset,
    delta: float,
    trials: list[Trial],
    clock: Clock,
    *,
    max_seconds: float = math.inf,
) -> dict[str, float]:
    """``{layer: a_l}``: the size prior, halved for layers that pruning alone to
    :data:`SENSITIVITY_KEEP` of their weights (magnitude, no retraining) costs more than
    ``delta`` of validation error (see the module docs). One evaluation per layer.

    Args:
        model: the dense model (left unchanged).
        val: the validation split.
        delta: the error increase (a fraction, 0.01 = 1 point) a layer may cause alone.
        trials: every measurement is appended here.
        clock: for the trial times.
        max_seconds: the scan stops when it has taken this long (the layers not reached
            keep the prior: a time budget must not go to the scan).
    """
    t0 = clock.elapsed()
    base = _error(model, val)
    layers = prunable_layers(model)
    fragile = set()
    for name in layers:
        if clock.elapsed() - t0 > max_seconds or len(layers) == 1:
            break
        trial = copy.deepcopy(model)
        prune_(trial, {"*": NoPruning(), name: KeepFraction(SENSITIVITY_KEEP)})
        err = _error(trial, val)
        ok = err - base <= delta
        params = {"layer": name, "keep": SENSITIVITY_KEEP}
        trials.append(Trial("sensitivity", params, err, ok, clock.elapsed()))
        if not ok:
            fragile.add(name)
    sizes = {name: max(2, layer.weight.numel()) for name, layer in layers.items()}
    n_max = max(sizes.values())
    return {
        name: max(MIN_EXPONENT, (math.log(n) / math.log(n_max)) ** 2)
        * (0.5 if name in fragile else 1.0)
        for name, n in sizes.items()
    }


def _round(exponents: Mapping[str, float], s: float, epochs: int | None = None) -> PruneRound:
    keeps = {n: float(f"{max(MIN_KEEP, s**a):.4g}") for n, a in exponents.items()}
    criteria = {"*": NoPruning(), **{n: KeepFraction(k) for n, k in keeps.items()}}
    return PruneRound(criteria, {} if epochs is None else {"epochs": epochs})


@dataclass
class PruneSearch:
    """What :func:`search_pruning` chose: the schedule (accepted rounds, then the polish
    round), the model it leaves, and each round's result."""

    schedule: PruneSchedule
    model: nn.Module
    results: list[RoundResult]
    val_error: float


def _try_round(
    state: nn.Module, dense: nn.Module, schedule: PruneSchedule, ctx: PhaseContext
) -> tuple[nn.Module, RoundResult]:
    """The last round of ``schedule`` on a copy of ``state`` (the state after the rounds
    before it), retrained on ``ctx.train`` and measured on ``ctx.eval``."""
    trial = copy.deepcopy(state)
    n = len(schedule.rounds)
    [result] = run_schedule(
        trial,
        schedule,
        ctx.training,
        ctx.eval,
        progress=ctx.progress,
        start=n - 1,
        reference=dense,
    )
    return trial, result


def search_pruning(
    model: nn.Module,
    ctx: PhaseContext,
    judge: Judge,
    exponents: Mapping[str, float],
    retrain: TrainConfig,
    config: BudgetConfig,
    clock: Clock,
    trials: list[Trial],
    *,
    reserve: Callable[[float], float],
) -> PruneSearch:
    """Prune ``model`` (dense, unchanged) in rounds while ``judge`` finds the model after
    retraining within the budget.

    Args:
        ctx: retraining on ``ctx.train``, errors on ``ctx.eval`` (the validation split),
            progress and log lines.
        judge: ``model -> Verdict`` (a :class:`~deep_compression.selection.PairedJudge`
            holding the dense model's errors on ``val``).
        retrain: every round's retraining (``epochs`` = ``config.round_epochs``).
        reserve: seconds to keep for what follows, given the seconds of one epoch.
    """
    base = PruneSchedule(rounds=(_round(exponents, 1.0),), retrain=retrain)
    log = ctx.log
    accepted: list[PruneRound] = []
    results: list[RoundResult] = []
    state, error = model, _error(model, ctx.eval)
    s_done, step, s = 1.0, config.step, config.first_keep
    epoch_s = 0.0
    while len(accepted) < config.max_rounds:
        cost = epoch_s * (retrain.epochs + 0.5)
        if epoch_s and not clock.affords(cost + reserve(epoch_s)):
            log(f"[budget] stopping pruning: {clock.left():.0f} s left of the time budget")
            break
        candidate = _round(exponents, s)
        schedule = replace(base, rounds=(*accepted, candidate))
        trial, result = _try_round(state, model, schedule, ctx)
        epoch_s = result.seconds / max(1, retrain.epochs + 0.5)
        err = 1.0 - result.accuracy_retrained
        verdict = judge(trial)
        ok = verdict.accepted
        keeps = result.report.kept_fractions()
        params = {"s": s, "kept": keeps}
        trials.append(Trial("prune", params, err, ok, clock.elapsed(), verdict.to_dict()))
        kept = 100 * result.report.kept_fraction
        log(
            f"[budget] round {len(accepted) + 1}: kept {kept:.2f}% -> validation error "
            f"{100 * err:.2f}% ({describe(verdict)})"
        )
        if ok:
            accepted.append(candidate)
            results.append(result)
            state, error, s_done = trial, err, s
            s = s * step
            continue
        step = math.sqrt(step)  # back off: a smaller step from the last accepted state
        if step > config.min_step:
            break
        s = s_done * step
    if not accepted:  # not even the first round fits: keep every weight
        none = PruneRound({"*": NoPruning()}, {"epochs": 0})
        return PruneSearch(replace(base, rounds=(none,)), copy.deepcopy(model), [], error)
    found = PruneSearch(replace(base, rounds=tuple(accepted)), state, results, error)
    return _polish(found, model, ctx, config, trials, clock)


def _polish(
    found: PruneSearch,
    dense: nn.Module,
    ctx: PhaseContext,
    config: BudgetConfig,
    trials: list[Trial],
    clock: Clock,
) -> PruneSearch:
    """Retrain longer at the chosen sparsity (the last round again, which prunes nothing
    more): the extra accuracy is margin for quantization. ``found``: the rounds accepted
    (its schedule) and the state they left."""
    accepted = found.schedule.rounds
    if config.polish_epochs == 0:
        return found
    polish = PruneRound(accepted[-1].criteria, {"epochs": config.polish_epochs})
    schedule = replace(found.schedule, rounds=(*accepted, polish))
    trial, result = _try_round(found.model, dense, schedule, ctx)
    err = 1.0 - result.accuracy_retrained
    trials.append(Trial("polish", {"epochs": config.polish_epochs}, err, True, clock.elapsed()))
    ctx.log(f"[budget] {config.polish_epochs} more epochs at that sparsity: {100 * err:.2f}%")
    return PruneSearch(schedule, trial, [*found.results, result], err)
