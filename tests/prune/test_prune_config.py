"""Criteria: validated on construction, one-to-one with their TOML tables."""

from __future__ import annotations

import math

import pytest

from deep_compression.errors import ConfigError
from deep_compression.prune.config import (
    ActivationAware,
    GlobalMagnitude,
    KeepFraction,
    NoPruning,
    StdThreshold,
    criteria_from_dict,
    criteria_to_dict,
    criterion_from_dict,
)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: StdThreshold(-0.1), "finite number >= 0, got -0.1"),
        (lambda: StdThreshold(math.nan), "finite number >= 0"),
        (lambda: StdThreshold(math.inf), "finite number >= 0"),
        (lambda: StdThreshold("1"), "finite number >= 0"),
        (lambda: KeepFraction(0.0), r"fraction in \(0, 1\], got 0.0"),
        (lambda: KeepFraction(1.5), r"fraction in \(0, 1\], got 1.5"),
        (lambda: KeepFraction(-0.2), r"fraction in \(0, 1\]"),
        (lambda: KeepFraction(True), r"fraction in \(0, 1\]"),
        (lambda: KeepFraction(math.nan), r"fraction in \(0, 1\]"),
        (lambda: ActivationAware(0), r"fraction in \(0, 1\]"),
        (lambda: GlobalMagnitude(), "exactly one of 'keep' or 'threshold'"),
        (lambda: GlobalMagnitude(keep=0.1, threshold=0.1), "exactly one"),
        (lambda: GlobalMagnitude(keep=2.0), r"fraction in \(0, 1\]"),
        (lambda: GlobalMagnitude(threshold=-1.0), "finite number >= 0"),
    ],
)
def test_bad_values_are_rejected(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_edges_are_accepted() -> None:
    assert StdThreshold(0).s == 0 and KeepFraction(1.0).keep == 1.0
    assert GlobalMagnitude(threshold=0.0).threshold == 0.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"method": "magic", "s": 1}, "method must be one of"),
        ({"s": 1}, "method must be one of"),
        ({"method": "std", "s": 1, "keep": 0.5}, r"unknown keys \['keep'\] for method 'std'"),
        ({"method": "std"}, "missing 1 required positional argument: 's'"),
        ({"method": "fraction", "keep": 0}, r"fc1: keep fraction must be a fraction in \(0, 1\]"),
        (0.5, "a criterion is a table"),
        ("std", "must be a table"),
    ],
)
def test_bad_tables_name_the_layer(table, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        criteria_from_dict({"*": {"method": "none"}, "fc1": table})
    assert "criteria.fc1" in str(info.value)


def test_roundtrip_through_dicts() -> None:
    criteria = {
        "*": StdThreshold(1.25),
        "fc1": KeepFraction(0.05),
        "fc*": GlobalMagnitude(keep=0.1),
        "conv1": ActivationAware(0.5),
        "conv2": NoPruning(),
        "fc9": GlobalMagnitude(threshold=0.01),
    }
    as_dict = criteria_to_dict(criteria)
    assert as_dict["*"] == {"method": "std", "s": 1.25}
    assert as_dict["fc*"] == {"method": "global", "keep": 0.1}
    assert criteria_from_dict(as_dict) == criteria
    assert criterion_from_dict({"method": "none"}) == NoPruning()


def test_empty_table_is_rejected() -> None:
    with pytest.raises(ConfigError, match="non-empty table"):
        criteria_from_dict({})
