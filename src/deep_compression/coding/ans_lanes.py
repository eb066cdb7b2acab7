"""The rANS arithmetic on lanes, in numpy alone: the reference per-lane loops of
``docs/FORMAT.md`` section 6.3 and their lockstep versions, which advance every lane of
every stream one symbol per numpy step (a lane's state is a 64-bit integer, renormalised
by 32-bit words; probabilities are in units of ``2**-PRECISION``).

:mod:`deep_compression.coding.ans` owns the stream format (count table, model, lane table)
and chooses between the loops and the lockstep; this module only turns symbols into words
and back, bit-identically either way.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from deep_compression.errors import FormatError

__all__ = [
    "PRECISION",
    "AnsStream",
    "encode_lane",
    "encode_lockstep",
    "decode_lane",
    "decode_lockstep",
]

PRECISION = 24  # probabilities in units of 2**-24 (constriction's default)
_MASK = (1 << PRECISION) - 1


def encode_lane(symbols: list[int], cdf: list[int]) -> list[int]:
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


def encode_lockstep(
    streams: list[np.ndarray], cdfs: list[np.ndarray], lane: int
) -> list[list[np.ndarray]]:
    """:func:`encode_lane` on every lane of every stream at once (reverse order, one
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


def decode_lane(words: np.ndarray, n: int, cdf: list[int], where: str) -> list[int]:
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


def decode_lockstep(streams: list[AnsStream]) -> list[np.ndarray]:
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
