"""rANS (range asymmetric numeral systems) coding of a symbol stream, in numpy alone.

Closer to the entropy than Huffman (no whole-bit code lengths, so no 1-bit floor on skewed
streams), at the price of a count table. The bit stream is the one of constriction's
``stream.stack.AnsCoder`` (rANS, 32-bit words, 64-bit state, 24-bit probabilities) with a
``Categorical(counts.astype(float64), perfect=False)`` model, which is how version-1 files
were written; this module encodes and decodes it itself (``docs/FORMAT.md`` section 6.3
gives the rules), so reading a ``.dcz`` needs no compiled extension. A test checks the
bits against constriction when it is installed.

A stream is cut into *lanes* of ``chunk`` symbols (the last may be shorter); each lane is
an independent rANS stream under the same model. One lane is the version-1 layout. Many
lanes (format version 2) let the decoder advance all of them in lockstep over numpy
vectors, so a 10M-symbol layer takes ``chunk`` vector steps instead of 10M Python steps;
a file with few lanes is decoded by a plain Python loop, which is faster per symbol.

Segment layout::

    varint m | m varint counts (sum = n, last > 0)
    | (version 2 only) nlanes - 1 varint word counts of lanes 0 .. nlanes-2
    | u32 LE words of lane 0, lane 1, ... (each lane's words as constriction's
      get_compressed(): decoded from the lane's end)
"""

from __future__ import annotations

import bisect

import numpy as np

from deep_compression.coding.bits import decode_varint, encode_varints
from deep_compression.errors import FormatError

__all__ = ["PRECISION", "model", "encode_stream", "decode_stream", "parse_counts"]

PRECISION = 24  # probabilities in units of 2**-24 (constriction's default)
_MASK = (1 << PRECISION) - 1
_LOCKSTEP_MIN_LANES = 8  # below this, a Python loop per lane is faster than numpy steps


def model(counts: np.ndarray, alphabet: int) -> np.ndarray:
    """The cumulative table ``cdf`` (``(K + 1,)`` int64, ``K = max(alphabet, 2)``).

    ``cdf[i] = floor(S_i * ((2**24 - K) / T)) + i`` in IEEE double arithmetic, with ``S_i``
    the prefix sums of ``counts`` (zero-padded to ``K``) and ``T`` their total: every
    symbol, even an absent one, gets a probability of at least ``2**-24`` (constriction's
    ``from_floating_point_probabilities_fast``, reproduced operation for operation).
    """
    k = max(alphabet, 2)
    c = np.zeros(k, dtype=np.int64)
    c[: counts.size] = counts
    prefix = np.concatenate([[0], np.cumsum(c)[:-1]])
    scale = float((1 << PRECISION) - k) / float(c.sum())
    cdf = np.empty(k + 1, dtype=np.int64)
    # float64 products, floored: prefix sums < 2**53 are exact doubles.
    cdf[:k] = np.floor(prefix.astype(np.float64) * scale).astype(np.int64) + np.arange(k)
    cdf[k] = 1 << PRECISION
    return cdf


