"""The faster code paths of quantization give exactly what the plain formulas give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.prune import PruningMask
from deep_compression.quantize import QuantizeConfig, QuantizedWeight, quantize_


def test_forward_is_the_gather_formula_and_its_gradient_the_scatter_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    codebook = torch.randn(32, generator=gen)  # negative entries give -0.0 at pruned spots
    indices = torch.randint(0, 32, (60, 70), generator=gen, dtype=torch.int32)
    mask = torch.rand(60, 70, generator=gen) < 0.3
    q = QuantizedWeight(codebook, indices, mask)
    got = q(torch.empty(0))
    want = codebook[indices.long()] * mask
    assert got.shape == (60, 70)
    assert torch.equal(got, want)
    assert bool((want.view(torch.int32)[~mask] != 0).any())  # the formula gives some -0.0
    assert not bool(got.view(torch.int32)[~mask].any())  # pruned entries are exactly +0.0
    upstream = torch.randn(60, 70, generator=gen, dtype=torch.float64).float()
    got.backward(upstream)
    # d(loss)/d(c_k) = sum of the upstream gradients of the kept weights assigned to k.
    expected = np.bincount(
        indices[mask].numpy(), weights=upstream[mask].double().numpy(), minlength=32
    )
    np.testing.assert_allclose(q.codebook.grad.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_quantize_bakes_the_masked_weight_into_the_same_parameter() -> None:
    """A mask registered without zeroing the weight under it: quantize_ must cluster and
    keep ``original * mask`` (what torch's leave_parametrized=True would leave), in the
    same Parameter object (optimizers holding it stay valid)."""
    torch.manual_seed(0)
    layer = nn.Linear(40, 30)
    mask = torch.rand(30, 40) < 0.25
    parametrize.register_parametrization(layer, "weight", PruningMask(mask))
    param = layer.parametrizations.weight.original
    expected = (param * mask).detach().clone()
    assert bool((param.detach()[~mask] != 0).any())  # the stored value is not zeroed
    report = quantize_(layer, QuantizeConfig(bits={"*": 3}))
    original = layer.parametrizations.weight.original
    assert original is param
    assert torch.equal(original.detach(), expected)
    assert not original.requires_grad
    assert report.layers[0].kept == int(mask.sum())
    assert not bool(layer.weight.detach()[~mask].any())  # pruned entries stay zero
    assert torch.unique(layer.weight.detach()[mask]).numel() <= 8


@pytest.mark.parametrize(
    ("bits", "dtype"),
    [(1, torch.int8), (7, torch.int8), (8, torch.int16), (15, torch.int16), (16, torch.int32)],
)
def test_indices_are_stored_in_the_narrowest_signed_type(bits: int, dtype: torch.dtype) -> None:
    from deep_compression.quantize.parametrization import index_dtype

    assert index_dtype(2**bits) == dtype
    k = 2**bits
    idx = torch.tensor([[0, k - 1], [k // 2, 1 % k]])
    q = QuantizedWeight(torch.linspace(-1.0, 1.0, k), idx, torch.ones(2, 2, dtype=torch.bool))
    assert q.indices.dtype == dtype
    assert torch.equal(q(torch.zeros(2, 2)), torch.linspace(-1.0, 1.0, k)[idx])  # values kept
