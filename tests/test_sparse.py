"""SparseLinear and sparsify_/densify_ against dense references (F.linear, scipy.sparse)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.errors import ConfigError
from deep_compression.models import build_model
from deep_compression.prune.mask import PruningMask
from deep_compression.quantize.parametrization import QuantizedWeight
from deep_compression.sparse import SparseLinear, densify_, sparse_layers, sparsify_


def random_sparse(out_f: int, in_f: int, density: float, seed: int = 0) -> torch.Tensor:
    """A ``(out, in)`` weight with Bernoulli(density) non-zeros (some rows/cols all zero)."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(out_f, in_f, generator=gen) < density
    return torch.randn(out_f, in_f, generator=gen) * keep


def mask_(layer: nn.Module, density: float, seed: int) -> torch.Tensor:
    """Register a random PruningMask keeping exactly round(density * n) weights."""
    gen = torch.Generator().manual_seed(seed)
    n = layer.weight.numel()
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=gen)[: round(density * n)]] = True
    keep = keep.view_as(layer.weight)
    parametrize.register_parametrization(layer, "weight", PruningMask(keep), unsafe=True)
    with torch.no_grad():  # as prune_ does: the stored value under the mask is zero too
        layer.parametrizations.weight.original.masked_fill_(~keep, 0.0)
    return keep


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- SparseLinear


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("lead", [(), (1,), (1, 1), (7,), (2, 3)])
def test_forward_equals_dense_linear(with_bias: bool, lead: tuple[int, ...]) -> None:
    weight = random_sparse(40, 64, 0.1)
    bias = torch.randn(40) if with_bias else None
    layer = SparseLinear(weight, bias)
    x = torch.randn(*lead, 64)
    with torch.inference_mode():
        y = layer(x)
    ref = F.linear(x, weight, bias)
    assert y.shape == (*lead, 40)
    assert y.is_contiguous()
    assert close(y, ref)


