"""Context-adaptive binary arithmetic coding of positions and cluster indices (``ctx``).

The order-0 coders (``huffman``, ``ans``) code each gap or index alone. Where the
non-zeros of a pruned layer sit is structured: whole rows (dead neurons) and columns
(unused inputs, e.g. MNIST's border pixels) are empty, and a kept weight's neighbours
tell about it. Here the kept-entry map is coded bit by bit with an adaptive binary range
coder whose probability depends on a small *context* built from what is already decoded;
the cluster indices are coded as binary trees with a context from the left neighbour.
Measured on the shipped LeNets (``benchmarks/codec_vs_nnc.py``), this beats the order-0
gap streams on the large sparse layers; the writer picks per layer whichever is smaller.

The range coder is the LZMA one (32-bit ``range`` and ``low`` with carry propagation
through a cached byte), with 16-bit probabilities from per-context counts. Everything is
plain Python integers, so ``docs/FORMAT.md`` section 6.4 pins it down to the bit; it runs
at about 1 microsecond per binary decision, which is why the format bounds the elements
of a ``ctx``-coded tensor (:data:`MAX_CTX_ELEMENTS`) and the writer tries it only on
tensors of at most :data:`TRY_CTX_ELEMENTS` elements.

**Positions** of a tensor of shape ``(R, ...)`` seen as ``R`` rows of ``C = numel / R``
columns (a 0-d or 1-d tensor is one row): first one flag per row (row has a kept entry;
context: the previous row's flag), then, row by row, one bit per column of each non-empty
row (context: the left bit, the bit above in the previous non-empty row, the number of
kept entries above in this column (0, 1, 2+), and so far in this row (0, 1, 2+)). A
non-empty row's last bit is not coded if the row has no kept entry yet (it must be 1),
and coding stops after the ``kept``-th entry.

**Indices** ``(kept,)`` over ``k`` centroids: each index as ``L = bit_length(k - 1)``
bits, most significant first, each bit with the context (tree node, neighbour class):
neighbour class 0 if the entry just left of it (same row) is not kept, else 1 when that
neighbour's centroid is negative and 2 when it is not.
"""

from __future__ import annotations

import math

import numpy as np

from deep_compression.errors import FormatError

__all__ = [
    "MAX_CTX_ELEMENTS",
    "TRY_CTX_ELEMENTS",
    "encode_positions",
    "decode_positions",
    "encode_indices",
    "decode_indices",
]

MAX_CTX_ELEMENTS = 1 << 22  # decoder work bound: ~4M binary decisions, a few seconds
TRY_CTX_ELEMENTS = 1 << 19  # the writer's default: tensors above this keep order-0 coders
_COUNT_LIMIT = 1 << 12  # counts are halved at this total: the model keeps adapting
_TOP = 1 << 24


def _p1(c: list[int]) -> int:
    """P(bit = 1) in units of 2**-16 from the counts ``[n0, n1]`` (prior 0.4 each)."""
    return ((5 * c[1] + 2) << 16) // (5 * (c[0] + c[1]) + 4)


def _update(c: list[int], bit: int) -> None:
    c[bit] += 1
    if c[0] + c[1] >= _COUNT_LIMIT:
        c[0] = (c[0] + 1) >> 1
        c[1] = (c[1] + 1) >> 1


