"""Fixtures for the .dcz tests: sample tensors and tools to build malformed files."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from deep_compression.dcz import DenseTensor, QuantizedTensor, SparseTensor, Tensor, to_bytes


def make_records(seed: int = 0) -> list[Tensor]:
    """A conv-like quantized tensor, a 2-D quantized one, a sparse one and a bias."""
    rng = np.random.default_rng(seed)
    out: list[Tensor] = []
    for name, shape, density, k, bits in (
        ("conv.weight", (6, 3, 5, 5), 0.5, 256, 8),
        ("fc.weight", (40, 50), 0.08, 32, 5),
    ):
        numel = int(np.prod(shape))
        positions = np.flatnonzero(rng.random(numel) < density)
        indices = rng.integers(0, k, size=positions.size)
        codebook = np.sort(rng.normal(size=k)).astype(np.float32)
        out.append(QuantizedTensor(name, shape, positions, indices, codebook, bits))
    positions = np.flatnonzero(rng.random(300) < 0.2)
    values = rng.normal(size=positions.size).astype(np.float32)
    out.append(SparseTensor("sp.weight", (10, 30), positions, values, 4))
    out.append(DenseTensor("fc.bias", rng.normal(size=40).astype(np.float32)))
    return out


@pytest.fixture
def records() -> list[Tensor]:
    return make_records()


@pytest.fixture
def sample_blob(records: list[Tensor]) -> bytes:
    """A valid version-1 file with an uncompressed header (easy to edit in tests)."""
    return to_bytes(
        records, {"model": {"name": "demo", "kwargs": {}}}, compress_header=False, version=1
    )


def _reseal(blob: bytes | bytearray) -> bytes:
    body = bytes(blob[:-4])
    return body + zlib.crc32(body).to_bytes(4, "little")


@pytest.fixture
def reseal() -> Callable[[bytes | bytearray], bytes]:
    """Recompute the CRC of a (modified) file, so deeper checks are reached."""
    return _reseal


@pytest.fixture
def edit_header() -> Callable[[bytes, Callable[[dict[str, Any]], None]], bytes]:
    """Apply ``change(header_dict)`` to an uncompressed-header file; fix length and CRC."""

    def edit(blob: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
        n = int.from_bytes(blob[8:12], "little")
        header = json.loads(blob[12 : 12 + n])
        change(header)
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return _reseal(blob[:8] + len(text).to_bytes(4, "little") + text + blob[12 + n :])

    return edit