@settings(max_examples=60, deadline=None)
@given(
    out_f=st.integers(1, 24),
    in_f=st.integers(1, 24),
    batch=st.integers(0, 9),
    density=st.floats(0.0, 1.0),
    with_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_forward_equals_dense_property(
    out_f: int, in_f: int, batch: int, density: float, with_bias: bool, seed: int
) -> None:
    weight = random_sparse(out_f, in_f, density, seed)
    bias = torch.randn(out_f) if with_bias else None
    x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        y = SparseLinear(weight, bias)(x)
    assert close(y, F.linear(x, weight, bias))


def test_csr_arrays_match_scipy() -> None:
    sp = pytest.importorskip("scipy.sparse")
    weight = random_sparse(50, 30, 0.2, seed=3)
    weight[7] = 0.0  # an empty row
    weight[:, 4] = 0.0  # an empty column
    layer = SparseLinear(weight)
    ref = sp.csr_matrix(weight.numpy())
    assert layer.crow_indices.dtype == torch.int32
    assert layer.col_indices.dtype == torch.int32
    assert layer.crow_indices.tolist() == ref.indptr.tolist()
    assert layer.col_indices.tolist() == ref.indices.tolist()
    assert layer.values.tolist() == ref.data.tolist()
    assert layer.nnz == int(torch.count_nonzero(weight))
    assert layer.density == pytest.approx(layer.nnz / weight.numel())
    assert torch.equal(layer.to_dense(), weight)
    assert layer.weight.layout == torch.sparse_csr and layer.weight.shape == (50, 30)


def test_sparse_inputs_give_the_same_layer() -> None:
    weight = random_sparse(20, 30, 0.15, seed=5)
    dense = SparseLinear(weight)
    for other in (SparseLinear(weight.to_sparse()), SparseLinear(weight.to_sparse_csr())):
        assert torch.equal(other.crow_indices, dense.crow_indices)
        assert torch.equal(other.col_indices, dense.col_indices)
        assert torch.equal(other.values, dense.values)


def test_all_zero_weight_gives_the_bias() -> None:
    bias = torch.randn(6)
    layer = SparseLinear(torch.zeros(6, 9), bias)
    assert layer.nnz == 0
    with torch.inference_mode():
        y = layer(torch.randn(4, 9))
    assert torch.equal(y, bias.expand(4, 6))


def test_to_linear_and_dtype_conversion() -> None:
    weight, bias = random_sparse(12, 10, 0.3, seed=7), torch.randn(12)
    layer = SparseLinear(weight, bias)
    linear = layer.to_linear()
    assert type(linear) is nn.Linear
    assert torch.equal(linear.weight, weight) and torch.equal(linear.bias, bias)
    layer64 = copy.deepcopy(layer).double()
    assert layer64.values.dtype == torch.float64 and layer64.bias.dtype == torch.float64
    assert layer64.col_indices.dtype == torch.int32  # .double() leaves the indices alone
    x = torch.randn(3, 10, dtype=torch.float64)
    with torch.inference_mode():
        assert close(layer64(x), F.linear(x, weight.double(), bias.double()))


def test_cached_csr_view_follows_the_buffers() -> None:
    weight, bias = random_sparse(10, 12, 0.4, seed=8), torch.randn(10)
    layer = SparseLinear(weight, bias)
    x = torch.randn(2, 12)
    with torch.inference_mode():
        layer(x)  # builds the cached CSR view
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        layer.values.mul_(2.0)  # in place: seen through the shared storage
    with torch.inference_mode():
        assert close(layer(x), F.linear(x, 2 * weight, bias))
        assert close(twin(x), F.linear(x, weight, bias))  # the copy has its own buffers
    layer.double()  # replaces the buffers: the view is rebuilt
    with torch.inference_mode():
        assert close(layer(x.double()), F.linear(x.double(), 2 * weight.double(), bias.double()))
    twin.load_state_dict({**twin.state_dict(), "values": 3 * twin.values}, assign=True)
    with torch.inference_mode():
        assert close(twin(x), F.linear(x, 3 * weight, bias))


def test_state_dict_holds_the_csr_arrays() -> None:
    layer = SparseLinear(random_sparse(8, 8, 0.5, seed=2), torch.randn(8))
    assert set(layer.state_dict()) == {"crow_indices", "col_indices", "values", "bias"}
    # Buffers are sized by nnz, so a state dict loads only into a layer of the same pattern.
    twin = SparseLinear(layer.to_dense(), torch.zeros(8))
    twin.load_state_dict(layer.state_dict())
    assert torch.equal(twin.bias, layer.bias)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SparseLinear(torch.randn(5)), "2-D"),
        (lambda: SparseLinear(torch.ones(3, 4, dtype=torch.int64)), "floating point"),
        (lambda: SparseLinear(torch.randn(3, 4), torch.randn(4)), r"bias must have shape \(3,\)"),
        (lambda: SparseLinear(torch.randn(3, 4).to_sparse_csc()), "dense, COO or CSR"),
    ],
)
def test_bad_construction_raises_config_error(make, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_input_raises_config_error() -> None:
    layer = SparseLinear(random_sparse(4, 6, 0.5))
    with pytest.raises(ConfigError, match=r"\(\*, 6\), got \(2, 5\)"):
        layer(torch.randn(2, 5))
    with pytest.raises(ConfigError, match="float64 input"):
        layer(torch.randn(2, 6, dtype=torch.float64))
    with pytest.raises(ConfigError, match="got \\(\\)"):
        layer(torch.tensor(1.0))


# --------------------------------------------------------------------------- sparsify_


def pruned_lenet300(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("lenet-300-100").eval()
    for i, (name, density) in enumerate({"fc1": 0.08, "fc2": 0.09, "fc3": 0.26}.items()):
        mask_(model.get_submodule(name), density, seed + i)
    return model


@pytest.mark.parametrize("batch", [1, 16])
def test_sparsify_pruned_lenet300_same_outputs(batch: int) -> None:
    dense = pruned_lenet300()
    sparse = sparsify_(copy.deepcopy(dense))
    assert set(sparse_layers(sparse)) == {"fc1", "fc2", "fc3"}
    for name, layer in sparse_layers(sparse).items():
        reference = dense.get_submodule(name)
        assert layer.nnz == int(reference.parametrizations.weight[0].mask.sum())
        assert torch.equal(layer.to_dense(), reference.weight)
        assert torch.equal(layer.bias, reference.bias)
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        assert close(sparse(x), dense(x))


def test_min_sparsity_decides_which_layers_are_swapped() -> None:
    model = pruned_lenet300()  # fc1 92%, fc2 91%, fc3 74% zeros
    assert set(sparse_layers(sparsify_(copy.deepcopy(model), min_sparsity=0.74))) == {
        "fc1", "fc2", "fc3"
    }  # fmt: skip
    assert set(sparse_layers(sparsify_(copy.deepcopy(model), min_sparsity=0.75))) == {
        "fc1", "fc2"
    }  # fmt: skip
    assert not sparse_layers(sparsify_(copy.deepcopy(model), min_sparsity=0.95))


def test_sparsify_plain_linear_with_zeros_and_leaves_the_rest() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5), nn.Conv1d(1, 1, 3))
    with torch.no_grad():
        model[0].weight.mul_(random_sparse(20, 10, 0.3, seed=1) != 0)  # ~70% exact zeros
        model[3].weight.zero_()  # a convolution, however sparse, stays dense
    dense = copy.deepcopy(model)
    sparsify_(model)
    assert isinstance(model[0], SparseLinear)
    assert type(model[2]) is nn.Linear  # no zeros: not swapped
    assert type(model[3]) is nn.Conv1d
    x = torch.randn(3, 10)
    with torch.inference_mode():
        assert close(model[:3](x), dense[:3](x))