class _Encoder:
    def __init__(self) -> None:
        self.low = 0
        self.range = 0xFFFFFFFF
        self.cache = 0
        self.pending = 1  # the cache byte plus this many 0xFF bytes wait for a carry
        self.out = bytearray()

    def _shift(self) -> None:
        if self.low < 0xFF000000 or self.low >= 1 << 32:
            carry = self.low >> 32
            self.out.append((self.cache + carry) & 0xFF)
            self.out.extend(bytes([(0xFF + carry) & 0xFF]) * (self.pending - 1))
            self.pending = 0
            self.cache = (self.low >> 24) & 0xFF
        self.pending += 1
        self.low = (self.low << 8) & 0xFFFFFFFF

    def bit(self, c: list[int], bit: int) -> None:
        # _p1 and _update inlined: this runs once per element of a ctx-coded tensor.
        n0, n1 = c
        bound = (self.range >> 16) * (((5 * n1 + 2) << 16) // (5 * (n0 + n1) + 4))
        if bit:
            self.range = bound
            n1 += 1
        else:
            self.low += bound
            self.range -= bound
            n0 += 1
        while self.range < _TOP:
            self.range <<= 8
            self._shift()
        if n0 + n1 >= _COUNT_LIMIT:
            n0, n1 = (n0 + 1) >> 1, (n1 + 1) >> 1
        c[0] = n0
        c[1] = n1

    def finish(self) -> bytes:
        # Any value in [low, low + range) decodes the same: take the one with the most
        # trailing zero bits, which the trimming below then drops.
        for s in (32, 24, 16, 8, 0):
            v = ((self.low + (1 << s) - 1) >> s) << s
            if v < self.low + self.range:
                self.low = v
                break
        for _ in range(5):
            self._shift()
        out = bytes(self.out[1:])  # the first byte is always 0 (the value is below 1)
        return out.rstrip(b"\x00")


class _Decoder:
    def __init__(self, data: bytes | memoryview, where: str) -> None:
        self.data = bytes(data)
        if self.data.endswith(b"\x00"):
            raise FormatError(f"{where}: ctx segment ends with a zero byte (not canonical)")
        self.pos = 4
        self.range = 0xFFFFFFFF
        self.code = int.from_bytes(self.data[:4].ljust(4, b"\x00"), "big")

    def bit(self, c: list[int]) -> int:
        n0, n1 = c  # _p1 and _update inlined (one call per element)
        rng = self.range
        bound = (rng >> 16) * (((5 * n1 + 2) << 16) // (5 * (n0 + n1) + 4))
        if self.code < bound:
            rng = bound
            bit = 1
            n1 += 1
        else:
            self.code -= bound
            rng -= bound
            bit = 0
            n0 += 1
        if rng < _TOP:
            data = self.data
            while rng < _TOP:
                rng <<= 8
                nxt = data[self.pos] if self.pos < len(data) else 0
                self.code = ((self.code << 8) | nxt) & 0xFFFFFFFF
                self.pos += 1
        self.range = rng
        if n0 + n1 >= _COUNT_LIMIT:
            n0, n1 = (n0 + 1) >> 1, (n1 + 1) >> 1
        c[0] = n0
        c[1] = n1
        return bit

    def check_end(self, where: str) -> None:
        # The encoder's output is read up to 4 bytes past its end (as zeros); more data
        # than the decoder ever looked at is garbage.
        if len(self.data) > self.pos:
            raise FormatError(f"{where}: ctx segment has bytes after its last symbol")


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    numel = math.prod(shape)
    rows = shape[0] if len(shape) >= 2 and numel else 1
    return rows, (numel // rows if rows else 0)


def _position_contexts() -> tuple[list[list[int]], list[list[int]]]:
    return [[0, 0] for _ in range(2)], [[0, 0] for _ in range(36)]


def encode_positions(positions: np.ndarray, shape: tuple[int, ...]) -> bytes:
    """The ``ctx`` segment of the kept flat positions (``(kept,)`` increasing ints)."""
    rows, cols = _rows(shape)
    kept = int(len(positions))
    enc = _Encoder()
    if kept == 0:
        return b""
    row_ctx, bit_ctx = _position_contexts()
    pos = np.asarray(positions, dtype=np.int64)
    r_of = pos // cols
    nonempty = np.zeros(rows, dtype=bool)
    nonempty[r_of] = True
    if rows > 1:
        prev = 1
        for flag in nonempty.tolist():
            enc.bit(row_ctx[prev], int(flag))
            prev = int(flag)
    col_count = [0] * cols
    above = [0] * cols
    done = 0
    starts = np.searchsorted(r_of, np.arange(rows + 1))
    for r in np.flatnonzero(nonempty).tolist():
        line = [0] * cols
        for p in (pos[starts[r] : starts[r + 1]] - r * cols).tolist():
            line[p] = 1
        left = 0
        in_row = 0
        for j in range(cols):
            bit = line[j]
            if not (j == cols - 1 and in_row == 0):
                cc = col_count[j]
                ctx = (
                    left
                    + 2 * above[j]
                    + 4 * (cc if cc < 2 else 2)
                    + 12 * (in_row if in_row < 2 else 2)
                )
                enc.bit(bit_ctx[ctx], bit)
            if bit:
                in_row += 1
                done += 1
                col_count[j] += 1
                if done == kept:
                    return enc.finish()
            left = bit
        above = line
    raise AssertionError("positions beyond their tensor")  # the writer checked them


def decode_positions(
    segment: bytes | memoryview, shape: tuple[int, ...], kept: int, where: str
) -> np.ndarray:
    """Kept flat positions ``(kept,)`` int64 from a ``ctx`` segment.

    Raises:
        FormatError: the segment does not describe exactly ``kept`` entries inside the
            tensor, or is not canonical.
    """
    rows, cols = _rows(shape)
    if kept == 0:
        if len(segment):
            raise FormatError(f"{where}: no kept entries but a {len(segment)}-byte ctx segment")
        return np.zeros(0, dtype=np.int64)
    dec = _Decoder(segment, where)
    row_ctx, bit_ctx = _position_contexts()
    if rows > 1:
        flags = []
        prev = 1
        for _ in range(rows):
            prev = dec.bit(row_ctx[prev])
            flags.append(prev)
    else:
        flags = [1]
    out: list[int] = []
    col_count = [0] * cols
    above = [0] * cols
    for r in range(rows):
        if not flags[r]:
            continue
        if len(out) == kept:
            raise FormatError(f"{where}: a row flagged non-empty holds no kept entry")
        line = [0] * cols
        left = 0
        in_row = 0
        base = r * cols
        for j in range(cols):
            if j == cols - 1 and in_row == 0:
                bit = 1
            else:
                cc = col_count[j]
                ctx = (
                    left
                    + 2 * above[j]
                    + 4 * (cc if cc < 2 else 2)
                    + 12 * (in_row if in_row < 2 else 2)
                )
                bit = dec.bit(bit_ctx[ctx])
            if bit:
                line[j] = 1
                in_row += 1
                col_count[j] += 1
                out.append(base + j)
                if len(out) == kept:
                    break
            left = bit
        above = line
    if len(out) != kept:
        raise FormatError(f"{where}: ctx positions hold {len(out)} entries, not {kept}")
    if any(flags[r] for r in range(out[-1] // cols + 1, rows)):
        raise FormatError(f"{where}: a row flagged non-empty holds no kept entry")
    dec.check_end(where)
    return np.asarray(out, dtype=np.int64)


def _neighbour_classes(
    positions: np.ndarray, indices: np.ndarray, codebook: np.ndarray, cols: int
) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.int64)
    cls = np.zeros(pos.size, dtype=np.int64)
    if pos.size > 1:
        has_left = (np.diff(pos) == 1) & (pos[1:] % cols != 0)
        neg = np.asarray(codebook)[np.asarray(indices[:-1], dtype=np.int64)] < 0
        cls[1:] = np.where(has_left, np.where(neg, 1, 2), 0)
    return cls


def encode_indices(
    indices: np.ndarray, positions: np.ndarray, shape: tuple[int, ...], codebook: np.ndarray
) -> bytes:
    """The ``ctx`` segment of the cluster indices (``(kept,)`` ints in ``[0, k)``)."""
    k = int(np.asarray(codebook).size)
    depth = (k - 1).bit_length()
    if depth == 0 or len(indices) == 0:
        return b""
    _, cols = _rows(shape)
    cls = _neighbour_classes(positions, indices, codebook, cols).tolist()
    ctx = [[[0, 0] for _ in range(1 << depth)] for _ in range(3)]
    enc = _Encoder()
    for v, c in zip(np.asarray(indices, dtype=np.int64).tolist(), cls):
        tree = ctx[c]
        node = 1
        for b in range(depth - 1, -1, -1):
            bit = (v >> b) & 1
            enc.bit(tree[node], bit)
            node = 2 * node + bit
    return enc.finish()


def decode_indices(
    segment: bytes | memoryview,
    positions: np.ndarray,
    shape: tuple[int, ...],
    codebook: np.ndarray,
    where: str,
) -> np.ndarray:
    """Cluster indices ``(kept,)`` int32 from a ``ctx`` segment (positions decoded first).

    Raises:
        FormatError: an index ``>= k``, or a segment that is not canonical.
    """
    k = int(np.asarray(codebook).size)
    depth = (k - 1).bit_length()
    n = len(positions)
    if depth == 0 or n == 0:
        if len(segment):
            raise FormatError(
                f"{where}: ctx indices need no bytes here, segment has {len(segment)}"
            )
        return np.zeros(n, dtype=np.int32)
    _, cols = _rows(shape)
    pos = np.asarray(positions, dtype=np.int64).tolist()
    negative = (np.asarray(codebook) < 0).tolist()
    ctx = [[[0, 0] for _ in range(1 << depth)] for _ in range(3)]
    dec = _Decoder(segment, where)
    out = [0] * n
    for t in range(n):
        c = 0
        if t and pos[t - 1] == pos[t] - 1 and pos[t] % cols:
            c = 1 if negative[out[t - 1]] else 2
        tree = ctx[c]
        node = 1
        for _ in range(depth):
            node = 2 * node + dec.bit(tree[node])
        v = node - (1 << depth)
        if v >= k:
            raise FormatError(f"{where}: ctx cluster index {v} >= k = {k}")
        out[t] = v
    dec.check_end(where)
    return np.asarray(out, dtype=np.int32)
