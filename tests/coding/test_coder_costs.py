"""The coders' size estimates (what "auto" gap widths are chosen by) against the real
segments, for streams long enough to span many ANS lanes."""

from __future__ import annotations

import numpy as np
import pytest

from deep_compression.coding.coders import CODERS
from deep_compression.coding.gaps import best_gap_bits, encode_gaps, gap_histogram

LANE = 1 << 14  # the writer's default chunk


@pytest.mark.parametrize(("numel", "density", "bits"), [(400_000, 0.01, 1), (1_000_000, 0.3, 1),
                                                         (3_000_000, 0.1, 3)])  # fmt: skip
def test_ans_estimate_counts_every_lane(numel: int, density: float, bits: int) -> None:
    rng = np.random.default_rng(0)
    positions = np.flatnonzero(rng.random(numel) < density)
    symbols = encode_gaps(positions, bits)
    assert symbols.size > 20 * LANE  # many lanes
    real = 8 * len(CODERS["ans"].encode(symbols, 1 << bits, LANE, 2))
    estimate = CODERS["ans"].cost_bits(gap_histogram(positions, bits))
    assert abs(estimate - real) < 0.002 * real, (estimate, real)


def test_auto_width_is_not_a_bitmap_of_iid_positions() -> None:
    """Positions drawn independently (VGG-16's stand-in weights): a 1-bit field codes one
    symbol per weight, its entropy as low as any width's; its lanes make it larger."""
    rng = np.random.default_rng(0)
    positions = np.flatnonzero(rng.random(2_000_000) < 0.04)
    b = best_gap_bits(positions, "best")
    assert b > 1

    def real(bits: int) -> int:
        symbols = encode_gaps(positions, bits)
        return min(len(c.encode(symbols, 1 << bits, LANE, 2)) for c in CODERS.values())

    assert real(b) < real(1)
    assert encode_gaps(positions, b).size * 10 < encode_gaps(positions, 1).size
