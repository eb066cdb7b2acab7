"""Random mutations of valid files: the format error is the only exception that escapes.

Two variants: raw mutations (almost always stopped by the header checks or the CRC), and
mutations followed by a recomputed CRC, which reach the stream decoders and must be
rejected by their structural checks (or decode to *something* without crashing).
"""

from __future__ import annotations

import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deep_compression.dcz import decode, to_bytes
from deep_compression.errors import FormatError

# A small output bound keeps a mutation that enlarges a shape from allocating much.
LIMIT = 1 << 22

mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(0, 10**6),
    st.integers(0, 255),
)


def mutate(blob: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(blob)
    for op, where, value in ops:
        if not b:
            break
        i = where % len(b)
        if op == "flip":
            b[i] ^= 1 << (value % 8)
        elif op == "set":
            b[i] = value
        elif op == "insert":
            b.insert(i, value)
        elif op == "delete":
            del b[i]
        else:
            del b[i:]
    return bytes(b)


def base_files() -> list[bytes]:
    rng = np.random.default_rng(0)
    from deep_compression.dcz import DenseTensor, QuantizedTensor, SparseTensor

    pos = np.flatnonzero(rng.random(600) < 0.1)
    recs = [
        QuantizedTensor("q", (20, 30), pos, rng.integers(0, 16, pos.size), rng.normal(size=16), 4),
        SparseTensor("s", (600,), pos, rng.normal(size=pos.size).astype(np.float32), 3),
        DenseTensor("b", rng.normal(size=5).astype(np.float32)),
    ]
    return [
        to_bytes(recs, {"m": 1}, coder=c, chunk=16, compress_header=z, version=v)
        for v in (1, 2)
        for c in ("huffman", "ans", "fixed") + (("ctx",) if v == 2 else ())
        for z in (False, True)
    ]


FILES = base_files()


def only_format_errors(blob: bytes) -> None:
    try:
        decode(blob, max_output_bytes=LIMIT)
    except FormatError:
        pass


@given(st.sampled_from(range(len(FILES))), st.lists(mutation, min_size=1, max_size=4))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_raw_mutations(which: int, ops) -> None:
    only_format_errors(mutate(FILES[which], ops))


@given(st.sampled_from(range(len(FILES))), st.lists(mutation, min_size=1, max_size=3))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutations_with_a_valid_checksum(which: int, ops) -> None:
    body = mutate(FILES[which][:-4], ops)
    only_format_errors(body + zlib.crc32(body).to_bytes(4, "little"))
