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
from dataclasses import dataclass

import numpy as np

from deep_compression.coding.bits import decode_varint, encode_varints
from deep_compression.errors import FormatError

__all__ = [
    "PRECISION",
    "AnsStream",
    "model",
    "encode_stream",
    "encode_streams",
    "parse_counts",
    "parse_stream",
    "decode_streams",
    "decode_stream",
]

PRECISION = 24  # probabilities in units of 2**-24 (constriction's default)
_MASK = (1 << PRECISION) - 1
_LOCKSTEP_MIN_LANES = 8  # below this, a Python loop per lane is faster than numpy steps
# Lockstep runs max(lane size) steps: a one-lane (version-1) stream longer than this is
# decoded by the Python loop instead, not by millions of vector steps.
_MAX_LANE = 1 << 16


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


def _encode_lockstep(
    streams: list[np.ndarray], cdfs: list[np.ndarray], lane: int
) -> list[list[np.ndarray]]:
    """:func:`_encode_lane` on every lane of every stream at once (reverse order, one
    vector step per symbol position): ``lane`` steps for a whole file."""
    sizes_l, table_l, first_l = [], [], []
    for t, sym in enumerate(streams):
        n = sym.size
        k = -(-n // lane)
        sz = np.full(k, lane, dtype=np.int64)
        sz[-1] = n - lane * (k - 1)
        sizes_l.append(sz)
        table_l.append(np.full(k, t))
        first_l.append(np.arange(k) * lane)
    sizes = np.concatenate(sizes_l)
    table = np.concatenate(table_l)
    first = np.concatenate(first_l)  # index of each lane's first symbol in its stream
    offsets = np.cumsum([0] + [c.size - 1 for c in cdfs])
    g_lo = np.concatenate([c[:-1] for c in cdfs]).astype(np.uint64)
    g_freq = np.concatenate([np.diff(c) for c in cdfs]).astype(np.uint64)
    order = np.argsort(-sizes, kind="stable")  # longest lanes first: active = a prefix
    sizes, table, first = sizes[order], table[order], first[order]
    nlanes = sizes.size
    # (nlanes, lane) grid of global table indices (offset + symbol), padded past a lane's end.
    grid = np.zeros((nlanes, lane), dtype=np.int32)
    for i in range(nlanes):
        t = int(table[i])
        grid[i, : sizes[i]] = streams[t][first[i] : first[i] + sizes[i]] + offsets[t]
    buf = np.zeros((nlanes, lane + 2), dtype=np.uint32)  # <= one word a symbol, + 2
    count = np.zeros(nlanes, dtype=np.int64)
    state = np.zeros(nlanes, dtype=np.uint64)
    low32, s32, s40 = np.uint64(0xFFFFFFFF), np.uint64(32), np.uint64(40)
    rows = np.arange(nlanes)
    active = nlanes
    for j in range(lane - 1, -1, -1):
        active = int(np.searchsorted(-sizes, -j, side="left"))  # lanes with size > j
        st = state[:active]
        g = grid[:active, j]
        f, lo = g_freq[g], g_lo[g]
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
    out: list[list[np.ndarray]] = [[] for _ in streams]
    for i in np.lexsort((first, table)).tolist():  # back to stream order, lane order
        out[int(table[i])].append(buf[i, : count[i]].astype("<u4"))
    return out


def encode_streams(streams: list[tuple[np.ndarray, int]], chunk: int | None = None) -> list[bytes]:
    """:func:`encode_stream` of many ``(symbols, alphabet)`` streams; with lanes
    (``chunk`` given) and at least 8 lanes in all, every lane is encoded in one lockstep."""
    syms = [np.asarray(s).astype(np.int64, copy=False).reshape(-1) for s, _ in streams]
    busy = [i for i, s in enumerate(syms) if s.size]
    lanes = sum(-(-syms[i].size // chunk) for i in busy) if chunk else 0
    if chunk is None or lanes < _LOCKSTEP_MIN_LANES:
        return [encode_stream(s, a, chunk) for s, (_, a) in zip(syms, streams)]
    cdfs, tables = [], []
    for i in busy:
        counts = np.bincount(syms[i], minlength=streams[i][1])
        m = int(np.flatnonzero(counts)[-1]) + 1
        cdfs.append(model(counts, streams[i][1]))
        tables.append(encode_varints([m, *counts[:m].tolist()]))
    lanes_words = _encode_lockstep([syms[i] for i in busy], cdfs, chunk)
    out = [b""] * len(streams)
    for i, table, words in zip(busy, tables, lanes_words):
        sizes = encode_varints([w.size for w in words[:-1]])
        out[i] = table + sizes + b"".join(w.tobytes() for w in words)
    return out


def encode_stream(symbols: np.ndarray, alphabet: int, chunk: int | None = None) -> bytes:
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
        lanes = _encode_lockstep([symbols], [cdf], lane)[0]
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


@dataclass(frozen=True)
class AnsStream:
    """A parsed, validated ANS segment, ready for :func:`decode_streams`.

    ``words``: every lane's words back to back; lane ``i`` owns ``words[starts[i]:ends[i]]``
    and decodes ``sizes[i]`` symbols.
    """

    n: int
    alphabet: int
    counts: np.ndarray
    cdf: np.ndarray
    words: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    sizes: np.ndarray
    where: str


def parse_stream(
    segment: bytes | memoryview, n: int, alphabet: int, where: str, chunk: int | None = None
) -> AnsStream:
    """Validate an ANS segment's tables and split its words into lanes (nothing decoded).

    ``chunk=None``: one lane (version 1); else lanes of ``chunk`` symbols (version 2).

    Raises:
        FormatError: a bad count table (sum must be ``n``), a bad lane table, a word area
            that is not whole ``u32`` words, or a lane that ends in a zero word.
    """
    if n == 0:
        if len(segment):
            raise FormatError(f"{where}: empty stream must have an empty segment")
        z = np.zeros(0, dtype=np.int64)
        return AnsStream(0, alphabet, z, z, np.zeros(0, np.uint32), z, z, z, where)
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
    ends = np.cumsum(lane_words).astype(np.int64)
    starts = ends - np.asarray(lane_words, dtype=np.int64)
    nonempty = ends > starts
    if np.any(words[ends[nonempty] - 1] == 0):
        raise FormatError(f"{where}: invalid ANS data (a lane ends in a zero word)")
    sizes = np.full(nlanes, lane, dtype=np.int64)
    sizes[-1] = n - lane * (nlanes - 1)
    return AnsStream(
        n, alphabet, counts, model(counts, alphabet), words, starts, ends, sizes, where
    )


def _decode_lockstep(streams: list[AnsStream]) -> list[np.ndarray]:
    """Every lane of every stream at once: step ``j`` decodes symbol ``j`` of each lane
    still running, so a whole file takes ``max lane size`` vector steps."""
    # Global tables: table t's cdf shifted by t * 2**24 keeps one sorted array to search.
    offsets = np.cumsum([0] + [st.cdf.size - 1 for st in streams])
    g_cdf = np.concatenate([st.cdf[:-1] + (t << PRECISION) for t, st in enumerate(streams)]).astype(
        np.int64
    )
    g_lo = np.concatenate([st.cdf[:-1] for st in streams]).astype(np.uint64)
    g_freq = np.concatenate([np.diff(st.cdf) for st in streams]).astype(np.uint64)
    word_base = np.cumsum([0] + [st.words.size for st in streams])
    w = np.concatenate([st.words for st in streams]).astype(np.uint64)
    starts = np.concatenate([st.starts + word_base[t] for t, st in enumerate(streams)])
    ends = np.concatenate([st.ends + word_base[t] for t, st in enumerate(streams)])
    sizes = np.concatenate([st.sizes for st in streams])
    table = np.concatenate([np.full(st.sizes.size, t) for t, st in enumerate(streams)])
    sym_base = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = np.argsort(-sizes, kind="stable")  # longest lanes first: active = a prefix
    starts, ends, sizes, table, sym_base = (
        starts[order],
        ends[order],
        sizes[order],
        table[order],
        sym_base[order],
    )
    shift_t = table.astype(np.int64) << PRECISION
    g_base = offsets[table].astype(np.int64)
    one32 = np.uint64(1 << 32)
    ptr = ends.astype(np.int64).copy()  # next word to take is w[ptr - 1]
    state = np.zeros(ptr.size, dtype=np.uint64)
    have = ptr > starts
    state[have] = w[ptr[have] - 1]
    ptr[have] -= 1
    more = (ptr > starts) & (state < one32)
    state[more] = (state[more] << np.uint64(32)) | w[ptr[more] - 1]
    ptr[more] -= 1
    out = np.empty(int(sizes.sum()), dtype=np.int32)
    mask, shift = np.uint64(_MASK), np.uint64(PRECISION)
    active = ptr.size
    for j in range(int(sizes.max()) if sizes.size else 0):
        while active and sizes[active - 1] <= j:
            active -= 1
        st = state[:active]
        q = st & mask
        g = np.searchsorted(g_cdf, q.astype(np.int64) + shift_t[:active], side="right") - 1
        st = (st >> shift) * g_freq[g] + (q - g_lo[g])
        p = ptr[:active]
        need = np.flatnonzero((st < one32) & (p > starts[:active]))
        if need.size:
            p[need] -= 1
            st[need] = (st[need] << np.uint64(32)) | w[p[need]]
        state[:active] = st
        out[sym_base[:active] + j] = g - g_base[:active]
    if np.any(state != 0) or np.any(ptr != starts):
        bad = streams[int(table[np.flatnonzero((state != 0) | (ptr != starts))[0]])]
        raise FormatError(f"{bad.where}: ANS data does not end after its symbols")
    split = np.cumsum([st.n for st in streams])[:-1]
    return np.split(out, split)


def decode_streams(streams: list[AnsStream]) -> list[np.ndarray]:
    """Decode parsed streams; ``(n,)`` int32 symbols each, in order.

    Streams with many lanes in total are decoded together in lockstep; a file with fewer
    than 8 lanes (every version-1 file: one lane per stream) by a Python loop per lane.

    Raises:
        FormatError: a lane that does not end exactly, or symbols that disagree with the
            count table.
    """
    out: list[np.ndarray | None] = [None] * len(streams)
    busy = [i for i, st in enumerate(streams) if st.n]
    for i, st in enumerate(streams):
        if not st.n:
            out[i] = np.zeros(0, dtype=np.int32)
    lanes = sum(streams[i].sizes.size for i in busy)
    if lanes >= _LOCKSTEP_MIN_LANES and all(
        streams[i].sizes.size > 1 or streams[i].n <= _MAX_LANE for i in busy
    ):
        for i, sym in zip(busy, _decode_lockstep([streams[i] for i in busy])):
            out[i] = sym
    else:
        for i in busy:
            st = streams[i]
            cdf_l = st.cdf.tolist()
            parts = [
                _decode_lane(st.words[a:b], int(k), cdf_l, st.where)
                for a, b, k in zip(st.starts.tolist(), st.ends.tolist(), st.sizes.tolist())
            ]
            out[i] = np.asarray([x for p in parts for x in p], dtype=np.int32)
    for i in busy:
        st, sym = streams[i], out[i]
        assert sym is not None
        # ANS decodes *something* from any words; the counts must match what came out.
        if sym.max() >= st.alphabet or not np.array_equal(
            np.bincount(sym, minlength=st.alphabet), st.counts
        ):
            raise FormatError(f"{st.where}: decoded ANS symbols disagree with the count table")
    return out  # type: ignore[return-value]


def decode_stream(
    segment: bytes | memoryview, n: int, alphabet: int, where: str, chunk: int | None = None
) -> np.ndarray:
    """Decode ``n`` symbols from one ANS segment; returns ``(n,)`` int32.

    ``chunk=None``: one lane (version 1); else lanes of ``chunk`` symbols (version 2).

    Raises:
        FormatError: see :func:`parse_stream` and :func:`decode_streams`; also data left
            over after the symbols.
    """
    return decode_streams([parse_stream(segment, n, alphabet, where, chunk)])[0]
