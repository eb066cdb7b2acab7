"""A second decoder, written from docs/FORMAT.md alone, agrees with the reference one.

Plain Python (ints, floats, json, zlib, struct); it shares no code with the package, so
a disagreement means the spec and the implementation have drifted apart.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.dcz import (
    DenseTensor,
    QuantizedTensor,
    SparseTensor,
    decode,
    open_dcz,
    to_bytes,
)

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


def ans(seg: bytes, n: int, alphabet: int, lanes: int | None = None) -> list[int]:
    m, pos = varint(seg, 0)
    counts = []
    for _ in range(m):
        c, pos = varint(seg, pos)
        counts.append(c)
    if lanes is not None:  # version 2 (section 10.4): lanes of `chunk` symbols
        sizes = [min(lanes, n - i) for i in range(0, n, lanes)]
        words = []
        for _ in range(len(sizes) - 1):
            w, pos = varint(seg, pos)
            words.append(w)
        words.append((len(seg) - pos) // 4 - sum(words))
        table = seg[: varint_end(seg, m)]
        out = []
        for size, w in zip(sizes, words):
            out += ans(table + seg[pos : pos + 4 * w], size, alphabet)
            pos += 4 * w
        return out
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


def varint_end(seg: bytes, m: int) -> int:
    """Offset just past the varint m and the m count varints."""
    pos = varint(seg, 0)[1]
    for _ in range(m):
        pos = varint(seg, pos)[1]
    return pos


def dictionary_from_the_spec() -> bytes:
    """Section 10.2's preset dictionary, read from docs/FORMAT.md itself."""
    doc = (Path(__file__).parents[2] / "docs" / "FORMAT.md").read_text()
    block = doc.split("<!-- dictionary -->", 2)[1]
    return "".join(block.split("```")[1].split("\n")[1:]).strip().encode("ascii")


