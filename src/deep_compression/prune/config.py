"""Pruning criteria: one small frozen dataclass per rule, selected per layer.

A per-layer configuration has the shape ``{"*": default, "conv*": ..., "fc1": ...}``
(resolved by :mod:`deep_compression.layer_config`: exact name, then the longest matching
pattern, then ``"*"``). In a TOML recipe each criterion is an inline table whose
``method`` key names the rule (a fixed vocabulary, never a class name)::

    "*" = { method = "std", s = 1.2 }          # the paper: prune |w| < s * std(layer)
    fc3 = { method = "fraction", keep = 0.3 }   # keep the 30% largest |w| of the layer
    "fc*" = { method = "global", keep = 0.05 }  # one magnitude threshold across layers
    fc1 = { method = "activation", keep = 0.05 }  # |w_ij| * mean|x_j| over calibration data
    conv1 = { method = "none" }                  # leave the layer alone

No torch here: these are plain values, validated in ``__post_init__``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from deep_compression.errors import ConfigError

__all__ = [
    "StdThreshold",
    "KeepFraction",
    "GlobalMagnitude",
    "ActivationAware",
    "NoPruning",
    "Criterion",
    "METHODS",
    "criterion_from_dict",
    "criterion_to_dict",
    "criteria_from_dict",
    "criteria_to_dict",
]


def _check_fraction(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0.0 < value <= 1.0):
        raise ConfigError(f"{where} must be a fraction in (0, 1], got {value!r}")


def _check_nonnegative(value: object, where: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0.0 <= value < math.inf)
    ):
        raise ConfigError(f"{where} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class StdThreshold:
    """The paper's rule: prune every weight with ``|w| < s * std``.

    ``std`` is the standard deviation of the layer's weights that are still kept (for a
    dense layer: all of them, as in Han et al. 2015). ``s = 0`` prunes nothing.

    Attributes:
        s: the threshold in standard deviations, >= 0.
    """

    s: float
    method: ClassVar[str] = "std"

    def __post_init__(self) -> None:
        _check_nonnegative(self.s, "std threshold s")


@dataclass(frozen=True)
class KeepFraction:
    """Keep the ``keep`` fraction of the layer's weights with the largest ``|w|``.

    The fraction is of all the layer's weights (``weight.numel()``), so a schedule of
    falling ``keep`` values prunes further each round. At least one weight is kept.

    Attributes:
        keep: the fraction of the layer's weights kept, in (0, 1].
    """

    keep: float
    method: ClassVar[str] = "fraction"

    def __post_init__(self) -> None:
        _check_fraction(self.keep, "keep fraction")


@dataclass(frozen=True)
class GlobalMagnitude:
    """One magnitude threshold shared by every layer that selects this same criterion.

    Give exactly one of ``keep`` (the threshold is chosen so that this fraction of the
    pooled weights survives) or ``threshold`` (prune ``|w| < threshold`` everywhere).
    Layers that select *equal* ``GlobalMagnitude`` values form one pool.

    Attributes:
        keep: the fraction of the pooled weights kept, in (0, 1].
        threshold: prune ``|w| < threshold`` in every layer of the pool.
    """

    keep: float | None = None
    threshold: float | None = None
    method: ClassVar[str] = "global"

    def __post_init__(self) -> None:
        if (self.keep is None) == (self.threshold is None):
            raise ConfigError(
                "global magnitude criterion needs exactly one of 'keep' or 'threshold', "
                f"got keep={self.keep!r}, threshold={self.threshold!r}"
            )
        if self.keep is not None:
            _check_fraction(self.keep, "global keep fraction")
        else:
            _check_nonnegative(self.threshold, "global magnitude threshold")


@dataclass(frozen=True)
class ActivationAware:
    """Keep the ``keep`` fraction of weights with the largest ``|w_ij| * mean|x_j|``.

    ``mean|x_j|`` is the mean absolute value, over a calibration batch, of the input the
    weight multiplies: input feature ``j`` for ``Linear``; for convolutions, the input
    channel ``c`` at kernel offset ``k`` averaged over every output position (the mean of
    ``|unfold(x)|``), so border effects of padding are counted exactly.

    Attributes:
        keep: the fraction of the layer's weights kept, in (0, 1].
    """

    keep: float
    method: ClassVar[str] = "activation"

    def __post_init__(self) -> None:
        _check_fraction(self.keep, "activation-aware keep fraction")


@dataclass(frozen=True)
class NoPruning:
    """Leave the layer as it is (a ``"*"`` default for layers not worth pruning)."""

    method: ClassVar[str] = "none"


Criterion = StdThreshold | KeepFraction | GlobalMagnitude | ActivationAware | NoPruning

METHODS: dict[str, type] = {
    c.method: c for c in (StdThreshold, KeepFraction, GlobalMagnitude, ActivationAware, NoPruning)
}


def criterion_from_dict(d: Mapping[str, Any], where: str = "criterion") -> Criterion:
    """Build a criterion from ``{"method": ..., <fields>}``; unknown keys are errors."""
    if isinstance(d, int | float) and not isinstance(d, bool):
        raise ConfigError(
            f'{where}: a criterion is a table such as {{method = "std", s = {d}}}, got {d!r}'
        )
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: a criterion must be a table with a 'method', got {d!r}")
    method = d.get("method")
    if method not in METHODS:
        raise ConfigError(f"{where}: method must be one of {sorted(METHODS)}, got {method!r}")
    cls = METHODS[method]
    allowed = {f.name for f in fields(cls)}
    unknown = set(d) - allowed - {"method"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)} for method {method!r} "
            f"(allowed: {sorted(allowed) or 'none'})"
        )
    args = {k: v for k, v in d.items() if k != "method"}
    try:
        return cls(**args)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def criterion_to_dict(c: Criterion) -> dict[str, Any]:
    """The TOML/JSON form of ``c`` (inverse of :func:`criterion_from_dict`)."""
    return {"method": c.method, **{k: v for k, v in asdict(c).items() if v is not None}}


def criteria_from_dict(d: Mapping[str, Any], where: str = "criteria") -> dict[str, Criterion]:
    """A per-layer ``{"*": {...}, "fc1": {...}}`` table of criteria."""
    if not isinstance(d, Mapping) or not d:
        raise ConfigError(f"{where}: expected a non-empty table of per-layer criteria")
    return {str(k): criterion_from_dict(v, f"{where}.{k}") for k, v in d.items()}


def criteria_to_dict(criteria: Mapping[str, Criterion]) -> dict[str, dict[str, Any]]:
    return {k: criterion_to_dict(c) for k, c in criteria.items()}
