"""Selection on held-out images: the paired interval against a direct computation and a
simulation of its coverage; the judge's early looks; where validation images come from."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deep_compression.data import Data, DatasetInfo, Split, ValidationConfig, carve_validation
from deep_compression.errors import ConfigError, DataError
from deep_compression.selection import PairedJudge, images_needed, paired_increase, z_of


def test_losses_get_the_mean_difference_plus_minus_z_standard_errors() -> None:
    rng = np.random.default_rng(0)
    ref = rng.gamma(2.0, 0.3, 400)
    cand = ref + rng.normal(0.01, 0.05, 400)
    est = paired_increase(ref, cand, 0.9)
    d = cand - ref
    se = d.std(ddof=1) / math.sqrt(d.size)  # the textbook paired standard error
    assert est.increase == pytest.approx(d.mean())
    assert est.high == pytest.approx(d.mean() + 1.2815516 * se, rel=1e-6)
    assert est.low == pytest.approx(d.mean() - 1.2815516 * se, rel=1e-6)
    assert z_of(0.975) == pytest.approx(1.959964, rel=1e-6)


def _score_root(ref: np.ndarray, cand: np.ndarray, z: float, side: int) -> float:
    """Reference: the score bound found by bisection on the test statistic itself."""
    d = cand.astype(float) - ref.astype(float)
    n, m = d.size, d.mean()
    p10, p01 = np.mean(d > 0), np.mean(d < 0)

    def stat(delta: float) -> float:  # > 0 while delta is still inside the interval
        var = delta + 2 * p01 - delta**2 if side > 0 else 2 * p10 - delta - delta**2
        return z * math.sqrt(max(var, 1e-300) / n) - abs(delta - m)

    lo, hi = (m, 1.0) if side > 0 else (-1.0, m)
    for _ in range(200):
        mid = (lo + hi) / 2
        inside = stat(mid) > 0
        if side > 0:
            lo, hi = (mid, hi) if inside else (lo, mid)
        else:
            lo, hi = (lo, mid) if inside else (mid, hi)
    return (lo + hi) / 2


def test_error_bounds_are_the_score_bounds() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(3000) < 0.17
    cand = ref ^ (rng.random(3000) < 0.04)
    est = paired_increase(ref, cand, 0.9, scale=100.0)
    z = z_of(0.9)
    assert est.high == pytest.approx(100 * _score_root(ref, cand, z, +1), abs=1e-6)
    assert est.low == pytest.approx(100 * _score_root(ref, cand, z, -1), abs=1e-6)
    assert est.low < est.increase < est.high
    # No disagreement on n images: z^2 / (n + z^2) either way, as Wilson's bound at 0.
    same = paired_increase(np.zeros(625), np.zeros(625), 0.975, scale=100.0)
    assert same.high == pytest.approx(100 * 1.959964**2 / (625 + 1.959964**2), rel=1e-5)
    assert same.low == pytest.approx(-same.high)


def test_identical_models_are_not_certain_on_few_images() -> None:
    """No disagreement on 10 images still leaves a bound over 10 points."""
    same = np.zeros(10, dtype=bool)
    assert paired_increase(same, same, 0.9, scale=100.0).high > 10
    assert paired_increase(np.zeros(5000, bool), np.zeros(5000, bool), 0.9, scale=100).high < 0.5


@pytest.mark.parametrize(
    ("true_increase", "down", "n", "most"),
    [(0.0, 0.015, 2000, 0.12), (0.01, 0.015, 2000, 0.12), (0.005, 0.0, 625, 0.12)],
)
def test_the_upper_bound_covers_the_true_increase_at_its_confidence(
    true_increase: float, down: float, n: int, most: float
) -> None:
    """Simulated pairs (the reference wrong on 17% of the images; the candidate turns
    ``down`` of them right and ``down`` + the true increase wrong): the 90% upper bound
    falls below the true increase in at most about 10% of the draws, rare flips on few
    images included (the case a plain standard error gets wrong)."""
    rng = np.random.default_rng(1)
    draws, misses = 2000, 0
    up = down + true_increase
    for _ in range(draws):
        u = rng.random(n)
        ref = u < 0.17
        cand = ref.copy()
        cand[u < down] = False  # wrong -> right
        cand[(u >= 0.17) & (u < 0.17 + up)] = True  # right -> wrong
        misses += paired_increase(ref, cand, 0.9, scale=100.0).high < 100 * true_increase
    assert misses / draws < most  # 2,000 draws: 0.10 +- 0.007 (1 s.e.)
    if down:  # not over-cautious either where flips are common
        assert misses / draws > 0.06


def test_images_needed_and_bad_arguments() -> None:
    # 1 point at 90%, 4% disagreement: (1.2816 * 0.2 / 0.005)^2 = 2,628 images.
    assert images_needed(0.01, 0.04) == math.ceil((z_of(0.9) * 0.2 / 0.005) ** 2)
    with pytest.raises(ConfigError, match="confidence"):
        paired_increase(np.zeros(3), np.zeros(3), 1.0)
    with pytest.raises(ConfigError, match="equal"):
        paired_increase(np.zeros(3), np.zeros(4))


class _Fixed(nn.Module):
    """Right (the label is x[:, 0]) except where x[:, 1], uniform in [0, 1), is below
    ``flip``: a model wrong on a known fraction of the images."""

    def __init__(self, flip: float) -> None:
        super().__init__()
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = x[:, 0].long()
        wrong = x[:, 1] < self.flip  # x[:, 1] is uniform in [0, 1)
        pred = torch.where(wrong, (label + 1) % 3, label)
        return nn.functional.one_hot(pred, 3).float()


def _split(n: int = 4000) -> Split:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.stack([y.float(), torch.rand(n, generator=g)], 1)
    return Split(x, y)


def test_the_judge_stops_early_when_the_answer_is_clear() -> None:
    data = _split()
    judge = PairedJudge(_Fixed(0.0), data, budget=1.0)
    assert judge.reference_error == 0.0
    same = judge(_Fixed(0.0))
    assert same.accepted and same.estimate.n == 500  # an eighth of the images decide
    far = judge(_Fixed(0.5))
    assert far.broken and not far.accepted and far.estimate.n == 500
    near = judge(_Fixed(0.01))  # 1 point lost: neither clearly within nor beyond
    assert near.estimate.n == 4000 and not near.accepted and not near.broken
    full = PairedJudge(_Fixed(0.0), data, budget=1.0, early=False)(_Fixed(0.0))
    assert full.accepted and full.estimate.n == 4000
    assert abs(near.error - 1.0) < 0.5  # the candidate's error on all the images


def _data(n_train: int, n_test: int, with_val: bool = False) -> Data:
    def split(n: int, offset: int) -> Split:
        return Split(torch.arange(offset, offset + n).float().view(n, 1), torch.zeros(n).long())

    info = DatasetInfo("toy", (1,), (0.0,), (1.0,), ("a",))
    return Data(split(n_train, 0), split(n_test, 10_000), info,
                split(50, 20_000) if with_val else None)  # fmt: skip


def test_validation_from_the_test_set_is_two_seeded_disjoint_parts() -> None:
    data = carve_validation(_data(600, 1000), ValidationConfig(source="test", seed=3))
    assert len(data.train) == 600 and len(data.val) == len(data.test) == 500
    val, test = set(data.val.x.view(-1).tolist()), set(data.test.x.view(-1).tolist())
    assert not val & test and val | test == set(range(10_000, 11_000))
    again = carve_validation(_data(600, 1000), ValidationConfig(source="test", seed=3))
    assert torch.equal(again.val.x, data.val.x)
    other = carve_validation(_data(600, 1000), ValidationConfig(source="test", seed=4))
    assert not torch.equal(other.val.x, data.val.x)
    some = carve_validation(_data(600, 1000), ValidationConfig(size=200, source="test"))
    assert (len(some.val), len(some.test)) == (200, 800)


def test_where_auto_goes_and_what_is_refused() -> None:
    auto = ValidationConfig()
    assert auto.resolve(True, False).source == "val"
    assert auto.resolve(False, True).source == "train"
    assert auto.resolve(False, False).source == "test"
    assert ValidationConfig(0).resolve(False, False).source == "auto"  # no split at all
    assert ValidationConfig(source="train").resolve(True, False).source == "train"
    assert ValidationConfig(source="test").to_dict() == {"size": "auto", "seed": 0,
                                                         "source": "test"}  # fmt: skip
    assert ValidationConfig().to_dict() == {"size": "auto", "seed": 0}  # digests as before
    assert ValidationConfig.from_value({"source": "val"}).source == "val"
    with pytest.raises(DataError, match="no validation split of its own"):
        carve_validation(_data(600, 1000), ValidationConfig(source="val"))
    own = carve_validation(_data(600, 1000, with_val=True), ValidationConfig(source="train"))
    assert len(own.val) == 60 and len(own.train) == 540  # carved even beside val/
    with pytest.raises(ConfigError, match="source"):
        ValidationConfig(source="holdout")
