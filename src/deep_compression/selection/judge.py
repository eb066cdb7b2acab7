"""Deciding whether a candidate keeps a budget: the candidate and the reference model are
compared on the same held-out images (:mod:`.paired`), in a fixed seeded order, a growing
prefix at a time, and the comparison stops as soon as the answer is clear.

Looks: after ``1/8``, ``1/4``, ``1/2`` and all of the images. At an interim look the
candidate is accepted when the budget holds, or rejected when it is broken, at the stricter
``interim`` confidence (default ``1 - (1 - confidence) / 4``: 97.5% for 90%), so that stopping
early rarely changes an answer; at the last look the user's ``confidence`` decides. Far
candidates (most of a search's) cost an eighth of an evaluation.

The images are decoded and normalised once, into memory
(:func:`~deep_compression.data.in_memory`), so that no candidate reads an image file again;
each candidate runs through :func:`~deep_compression.train.predict`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from deep_compression.data import in_memory
from deep_compression.errors import ConfigError
from deep_compression.selection.paired import PairedIncrease, paired_increase, z_of
from deep_compression.train import predict

__all__ = ["LOOKS", "PairedJudge", "Verdict", "per_image_errors"]

Log = Callable[[str], None]

LOOKS = (0.125, 0.25, 0.5, 1.0)


def per_image_errors(
    model: nn.Module, data: Dataset, order: Sequence[int] | np.ndarray
) -> np.ndarray:
    """``(len(order),)`` bool: whether ``model`` misclassifies each of the images
    ``order`` names, in that order (eval mode; shared out across ranks)."""
    return ~predict(model, data, indices=np.asarray(order, dtype=np.int64)).correct


@dataclass(frozen=True)
class Verdict:
    """What a :class:`PairedJudge` found for one candidate.

    Attributes:
        estimate: the paired error increase (points) on the images compared.
        accepted: the budget holds with the judge's confidence.
        broken: the budget is broken with that confidence (clearly over it).
        seconds: time taken.
    """

    estimate: PairedIncrease
    accepted: bool
    broken: bool
    seconds: float

    @property
    def error(self) -> float:
        """The candidate's error (%) on the images compared."""
        return self.estimate.candidate

    def to_dict(self) -> dict[str, object]:
        return {
            **self.estimate.to_dict(),
            "accepted": self.accepted,
            "broken": self.broken,
            "seconds": round(self.seconds, 2),
        }


class PairedJudge:
    """Judges candidates against ``reference`` on ``data``, within ``budget`` points of
    error increase, with ``confidence``.

    Args:
        reference: the dense model (evaluated once, here).
        data: the selection images (decoded into memory once when they fit, see
            :func:`~deep_compression.data.in_memory`).
        budget: points of error increase allowed.
        confidence: of the final decision (one-sided).
        seed: of the order in which images are compared (a class-sorted split would
            otherwise show an early look one class only).
        early: stop at interim looks when the answer is clear.
        reference_errors: ``(len(data),)`` bool, whether ``reference`` misclassifies each
            image, in the order of ``data``, if measured already (not evaluated again).
    """

    def __init__(
        self,
        reference: nn.Module,
        data: Dataset,
        budget: float,
        confidence: float = 0.9,
        *,
        seed: int = 0,
        early: bool = True,
        interim: float | None = None,
        reference_errors: np.ndarray | None = None,
    ) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0:
            raise ConfigError(f"budget must be >= 0 points, got {budget!r}")
        z_of(confidence)
        self.interim = interim if interim is not None else 1.0 - (1.0 - confidence) / 4.0
        z_of(self.interim)
        self.data = in_memory(data)
        n = len(self.data)
        if n == 0:
            raise ConfigError("no selection images to judge candidates on")
        self.order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
        self.budget, self.confidence, self.early = float(budget), float(confidence), early
        t0 = time.perf_counter()
        if reference_errors is not None:
            if np.shape(reference_errors) != (n,):
                raise ConfigError(f"reference_errors must have shape ({n},)")
            self.reference = np.asarray(reference_errors, dtype=bool)[self.order]
        else:
            self.reference = per_image_errors(reference, self.data, self.order)
        self.reference_seconds = time.perf_counter() - t0

    @property
    def images(self) -> int:
        return len(self.order)

    @property
    def reference_error(self) -> float:
        """The reference's error (%) on all the selection images."""
        return 100.0 * float(self.reference.mean())

    def __call__(self, model: nn.Module) -> Verdict:
        t0 = time.perf_counter()
        n = self.images
        looks = sorted({max(1, int(round(f * n))) for f in LOOKS} | {n}) if self.early else [n]
        errors = np.empty(0, dtype=bool)
        for k in looks:
            more = per_image_errors(model, self.data, self.order[errors.size : k])
            errors = np.concatenate([errors, more])
            final = k == n
            c = self.confidence if final else self.interim
            est = paired_increase(self.reference[:k], errors, c, scale=100.0)
            if final or est.holds(self.budget) or est.broken(self.budget):
                break
        if not final:  # stopped early: the bounds at the final confidence, for the record
            est = paired_increase(self.reference[:k], errors, self.confidence, scale=100.0)
        # An interim stop decided at the stricter confidence, which implies the final one.
        return Verdict(
            est, est.holds(self.budget), est.broken(self.budget), time.perf_counter() - t0
        )

    def warn_if_underpowered(self, measured: Iterable[tuple[int, float, float]], log: Log) -> bool:
        """Say so (and return True) when these images cannot resolve the budget: every
        candidate compared on all of them had its bound more than half the budget above
        its estimate, so the choice is timid (or, at a budget of 0, decided by noise).

        Args:
            measured: ``(images, increase, high)`` of each candidate judged.
            log: where the warning goes.
        """
        widths = [high - inc for n, inc, high in measured if n == self.images]
        if not widths or min(widths) <= self.budget / 2:
            return False
        log(
            f"[selection] warning: {self.images:,} images cannot resolve a {self.budget:g}-point "
            f"budget (the {100 * self.confidence:g}% bound sat {min(widths):.2f} points above "
            "the estimate at best): the choice is timid; give more validation images "
            "(--val-size, or a dataset with more)"
        )
        return True
