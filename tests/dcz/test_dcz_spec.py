"""A second decoder, written from docs/FORMAT.md alone, agrees with the reference one.

Plain Python (ints, floats, json, zlib, struct); it shares no code with the package, so
a disagreement means the spec and the implementation have drifted apart.
"""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.dcz import DenseTensor, QuantizedTensor, SparseTensor, decode, to_bytes

DTYPE_FORMATS = {"float32": "f", "float64": "d", "float16": "e", "int64": "q", "int32": "i",
                 "int16": "h", "int8": "b", "uint8": "B", "bool": "?"}  # fmt: skip


def varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def bits_of(data: bytes) -> str:
    return "".join(format(b, "08b") for b in data)


def fixed(seg: bytes, n: int, alphabet: int) -> list[int]:
    w = (alphabet - 1).bit_length()
    bits = bits_of(seg)
    return [int(bits[i * w : (i + 1) * w], 2) if w else 0 for i in range(n)]


def huffman(seg: bytes, n: int, chunk: int) -> list[int]:
    m, pos = varint(seg, 0)
    lengths = []
    for i in range(m):
        byte = seg[pos + i // 2]
        lengths.append(byte >> 4 if i % 2 == 0 else byte & 15)
    pos += (m + 1) // 2
    nchunks = -(-n // chunk)
    chunk_bits = [struct.unpack_from("<I", seg, pos + 4 * j)[0] for j in range(nchunks - 1)]
    payload = bits_of(seg[pos + 4 * (nchunks - 1) :])
    # RFC 1951 3.2.2
    bl_count = [0] * 16
    for length in lengths:
        bl_count[length] += 1
    bl_count[0] = 0
    code, next_code = 0, [0] * 16
    for bits in range(1, 16):
        code = (code + bl_count[bits - 1]) << 1
        next_code[bits] = code
    table = {}
    for sym, length in enumerate(lengths):
        if length:
            table[format(next_code[length], f"0{length}b")] = sym
            next_code[length] += 1
    out, start = [], 0
    for j in range(nchunks):
        count = chunk if j < nchunks - 1 else n - chunk * (nchunks - 1)
        pos, cur = start, ""
        while count:
            cur += payload[pos]
            pos += 1
            if cur in table:
                out.append(table[cur])
                cur = ""
                count -= 1
        if j < nchunks - 1:
            assert pos - start == chunk_bits[j]
            start += chunk_bits[j]
    return out


def ans(seg: bytes, n: int, alphabet: int) -> list[int]:
    m, pos = varint(seg, 0)
    counts = []
    for _ in range(m):
        c, pos = varint(seg, pos)
        counts.append(c)
    K = max(alphabet, 2)
    counts += [0] * (K - m)
    scale = float(2**24 - K) / float(sum(counts))
    cdf, prefix = [], 0
    for i, c in enumerate(counts):
        cdf.append(math.floor(float(prefix) * scale) + i)
        prefix += c
    cdf.append(2**24)
    words = list(struct.unpack_from(f"<{(len(seg) - pos) // 4}I", seg, pos))
    state = 0
    if words:
        state = words.pop()
        while words and state < 2**32:
            state = (state << 32) | words.pop()
    out = []
    for _ in range(n):
        q = state % 2**24
        s = max(i for i in range(K) if cdf[i] <= q)
        state = (state >> 24) * (cdf[s + 1] - cdf[s]) + (q - cdf[s])
        if state < 2**32 and words:
            state = (state << 32) | words.pop()
        out.append(s)
    assert state == 0 and not words
    return out


def spec_decode(blob: bytes) -> dict[str, tuple[list[int], list]]:
    assert blob[:4] == b"\x89DCZ" and struct.unpack_from("<H", blob, 4)[0] == 1
    flags, h = struct.unpack_from("<HI", blob, 6)
    assert zlib.crc32(blob[:-4]) == struct.unpack("<I", blob[-4:])[0]
    header_bytes = blob[12 : 12 + h]
    header = json.loads(zlib.decompress(header_bytes) if flags & 1 else header_bytes)
    data = blob[12 + h : -4]

    def seg(at: list[int]) -> bytes:
        return data[at[0] : at[0] + at[1]]

    def stream(s: dict, alphabet: int) -> list[int]:
        if s["coder"] == "fixed":
            return fixed(seg(s["at"]), s["n"], alphabet)
        if s["n"] == 0:
            return []
        if s["coder"] == "huffman":
            return huffman(seg(s["at"]), s["n"], header["chunk"])
        return ans(seg(s["at"]), s["n"], alphabet)

    out = {}
    for t in header["tensors"]:
        numel = math.prod(t["shape"])
        f = "e" if t.get("store") == "float16" else "f"  # section 4, optional key "store"
        if t["enc"] == "dense":
            fmt = "e" if t.get("store") == "float16" else DTYPE_FORMATS[t["dtype"]]
            out[t["name"]] = (t["shape"], list(struct.unpack(f"<{numel}{fmt}", seg(t["data"]))))
            continue
        e = 2 ** t["gap_bits"] - 1
        if t["kept"] == numel:
            positions = list(range(numel))
        else:
            positions, pos = [], -1
            for s in stream(t["gaps"], 2 ** t["gap_bits"]):
                pos += s + 1 if s < e else e
                if s < e:
                    positions.append(pos)
        if t["enc"] == "sparse":
            values = list(struct.unpack(f"<{t['kept']}{f}", seg(t["values"])))
        else:
            codebook = struct.unpack(f"<{t['k']}{f}", seg(t["codebook"]))
            values = [codebook[i] for i in stream(t["indices"], t["k"])]
        dense = [0.0] * numel
        for p, v in zip(positions, values):
            dense[p] = v
        out[t["name"]] = (t["shape"], dense)
    return out


def check_agree(blob: bytes) -> None:
    arrays, _ = decode(blob)
    spec = spec_decode(blob)
    assert list(spec) == list(arrays)
    for name, (shape, values) in spec.items():
        assert list(arrays[name].shape) == shape
        assert arrays[name].reshape(-1).tolist() == values, name


@pytest.mark.parametrize("coder", ["fixed", "huffman", "ans"])
def test_spec_decoder_agrees_on_sample_file(records, coder: str) -> None:
    check_agree(to_bytes(records, {"x": 1}, coder=coder, chunk=37))


@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["fixed", "huffman", "ans"]),
    st.integers(1, 64),
    st.integers(1, 10),
    st.integers(1, 40),
    st.floats(0.0, 1.0),
)
@settings(max_examples=40, deadline=None)
def test_spec_decoder_agrees_on_random_tensors(
    seed: int, coder: str, chunk: int, bits: int, k: int, density: float
) -> None:
    rng = np.random.default_rng(seed)
    numel = int(rng.integers(0, 400))
    positions = np.flatnonzero(rng.random(numel) < density)
    codebook = rng.normal(size=k).astype(np.float32)
    if seed % 2:  # half of the cases: float16-exact payloads, stored as float16
        codebook = codebook.astype(np.float16).astype(np.float32)
    skew = rng.dirichlet(np.full(k, 0.3))
    records = [
        QuantizedTensor("q", (numel,), positions, rng.choice(k, positions.size, p=skew),
                        codebook, bits),
        SparseTensor("s", (numel,), positions, rng.normal(size=positions.size).astype(np.float32),
                     bits),
        DenseTensor("d", rng.integers(-5, 5, size=3).astype(np.int16)),
        DenseTensor("h", rng.integers(-5, 5, size=4).astype(np.float32) / 4),
    ]  # fmt: skip
    check_agree(to_bytes(records, {}, coder=coder, chunk=chunk))