def _encode_lane(symbols: list[int], cdf: list[int]) -> list[int]:
    state = 0
    words: list[int] = []
    for s in reversed(symbols):
        lo = cdf[s]
        f = cdf[s + 1] - lo
        if (state >> 40) >= f:
            words.append(state & 0xFFFFFFFF)
            state >>= 32
        state = ((state // f) << PRECISION) | (lo + state % f)
    if state:
        words.append(state & 0xFFFFFFFF)
        if state >> 32:
            words.append(state >> 32)
    return words


def _encode_lockstep(symbols: np.ndarray, lane: int, cdf: np.ndarray) -> list[np.ndarray]:
    """:func:`_encode_lane` on every lane at once (reverse order, one vector step each)."""
    n = symbols.size
    nlanes = -(-n // lane)
    sizes = np.full(nlanes, lane, dtype=np.int64)
    sizes[-1] = n - lane * (nlanes - 1)
    padded = np.zeros(nlanes * lane, dtype=np.int64)
    padded[:n] = symbols
    grid = padded.reshape(nlanes, lane)
    lo_t, f_t = cdf[:-1].astype(np.uint64), np.diff(cdf).astype(np.uint64)
    # A lane pushes at most one word per symbol, plus two for the final state.
    buf = np.zeros((nlanes, lane + 2), dtype=np.uint32)
    count = np.zeros(nlanes, dtype=np.int64)
    state = np.zeros(nlanes, dtype=np.uint64)
    low32, s32, s40 = np.uint64(0xFFFFFFFF), np.uint64(32), np.uint64(40)
    rows = np.arange(nlanes)
    for j in range(lane - 1, -1, -1):
        active = nlanes if sizes[-1] > j else nlanes - 1
        st = state[:active]
        s = grid[:active, j]
        f, lo = f_t[s], lo_t[s]
        push = np.flatnonzero((st >> s40) >= f)
        if push.size:
            buf[push, count[push]] = (st[push] & low32).astype(np.uint32)
            count[push] += 1
            st[push] >>= s32
        state[:active] = ((st // f) << np.uint64(PRECISION)) | (lo + st % f)
    nz = state != 0
    buf[rows[nz], count[nz]] = (state[nz] & low32).astype(np.uint32)
    count[nz] += 1
    hi = (state >> s32) != 0
    buf[rows[hi], count[hi]] = (state[hi] >> s32).astype(np.uint32)
    count[hi] += 1
    return [buf[i, : count[i]].astype("<u4") for i in range(nlanes)]


def encode_stream(
    symbols: np.ndarray, alphabet: int, chunk: int | None = None
) -> bytes:
    """The ANS segment of ``symbols`` (``(n,)`` ints in ``[0, alphabet)``); empty if n = 0.

    ``chunk=None`` writes one lane (version 1); an integer ``chunk`` writes lanes of that
    many symbols with their word counts (version 2).
    """
    symbols = np.asarray(symbols).astype(np.int64, copy=False).reshape(-1)
    n = symbols.size
    if n == 0:
        return b""
    counts = np.bincount(symbols, minlength=alphabet)
    m = int(np.flatnonzero(counts)[-1]) + 1
    cdf = model(counts, alphabet)
    lane = n if chunk is None else chunk
    if -(-n // lane) < _LOCKSTEP_MIN_LANES:
        lanes = [
            np.asarray(_encode_lane(symbols[i : i + lane].tolist(), cdf.tolist()), dtype="<u4")
            for i in range(0, n, lane)
        ]
    else:
        lanes = _encode_lockstep(symbols, lane, cdf)
    table = encode_varints([m, *counts[:m].tolist()])
    if chunk is not None:
        table += encode_varints([w.size for w in lanes[:-1]])
    return table + b"".join(w.tobytes() for w in lanes)


def parse_counts(
    segment: bytes | memoryview, n: int, alphabet: int, where: str
) -> tuple[np.ndarray, int]:
    """The count table at the start of a segment: ``((alphabet,) int64 counts, end offset)``.

    Raises:
        FormatError: a table size outside ``[1, alphabet]``, a last count of zero, or
            counts that do not sum to ``n``.
    """
    m, pos = decode_varint(segment, 0, where)
    if not 1 <= m <= alphabet:
        raise FormatError(f"{where}: ANS count table size {m} outside [1, alphabet {alphabet}]")
    counts = np.zeros(alphabet, dtype=np.int64)
    total = 0
    for i in range(m):  # m <= alphabet <= 65536 varints, and each is at least one byte
        counts[i], pos = decode_varint(segment, pos, where)
        total += int(counts[i])
    if counts[m - 1] == 0:
        raise FormatError(f"{where}: ANS count table ends with a zero count (not canonical)")
    if total != n:
        raise FormatError(f"{where}: ANS counts sum to {total}, the stream has {n} symbols")
    return counts, pos


def _decode_lane(words: np.ndarray, n: int, cdf: list[int], where: str) -> list[int]:
    """One lane, a Python loop (the reference algorithm of FORMAT.md 6.3)."""
    w = words.tolist()
    state = 0
    if w:
        state = w.pop()
        while w and state < 1 << 32:
            state = (state << 32) | w.pop()
    out = [0] * n
    right = bisect.bisect_right
    for i in range(n):
        q = state & _MASK
        s = right(cdf, q) - 1
        lo = cdf[s]
        state = (state >> PRECISION) * (cdf[s + 1] - lo) + (q - lo)
        if state < 1 << 32 and w:
            state = (state << 32) | w.pop()
        out[i] = s
    if w or state:
        raise FormatError(f"{where}: ANS data does not end after {n} symbols")
    return out


def _decode_lockstep(
    words: np.ndarray, starts: np.ndarray, ends: np.ndarray, sizes: np.ndarray,
    cdf: np.ndarray, where: str,
) -> np.ndarray:
    """All lanes at once: step ``j`` decodes symbol ``j`` of every lane still running.

    ``words``: every lane's words back to back; lane ``i`` owns ``words[starts[i]:ends[i]]``
    and decodes ``sizes[i]`` symbols (non-increasing: only the last lane is shorter).
    """
    w = words.astype(np.uint64)
    one32 = np.uint64(1 << 32)
    ptr = ends.astype(np.int64).copy()  # next word to take is w[ptr - 1]
    lo_bound = starts.astype(np.int64)
    state = np.zeros(ptr.size, dtype=np.uint64)
    have = ptr > lo_bound
    state[have] = w[ptr[have] - 1]
    ptr[have] -= 1
    more = (ptr > lo_bound) & (state < one32)
    state[more] = (state[more] << np.uint64(32)) | w[ptr[more] - 1]
    ptr[more] -= 1
    freq = np.diff(cdf).astype(np.uint64)
    cdf_u = cdf.astype(np.uint64)
    out = np.empty(int(sizes.sum()), dtype=np.int32)
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    mask, shift = np.uint64(_MASK), np.uint64(PRECISION)
    active = ptr.size
    for j in range(int(sizes.max())):
        while active and sizes[active - 1] <= j:  # the short last lane drops out
            active -= 1
        st = state[:active]
        q = st & mask
        s = np.searchsorted(cdf, q.astype(np.int64), side="right") - 1
        st = (st >> shift) * freq[s] + (q - cdf_u[s])
        p = ptr[:active]
        need = np.flatnonzero((st < one32) & (p > lo_bound[:active]))
        if need.size:
            p[need] -= 1
            st[need] = (st[need] << np.uint64(32)) | w[p[need]]
        state[:active] = st
        out[base[:active] + j] = s
    if np.any(state != 0) or np.any(ptr != lo_bound):
        raise FormatError(f"{where}: ANS data does not end after its symbols")
    return out


def decode_stream(
    segment: bytes | memoryview, n: int, alphabet: int, where: str, chunk: int | None = None
) -> np.ndarray:
    """Decode ``n`` symbols from an ANS segment; returns ``(n,)`` int32.

    ``chunk=None``: one lane (version 1); else lanes of ``chunk`` symbols (version 2).

    Raises:
        FormatError: a bad count table (sum must be ``n``), a bad lane table, a word area
            that is not whole ``u32`` words, a lane that ends in a zero word, or data left
            over after the symbols.
    """
    if n == 0:
        if len(segment):
            raise FormatError(f"{where}: empty stream must have an empty segment")
        return np.zeros(0, dtype=np.int32)
    counts, pos = parse_counts(segment, n, alphabet, where)
    lane = n if chunk is None else chunk
    nlanes = -(-n // lane)
    lane_words = []
    for _ in range(nlanes - 1):  # nlanes <= n <= the header's bound on n
        c, pos = decode_varint(segment, pos, where)
        lane_words.append(c)
    rest = len(segment) - pos
    if rest % 4:  # (zero words is legal: a lane of symbol 0 alone can encode to nothing)
        raise FormatError(f"{where}: ANS data of {rest} bytes is not a whole number of words")
    total_words = rest // 4
    if sum(lane_words) > total_words:
        raise FormatError(f"{where}: ANS lane table claims more words than the segment holds")
    lane_words.append(total_words - sum(lane_words))
    words = np.frombuffer(segment, dtype="<u4", offset=pos).astype(np.uint32)
    ends = np.cumsum(lane_words)
    starts = ends - np.asarray(lane_words, dtype=np.int64)
    nonempty = ends > starts
    if np.any(words[ends[nonempty] - 1] == 0):
        raise FormatError(f"{where}: invalid ANS data (a lane ends in a zero word)")
    cdf = model(counts, alphabet)
    sizes = np.full(nlanes, lane, dtype=np.int64)
    sizes[-1] = n - lane * (nlanes - 1)
    if nlanes < _LOCKSTEP_MIN_LANES:
        cdf_l = cdf.tolist()
        parts = [
            _decode_lane(words[a:b], int(k), cdf_l, where)
            for a, b, k in zip(starts.tolist(), ends.tolist(), sizes.tolist())
        ]
        symbols = np.asarray([s for p in parts for s in p], dtype=np.int32)
    else:
        symbols = _decode_lockstep(words, starts, ends, sizes, cdf, where)
    # ANS decodes *something* from any words; the stored counts must match what came out.
    if symbols.max() >= alphabet or not np.array_equal(
        np.bincount(symbols, minlength=alphabet), counts
    ):
        raise FormatError(f"{where}: decoded ANS symbols disagree with the count table")
    return symbols