class RangeDecoder:
    """Section 10.5 (LZMA-style binary range decoder, 16-bit count-based probabilities)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.range = data, 4, 2**32 - 1
        self.code = int.from_bytes((data[:4] + bytes(4))[:4], "big")

    def bit(self, c: list[int]) -> int:
        p1 = ((5 * c[1] + 2) * 65536) // (5 * (c[0] + c[1]) + 4)
        bound = (self.range >> 16) * p1
        if self.code < bound:
            self.range, bit = bound, 1
        else:
            self.code, self.range, bit = self.code - bound, self.range - bound, 0
        while self.range < 2**24:
            nxt = self.data[self.pos] if self.pos < len(self.data) else 0
            self.range, self.code, self.pos = (
                self.range * 256,
                (self.code * 256 + nxt) % 2**32,
                self.pos + 1,
            )
        c[bit] += 1
        if c[0] + c[1] >= 4096:
            c[0], c[1] = (c[0] + 1) // 2, (c[1] + 1) // 2
        return bit


def ctx_positions(seg: bytes, shape: list[int], kept: int) -> list[int]:
    numel = math.prod(shape)
    rows = shape[0] if len(shape) >= 2 else 1
    cols = numel // rows
    rc = RangeDecoder(seg)
    flag_ctx, bit_ctx = [[0, 0], [0, 0]], [[0, 0] for _ in range(36)]
    flags, prev = [], 1
    for _ in range(rows if rows > 1 else 0):
        prev = rc.bit(flag_ctx[prev])
        flags.append(prev)
    flags = flags or [1]
    out, col_count, above = [], [0] * cols, [0] * cols
    for r in range(rows):
        if not flags[r] or len(out) == kept:
            continue
        line, left, in_row = [0] * cols, 0, 0
        for j in range(cols):
            if j == cols - 1 and in_row == 0:
                bit = 1
            else:
                ctx = left + 2 * above[j] + 4 * min(col_count[j], 2) + 12 * min(in_row, 2)
                bit = rc.bit(bit_ctx[ctx])
            if bit:
                line[j], in_row, col_count[j] = 1, in_row + 1, col_count[j] + 1
                out.append(r * cols + j)
                if len(out) == kept:
                    break
            left = bit
        above = line
    return out


def ctx_indices(seg: bytes, positions: list[int], shape: list[int], codebook) -> list[int]:
    k, numel = len(codebook), math.prod(shape)
    cols = numel // (shape[0] if len(shape) >= 2 else 1)
    depth = (k - 1).bit_length()
    if depth == 0:
        return [0] * len(positions)
    rc = RangeDecoder(seg)
    trees = [[[0, 0] for _ in range(2**depth)] for _ in range(3)]
    out = []
    for t, p in enumerate(positions):
        cls = 0
        if t and positions[t - 1] == p - 1 and p % cols:
            cls = 1 if codebook[out[-1]] < 0 else 2
        node = 1
        for _ in range(depth):
            node = 2 * node + rc.bit(trees[cls][node])
        out.append(node - 2**depth)
    return out


def spec_decode(blob: bytes) -> dict[str, tuple[list[int], list]]:
    assert blob[:4] == b"\x89DCZ"
    version = struct.unpack_from("<H", blob, 4)[0]
    assert version in (1, 2)
    flags, h = struct.unpack_from("<HI", blob, 6)
    assert zlib.crc32(blob[:-4]) == struct.unpack("<I", blob[-4:])[0]
    header_bytes = blob[12 : 12 + h]
    if flags & 1 and version == 1:
        header_bytes = zlib.decompress(header_bytes)
    elif flags & 1:
        d = zlib.decompressobj(-15, zdict=dictionary_from_the_spec())
        header_bytes = d.decompress(header_bytes) + d.flush()
    header = json.loads(header_bytes)
    data = blob[12 + h : -4]
    cursor = [0]

    def seg(at: list[int] | int) -> bytes:
        if version == 1:
            return data[at[0] : at[0] + at[1]]
        cursor[0] += at  # version 2: lengths only, segments back to back (section 10.3)
        return data[cursor[0] - at : cursor[0]]

    def stream(s: dict, alphabet: int, segment: bytes) -> list[int]:
        if s["coder"] == "fixed":
            return fixed(segment, s["n"], alphabet)
        if s["n"] == 0:
            return []
        if s["coder"] == "huffman":
            return huffman(segment, s["n"], header["chunk"])
        return ans(segment, s["n"], alphabet, header["chunk"] if version == 2 else None)

    out = {}
    for t in header["tensors"]:
        numel = math.prod(t["shape"])
        f = "e" if t.get("store") == "float16" else "f"  # section 4, optional key "store"
        if t["enc"] == "dense":
            fmt = "e" if t.get("store") == "float16" else DTYPE_FORMATS[t["dtype"]]
            out[t["name"]] = (t["shape"], list(struct.unpack(f"<{numel}{fmt}", seg(t["data"]))))
            continue
        codebook = struct.unpack(f"<{t['k']}{f}", seg(t["codebook"])) if "k" in t else None
        gap_seg = seg(t["gaps"]["at"])
        if t["gaps"]["coder"] == "ctx":
            positions = ctx_positions(gap_seg, t["shape"], t["kept"])
        elif t["kept"] == numel:
            positions = list(range(numel))
        else:
            e = 2 ** t["gap_bits"] - 1
            positions, pos = [], -1
            for s in stream(t["gaps"], 2 ** t["gap_bits"], gap_seg):
                pos += s + 1 if s < e else e
                if s < e:
                    positions.append(pos)
        if t["enc"] == "sparse":
            values = list(struct.unpack(f"<{t['kept']}{f}", seg(t["values"])))
        else:
            idx_seg = seg(t["indices"]["at"])
            if t["indices"]["coder"] == "ctx":
                idx = ctx_indices(idx_seg, positions, t["shape"], codebook)
            else:
                idx = stream(t["indices"], t["k"], idx_seg)
            values = [codebook[i] for i in idx]
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


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("coder", ["fixed", "huffman", "ans", "ctx"])
def test_spec_decoder_agrees_on_sample_file(records, coder: str, version: int) -> None:
    if coder == "ctx" and version == 1:
        pytest.skip("ctx is version 2 only")
    check_agree(to_bytes(records, {"x": 1}, coder=coder, chunk=37, version=version))


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5"])
def test_spec_decoder_agrees_on_the_lenets_in_version_2(name: str) -> None:
    """The shipped files re-encoded: ctx on large layers, every coder somewhere."""
    f = open_dcz(Path(__file__).parent.parent / "data" / f"{name}.v1.dcz")
    blob = to_bytes(f.records(), f.metadata, coder="best", chunk=f.chunk)
    assert "ctx" in {s.coder for t in open_dcz(blob).tensors for s in t.streams.values()}
    check_agree(blob)


@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["fixed", "huffman", "ans", "ctx"]),
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
    for version in (1, 2) if coder != "ctx" else (2,):
        check_agree(to_bytes(records, {}, coder=coder, chunk=chunk, version=version))