def test_sparsify_quantized_weight() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(30, 12)
    gen = torch.Generator().manual_seed(4)
    keep = torch.rand(12, 30, generator=gen) < 0.2
    codebook = torch.tensor([0.0, -0.5, -0.1, 0.2, 0.7])  # entry 0 is an exact zero
    indices = torch.randint(0, 5, (12, 30), generator=gen)
    parametrize.register_parametrization(
        layer, "weight", QuantizedWeight(codebook, indices, keep), unsafe=True
    )
    expected = codebook[indices] * keep
    assert torch.equal(SparseLinear.from_linear(layer).to_dense(), expected)
    sparse = sparsify_(layer)  # a bare Linear: the replacement is returned
    assert isinstance(sparse, SparseLinear)
    assert torch.equal(sparse.to_dense(), expected)
    # Kept weights whose centroid is 0.0 need no storage either.
    assert sparse.nnz == int((keep & (indices != 0)).sum())
    x = torch.randn(5, 30)
    with torch.inference_mode():
        assert close(sparse(x), layer(x))


def test_sparsify_keeps_shared_layers_shared() -> None:
    shared = nn.Linear(8, 8)
    with torch.no_grad():
        shared.weight.mul_(random_sparse(8, 8, 0.2, seed=3) != 0)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    sparsify_(model)
    assert isinstance(model[0], SparseLinear) and model[0] is model[2]


def test_sparsify_leaves_linear_subclasses_alone() -> None:
    mha = nn.MultiheadAttention(8, 2)
    with torch.no_grad():
        mha.out_proj.weight.zero_()
    sparsify_(mha)
    assert not sparse_layers(mha)  # its out_proj is read as a dense weight by its parent


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True, float("nan")])
def test_min_sparsity_validation(bad: object) -> None:
    with pytest.raises(ConfigError, match="min_sparsity"):
        sparsify_(nn.Linear(2, 2), min_sparsity=bad)  # type: ignore[arg-type]


def test_densify_restores_plain_linear_layers() -> None:
    dense = pruned_lenet300()
    model = densify_(sparsify_(copy.deepcopy(dense)))
    assert not sparse_layers(model)
    for name in ("fc1", "fc2", "fc3"):
        layer = model.get_submodule(name)
        assert type(layer) is nn.Linear
        assert torch.equal(layer.weight, dense.get_submodule(name).weight)
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        assert close(model(x), dense(x))
    assert type(densify_(SparseLinear(torch.eye(3)))) is nn.Linear
