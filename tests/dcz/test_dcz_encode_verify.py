"""encode_model's verification: decoded records against the model, without densifying."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from deep_compression import encode
from deep_compression.dcz.reader import to_dense
from deep_compression.encode import EncodeConfig, _decodes_to, encode_model
from deep_compression.models import build_model
from deep_compression.prune import KeepFraction, prune_
from deep_compression.quantize import QuantizeConfig, quantize_

from .conftest import make_records


def variants(dense: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """``dense`` itself and near misses: one entry changed, one zero made non-zero, zeros
    made -0.0 (still equal), another shape."""
    out = [dense.copy()]
    flat = dense.reshape(-1)
    nz, zero = np.flatnonzero(flat), np.flatnonzero(flat == 0)
    if nz.size:
        v = flat.copy()
        v[rng.choice(nz)] += 1.0
        out.append(v.reshape(dense.shape))
    if zero.size:
        v = flat.copy()
        v[rng.choice(zero)] = 1e-30
        out.append(v.reshape(dense.shape))
        v = flat.copy()
        v[zero] = -0.0
        out.append(v.reshape(dense.shape))
    out.append(flat.copy().reshape(1, -1) if dense.ndim != 2 else flat.copy())
    return out


@pytest.mark.parametrize("seed", range(5))
def test_decodes_to_is_dense_equality(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for record in make_records(seed):
        dense = to_dense(record)
        for candidate in variants(dense, rng):
            want = candidate.shape == dense.shape and np.array_equal(dense, candidate)
            assert _decodes_to(record, candidate) == want, record.name


def test_encode_model_catches_a_file_that_is_not_the_model(monkeypatch, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    prune_(model, {"*": KeepFraction(0.1)})
    quantize_(model, QuantizeConfig(bits={"*": 4}))
    meta = {"model": {"name": "lenet-300-100", "kwargs": {}}}
    encode_model(model, tmp_path / "ok.dcz", metadata=meta)  # the real writer passes

    real = encode.write_dcz

    def drop_one_weight(path, records, metadata, **kw):
        out = []
        for r in records:
            if r.name == "fc1.weight":  # quantized: lose its last kept weight
                r = dataclasses.replace(r, positions=r.positions[:-1], indices=r.indices[:-1])
            out.append(r)
        return real(path, out, metadata, **kw)

    monkeypatch.setattr(encode, "write_dcz", drop_one_weight)
    with pytest.raises(AssertionError, match="fc1.weight does not decode"):
        encode_model(model, tmp_path / "bad.dcz", metadata=meta)


# The check does not depend on the coder; the default's pure-Python ctx coding made each
# of these LeNet files cost 3x as long to write.
HUFFMAN = EncodeConfig("huffman")


def _change_an_index(r):
    idx = r.indices.copy()
    idx[3] = (idx[3] + 1) % r.codebook.size  # another centroid (codebooks have no repeats)
    return dataclasses.replace(r, indices=idx)


def _move_a_position(r):
    pos = r.positions.copy()
    free = np.setdiff1d(np.arange(pos[0] + 1, pos[1]), pos)  # a pruned slot between two
    if free.size == 0:
        free = np.setdiff1d(np.arange(pos[-1] + 1, int(np.prod(r.shape))), pos)
        pos[-1] = free[0]
    else:
        pos[0] = free[0]
    return dataclasses.replace(r, positions=np.sort(pos))


@pytest.mark.parametrize("tamper", [_change_an_index, _move_a_position])
def test_quantized_layers_are_verified_value_and_position(monkeypatch, tmp_path, tamper) -> None:
    """The quantized-layer check (kept positions and values only) catches a wrong centroid
    and a weight moved to a pruned position, on every quantized layer of a LeNet-5."""
    torch.manual_seed(0)
    model = build_model("lenet-5")
    prune_(model, {"*": KeepFraction(0.2)})
    quantize_(model, QuantizeConfig(bits={"*": 4, "conv*": 6}))
    meta = {"model": {"name": "lenet-5", "kwargs": {}}}
    real = encode.write_dcz
    for target in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"):

        def tampered(path, records, metadata, _t=target, **kw):
            return real(path, [tamper(r) if r.name == _t else r for r in records], metadata, **kw)

        monkeypatch.setattr(encode, "write_dcz", tampered)
        with pytest.raises(AssertionError, match=f"{target} does not decode"):
            encode_model(model, tmp_path / "bad.dcz", HUFFMAN, metadata=meta)
    monkeypatch.setattr(encode, "write_dcz", real)
    encode_model(model, tmp_path / "ok.dcz", HUFFMAN, metadata=meta)
