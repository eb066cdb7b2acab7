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
The arithmetic of both (encoding too) is in :mod:`~deep_compression.coding.ans_lanes`.

Segment layout::

    varint m | m varint counts (sum = n, last > 0)
    | (version 2 only) nlanes - 1 varint word counts of lanes 0 .. nlanes-2
    | u32 LE words of lane 0, lane 1, ... (each lane's words as constriction's
      get_compressed(): decoded from the lane's end)
"""

from __future__ import annotations

import numpy as np

from deep_compression.coding.ans_lanes import (
    PRECISION,
    AnsStream,
    decode_lane,
    decode_lockstep,
    encode_lane,
    encode_lockstep,
)
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
    lanes_words = encode_lockstep([syms[i] for i in busy], cdfs, chunk)
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
            np.asarray(encode_lane(symbols[i : i + lane].tolist(), cdf.tolist()), dtype="<u4")
            for i in range(0, n, lane)
        ]
    else:
        lanes = encode_lockstep([symbols], [cdf], lane)[0]
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
        for i, sym in zip(busy, decode_lockstep([streams[i] for i in busy])):
            out[i] = sym
    else:
        for i in busy:
            st = streams[i]
            cdf_l = st.cdf.tolist()
            parts = [
                decode_lane(st.words[a:b], int(k), cdf_l, st.where)
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
