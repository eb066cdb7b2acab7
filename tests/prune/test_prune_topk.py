"""The k-largest selection behind KeepFraction, against a brute-force sort."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deep_compression.prune import KeepFraction, prune_
from deep_compression.prune.core import _top_k_mask


def brute_force(values: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` entries in descending value, ties in flat order (a stable sort)."""
    order = np.argsort(-values.reshape(-1), kind="stable")
    keep = np.zeros(values.size, dtype=bool)
    keep[order[:k]] = True
    return keep.reshape(values.shape)


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.integers(-3, 3), min_size=1, max_size=60),  # many ties
    k_frac=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
)
def test_top_k_is_the_stable_brute_force(data: list[int], k_frac: float, dtype) -> None:
    values = torch.tensor(data, dtype=dtype).reshape(-1, 1)
    k = round(k_frac * len(data))
    got = _top_k_mask(values, k)
    assert got.shape == values.shape and got.dtype == torch.bool
    assert int(got.sum()) == k
    want = brute_force(values.float().numpy(), k)
    assert np.array_equal(got.numpy(), want)


def test_top_k_on_distinct_floats_is_topk() -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(300, 784, generator=gen)
    k = 18_816
    want = torch.zeros(values.numel(), dtype=torch.bool)
    want[torch.topk(values.flatten(), k).indices] = True
    assert torch.equal(_top_k_mask(values, k), want.view_as(values))


def test_keep_fraction_keeps_exactly_k_and_never_revives() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(100, 50)
    with torch.no_grad():
        layer.weight.copy_(torch.randint(-2, 3, (50, 100)).float())  # heavy ties
    prune_(layer, KeepFraction(0.3))
    first = layer.parametrizations.weight[0].mask.clone()
    assert int(first.sum()) == 1500
    prune_(layer, KeepFraction(0.1))
    second = layer.parametrizations.weight[0].mask
    assert int(second.sum()) == 500
    assert not bool((second & ~first).any())  # nothing pruned comes back
