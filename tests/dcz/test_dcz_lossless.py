"""record_from_array: sparse / few-valued structure found in dense arrays, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.dcz import DenseTensor, QuantizedTensor, SparseTensor, decode, to_bytes
from deep_compression.dcz.lossless import record_from_array
from deep_compression.dcz.records import to_dense


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(
            np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)
        )
    )


def check(arr: np.ndarray):
    rec = record_from_array("w", arr)
    assert same_bits(to_dense(rec), arr)
    arrays, _ = decode(to_bytes([rec], {}, coder="best"))  # and through a file
    assert same_bits(arrays["w"], arr)
    return rec


def test_pruned_quantized_layer_becomes_a_quantized_record() -> None:
    rng = np.random.default_rng(0)
    codebook = np.sort(rng.normal(size=16)).astype(np.float32)
    arr = codebook[rng.integers(0, 16, size=(300, 784))]
    arr[rng.random(arr.shape) > 0.05] = 0.0
    rec = check(arr)
    assert isinstance(rec, QuantizedTensor)
    assert np.array_equal(rec.codebook, np.unique(arr[arr != 0]))  # sorted distinct values
    assert rec.positions.tolist() == np.flatnonzero(arr).tolist()


def test_negative_zero_is_kept_as_a_value_and_nan_payloads_survive() -> None:
    arr = np.zeros(40, dtype=np.float32)
    arr[[3, 9]] = -0.0
    arr[5] = 1.5
    bits = arr.view(np.uint32)
    bits[7] = 0x7FC00001  # a NaN with a payload
    bits[8] = 0x7FC00002  # another
    rec = check(arr)
    assert not isinstance(rec, DenseTensor)
    assert 3 in rec.positions.tolist() and 9 in rec.positions.tolist()


def test_many_distinct_values_stay_sparse_or_dense() -> None:
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(50, 40)).astype(np.float32)
    assert isinstance(check(dense), DenseTensor)
    sparse = np.where(rng.random(dense.shape) < 0.1, dense, np.float32(0))  # no -0.0
    assert isinstance(check(sparse.astype(np.float32)), SparseTensor)
    assert isinstance(check(np.arange(5, dtype=np.int64)), DenseTensor)
    assert isinstance(check(np.zeros((3, 0), np.float32)), DenseTensor)
    assert not isinstance(check(np.zeros((30, 30), np.float32)), DenseTensor)


@given(st.integers(0, 2**32 - 1), st.integers(0, 300), st.integers(1, 70), st.floats(0, 1))
@settings(max_examples=60, deadline=None)
def test_round_trip_is_bit_exact(seed: int, numel: int, distinct: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=distinct).astype(np.float32)
    values[0] = -0.0
    arr = values[rng.integers(0, distinct, numel)]
    arr[rng.random(numel) > density] = 0.0
    check(arr.reshape(-1, 1) if numel % 2 else arr)


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5"])
def test_a_decoded_lenet_comes_back_near_its_file_size(name: str) -> None:
    """Decoded arrays -> records -> file: close to the shipped file, same arrays."""
    from pathlib import Path

    path = Path(__file__).parent.parent / "data" / f"{name}.v1.dcz"
    arrays, meta = decode(path)
    blob = to_bytes([record_from_array(k, v) for k, v in arrays.items()], meta, coder="best")
    again, _ = decode(blob)
    assert all(same_bits(again[k], arrays[k]) for k in arrays)
    assert len(blob) < 1.1 * path.stat().st_size


def test_model_tensors_finds_structure_in_plain_weights(tmp_path) -> None:
    """encode of a plain model whose weights are already pruned and quantized (what
    ``decode`` writes) stores them as quantized records, and the file decodes bit for bit."""
    import torch

    from deep_compression.encode import EncodeConfig, encode_model, model_tensors
    from deep_compression.models import build_model

    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    with torch.no_grad():
        for m in (model.fc1, model.fc2, model.fc3):
            w = m.weight
            levels = torch.linspace(-0.2, 0.2, 15)
            kept = torch.rand(w.shape) < 0.05  # where(), not a product: no -0.0 entries
            w.copy_(torch.where(kept, levels[torch.randint(0, 15, w.shape)], 0.0))
    records = {r.name: r for r in model_tensors(model)}
    assert isinstance(records["fc1.weight"], QuantizedTensor)
    assert isinstance(records["fc1.bias"], DenseTensor)
    report = encode_model(model, tmp_path / "m.dcz", EncodeConfig(coder="best"))  # verifies
    assert report.file_bytes < 20_000  # dense float32 would be 1,066,440 bytes
    arrays, _ = decode(tmp_path / "m.dcz")
    assert same_bits(arrays["fc2.weight"], model.fc2.weight.detach().numpy())
