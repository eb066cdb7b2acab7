"""Bit widths to a validation-error limit: trained quantization (k-means, centroid
fine-tuning, float16 codebooks) with uniform widths first, then each layer lowered one bit
at a time, largest layer first, while the validation error stays within the limit.

Every candidate is a full :func:`~deep_compression.phases.quantize_phase` on a copy of the
pruned model, so the chosen candidate *is* what replaying its config gives.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from deep_compression.budget.config import BudgetConfig, Clock, Trial
from deep_compression.budget.prune_search import Judge, describe
from deep_compression.phases import PhaseContext, QuantizeOutcome, quantize_phase
from deep_compression.prune import prunable_layers, sparsity_report
from deep_compression.quantize import QuantizeConfig
from deep_compression.train import TrainConfig

__all__ = ["BitsSearch", "search_bits"]


@dataclass
class BitsSearch:
    """The chosen quantization: its config, the quantized model and what the phase did."""

    config: QuantizeConfig
    model: nn.Module
    outcome: QuantizeOutcome
    within: bool  # False when even the widest candidate broke the limit


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def search_bits(
    pruned: nn.Module,
    ctx: PhaseContext,
    judge: Judge,
    finetune: TrainConfig,
    config: BudgetConfig,
    clock: Clock,
    trials: list[Trial],
) -> BitsSearch:
    """The fewest bits per layer whose quantized ``pruned`` model (unchanged) ``judge``
    finds within the budget.

    Args:
        ctx: fine-tuning on ``ctx.train``, errors on ``ctx.eval`` (the validation
            split); its log gets one line per candidate.
        judge: ``model -> Verdict`` (see :func:`~.prune_search.search_pruning`).
        finetune: centroid fine-tuning of every candidate.
    """
    layers = prunable_layers(pruned)
    kept = {r.name: r.kept for r in sparsity_report(pruned).layers}
    # BatchNorm statistics are measured again on the quantized network (100 batches).
    bn = 100 if _has_batchnorm(pruned) else 0
    last_s = 0.0  # seconds of the latest candidate: the next one must fit in the time left
    quiet, log = ctx.quiet(), ctx.log

    def attempt(bits: Mapping[str, int], stage: str) -> tuple[float, BitsSearch]:
        nonlocal last_s
        t0 = clock.elapsed()
        qc = QuantizeConfig(bits=dict(bits), finetune=finetune, float16=True, bn_batches=bn)
        model = copy.deepcopy(pruned)
        outcome = quantize_phase(model, qc, quiet)
        err = outcome.test_error
        verdict = judge(model)
        ok = verdict.accepted
        params = {"bits": dict(bits)}
        trials.append(Trial(stage, params, err, ok, clock.elapsed(), verdict.to_dict()))
        last_s = clock.elapsed() - t0
        shown = ", ".join(f"{n} {b}" for n, b in bits.items())
        log(f"[budget] bits {shown}: validation error {100 * err:.2f}% ({describe(verdict)})")
        return err, BitsSearch(qc, model, outcome, ok)

    best: BitsSearch | None = None
    current: dict[str, int] = {}
    for b in config.bits:
        if best is not None and not clock.affords(last_s):
            break
        cand = {n: b for n in layers}
        _, found = attempt(cand, "bits")
        if not found.within:
            break
        best, current = found, cand
    if best is None:  # even the widest uniform width breaks the limit: take it anyway
        widest = {n: max(config.bits) for n in layers}
        _, best = attempt(widest, "bits")
        log("[budget] no bit width keeps the validation error within the budget")
        return best
    for name in sorted(layers, key=lambda n: -kept.get(n, 0)):
        while current[name] > config.min_bits and clock.affords(last_s):
            cand = {**current, name: current[name] - 1}
            _, found = attempt(cand, "bits")
            if not found.within:
                break
            best, current = found, cand
    return best
