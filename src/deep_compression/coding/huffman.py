"""Canonical, length-limited Huffman coding with chunked, vectorised decoding.

Why not ``constriction.symbol.huffman``: it encodes one symbol per Python call and builds
its tree from float probabilities, too slow for a 10M-symbol layer and hard to specify
byte for byte. This module is the textbook construction, in numpy:

* **Code lengths** from integer symbol counts with the package-merge algorithm (Larmore and
  Hirschberg 1990), which gives the optimal prefix code whose lengths do not exceed
  :data:`MAX_CODE_LENGTH`. Ties are broken by symbol value, so the lengths are a
  deterministic function of the counts. A stream with a single distinct symbol gets a
  1-bit code, as in DEFLATE.
* **Codes** are assigned canonically from the lengths alone (RFC 1951, section 3.2.2), so
  the table stored in a file is just the code lengths, 4 bits each. (These two steps are in
  :mod:`~deep_compression.coding.huffman_codes`, re-exported here.)
* **Bits** are packed MSB-first. The symbol stream is cut into chunks of ``chunk`` symbols
  whose bit lengths are stored, so every chunk start is known and all chunks (of all
  streams of a file) are decoded in lockstep with one lookup table per stream indexed by
  the next ``L`` bits: the Python loop runs ``chunk`` times over numpy vectors, not once
  per symbol.

Stream segment layout (see ``docs/FORMAT.md``)::

    varint m | ceil(m/2) bytes of 4-bit code lengths | (nchunks-1) x u32 chunk bit lengths
    | payload (MSB-first codes, zero-padded to a byte)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from deep_compression.coding.bits import decode_varint, encode_varint, pack_codes
from deep_compression.coding.huffman_codes import MAX_CODE_LENGTH, canonical_codes, code_lengths
from deep_compression.errors import FormatError

__all__ = [
    "MAX_CODE_LENGTH",
    "code_lengths",
    "canonical_codes",
    "encode_table",
    "encode_stream",
    "HuffmanStream",
    "parse_stream",
    "decode_streams",
]

# Lookup-table entries (2**L per stream) decoded together; bounds decoder memory whatever
# a file claims.
_MAX_BATCH_TABLE = 1 << 22
# Table "length" of a bit pattern no code starts with (only a single-symbol table has
# one): it throws the chunk so far off that its end check must fail.
_INVALID = 1 << 40


def encode_table(lengths: np.ndarray) -> bytes:
    """``varint m`` then the first ``m`` code lengths as 4-bit nibbles, high nibble first.

    ``m`` is one past the last symbol with a nonzero length (trailing unused symbols cost
    nothing); an odd ``m`` leaves the final low nibble zero.
    """
    lengths = np.asarray(lengths, dtype=np.uint8)
    nonzero = np.flatnonzero(lengths)
    m = int(nonzero[-1]) + 1 if nonzero.size else 0
    nibbles = np.zeros(m + (m & 1), dtype=np.uint8)
    nibbles[:m] = lengths[:m]
    packed = (nibbles[0::2] << 4) | nibbles[1::2]
    return encode_varint(m) + packed.tobytes()


def encode_stream(symbols: np.ndarray, alphabet: int, chunk: int) -> bytes:
    """The Huffman segment of a symbol stream (empty for an empty stream).

    Args:
        symbols: ``(n,)`` integers in ``[0, alphabet)``.
        alphabet: alphabet size ``A``.
        chunk: symbols per chunk ``C`` (the file's ``chunk``).
    """
    symbols = np.asarray(symbols, dtype=np.int64)
    n = symbols.size
    if n == 0:
        return b""
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    codes = canonical_codes(lengths)
    payload, ends = pack_codes(codes[symbols], lengths[symbols])
    # Bit length of every chunk but the last (the last one ends where the payload does).
    chunk_ends = ends[chunk - 1 : n - 1 : chunk] if n > chunk else ends[:0]
    chunk_bits = np.diff(chunk_ends, prepend=0).astype("<u4")
    return encode_table(lengths) + chunk_bits.tobytes() + payload


@dataclass(frozen=True)
class HuffmanStream:
    """A parsed, validated Huffman segment, ready for :func:`decode_streams`.

    ``lengths`` ``(A,)`` code lengths; ``chunk_bits`` ``(nchunks - 1,)`` bit lengths of all
    chunks but the last; ``payload`` the coded bits.
    """

    n: int
    chunk: int
    lengths: np.ndarray
    chunk_bits: np.ndarray
    payload: bytes
    where: str


def _check_lengths(lengths: np.ndarray, where: str) -> None:
    used = np.flatnonzero(lengths)
    if used.size == 0:
        raise FormatError(f"{where}: Huffman table has no codes")
    if used.size == 1:
        if lengths[used[0]] != 1:
            raise FormatError(f"{where}: a single-symbol Huffman table must use a 1-bit code")
        return
    # Kraft sum in integer units of 2**-MAX_CODE_LENGTH; a canonical Huffman code is complete.
    kraft = int(np.sum(1 << (MAX_CODE_LENGTH - lengths[used].astype(np.int64))))
    if kraft != 1 << MAX_CODE_LENGTH:
        state = "over-subscribed" if kraft > 1 << MAX_CODE_LENGTH else "incomplete"
        raise FormatError(
            f"{where}: Huffman code lengths violate Kraft equality ({state}: "
            f"sum 2^-len = {kraft}/{1 << MAX_CODE_LENGTH})"
        )


def parse_stream(
    segment: bytes | memoryview, n: int, alphabet: int, chunk: int, where: str
) -> HuffmanStream:
    """Parse and validate a Huffman segment without decoding it (cheap, allocation-bounded).

    Raises:
        FormatError: bad table, chunk lengths that cannot be right, or a payload whose
            size disagrees with them.
    """
    if n == 0:
        if len(segment):
            raise FormatError(f"{where}: empty stream must have an empty segment")
        return HuffmanStream(
            0, chunk, np.zeros(alphabet, np.uint8), np.zeros(0, np.int64), b"", where
        )
    m, pos = decode_varint(segment, 0, where)
    if not 1 <= m <= alphabet:
        raise FormatError(f"{where}: Huffman table size {m} outside [1, alphabet {alphabet}]")
    table_bytes = (m + 1) // 2
    if pos + table_bytes > len(segment):
        raise FormatError(f"{where}: Huffman table truncated")
    packed = np.frombuffer(segment, dtype=np.uint8, count=table_bytes, offset=pos)
    nibbles = np.empty(2 * table_bytes, dtype=np.uint8)
    nibbles[0::2] = packed >> 4
    nibbles[1::2] = packed & 0x0F
    if m & 1 and nibbles[m]:
        raise FormatError(f"{where}: Huffman table padding nibble is not zero")
    if nibbles[m - 1] == 0:
        raise FormatError(f"{where}: Huffman table ends with an unused symbol (not canonical)")
    lengths = np.zeros(alphabet, dtype=np.uint8)
    lengths[:m] = nibbles[:m]
    _check_lengths(lengths, where)
    pos += table_bytes
    nchunks = -(-n // chunk)
    # Every code is at least one bit: a claim of more symbols than payload bits is a lie,
    # caught here before anything of size n is allocated.
    if (nchunks - 1) * 4 + pos > len(segment):
        raise FormatError(f"{where}: chunk table of {nchunks - 1} entries runs past the segment")
    chunk_bits = np.frombuffer(segment, dtype="<u4", count=nchunks - 1, offset=pos).astype(np.int64)
    pos += 4 * (nchunks - 1)
    payload = bytes(segment[pos:])
    max_len = int(lengths.max())
    if chunk_bits.size and (chunk_bits.min() < chunk or chunk_bits.max() > chunk * max_len):
        raise FormatError(
            f"{where}: chunk bit length outside [{chunk}, {chunk * max_len}] for {chunk} symbols"
        )
    last_n = n - (nchunks - 1) * chunk
    last_bits_max = 8 * len(payload) - int(chunk_bits.sum())
    if last_bits_max < last_n:
        raise FormatError(
            f"{where}: payload of {len(payload)} bytes cannot hold {n} symbols "
            f"(chunk lengths {int(chunk_bits.sum())} bits + {last_n} symbols)"
        )
    return HuffmanStream(n, chunk, lengths, chunk_bits, payload, where)


def _decode_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Lookup tables indexed by the next ``L`` bits: ``(symbol, length, L)``."""
    L = int(lengths.max())
    codes = canonical_codes(lengths).astype(np.int64)
    used = np.flatnonzero(lengths)
    span = 1 << (L - lengths[used].astype(np.int64))  # table entries per code
    first = codes[used] << (L - lengths[used].astype(np.int64))
    order = np.argsort(first, kind="stable")
    size = 1 << L
    syms = np.zeros(size, dtype=np.int32)
    lens = np.full(size, _INVALID, dtype=np.int64)
    covered = int(span.sum())  # codes are canonical, so they tile [0, covered)
    syms[:covered] = np.repeat(used[order], span[order])
    lens[:covered] = np.repeat(lengths[used[order]].astype(np.int64), span[order])
    return syms, lens, L


def decode_streams(streams: Sequence[HuffmanStream]) -> list[np.ndarray]:
    """Decode many parsed streams together; returns each stream's ``(n,)`` int32 symbols.

    All chunks of all streams advance in lockstep (longest chunks first, so the active
    ones are a prefix of the arrays); memory for lookup tables is bounded by decoding the
    streams in batches.

    Raises:
        FormatError: an invalid code, or a chunk that does not end exactly where its
            stored bit length says (also catches a payload with nonzero padding).
    """
    results: list[np.ndarray] = [np.zeros(0, np.int32)] * len(streams)
    batch: list[int] = []
    table_total = 0
    for i, s in enumerate(streams):
        if s.n == 0:
            continue
        size = 1 << int(s.lengths.max())
        if batch and table_total + size > _MAX_BATCH_TABLE:
            _decode_batch([streams[j] for j in batch], batch, results)
            batch, table_total = [], 0
        batch.append(i)
        table_total += size
    if batch:
        _decode_batch([streams[j] for j in batch], batch, results)
    return results


def _decode_batch(streams: list[HuffmanStream], ids: list[int], results: list[np.ndarray]) -> None:
    """Decode ``streams`` (whose lookup tables fit in memory together) into
    ``results[ids[k]]``, every chunk of every stream in lockstep."""
    sym_table, len_table, tab_offsets, Ls = _joined_tables(streams)
    window, base_bits = _joined_payloads(streams)
    last_byte = window.size - 1
    c = _chunks(streams, base_bits, tab_offsets, Ls)

    out = np.empty(sum(s.n for s in streams), dtype=np.int32)
    pos = c.start.copy()
    active = c.count.size
    for i in range(int(c.count[0])):
        while c.count[active - 1] <= i:
            active -= 1
        p = pos[:active]
        w = window[np.minimum(p >> 3, last_byte)]
        code = (w >> (c.shift[:active] - (p & 7))) & c.mask[:active]
        entry = c.tab_off[:active] + code
        out[c.out_off[:active] + i] = sym_table[entry]
        p += len_table[entry]  # in place on pos[:active]

    _check_chunk_ends(streams, c, pos - c.start)
    out_pos = 0
    for k, s in enumerate(streams):
        results[ids[k]] = out[out_pos : out_pos + s.n]
        out_pos += s.n


def _joined_tables(
    streams: list[HuffmanStream],
) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Every stream's lookup tables back to back: ``(symbols, lengths, offsets, Ls)``,
    stream ``k``'s table starting at ``offsets[k]`` and indexed by ``Ls[k]`` bits."""
    sym_tabs, len_tabs, tab_offsets, Ls = [], [], [], []
    tab_base = 0
    for s in streams:
        syms, lens, L = _decode_table(s.lengths)
        sym_tabs.append(syms)
        len_tabs.append(lens)
        tab_offsets.append(tab_base)
        Ls.append(L)
        tab_base += syms.size
    return np.concatenate(sym_tabs), np.concatenate(len_tabs), tab_offsets, Ls


def _joined_payloads(streams: list[HuffmanStream]) -> tuple[np.ndarray, list[int]]:
    """The payloads back to back as a window per byte, and each payload's first bit."""
    payload_parts, base_bits = [], []
    byte_base = 0
    for s in streams:
        payload_parts.append(s.payload)
        base_bits.append(8 * byte_base)
        byte_base += len(s.payload)
    buf = np.frombuffer(b"".join(payload_parts) + b"\0\0\0", dtype=np.uint8)
    # 24-bit big-endian window starting at every byte: one gather per step reads L <= 16
    # bits at any bit offset (offset-in-byte <= 7, 7 + 16 <= 24).
    window = (
        (buf[:-2].astype(np.uint32) << 16) | (buf[1:-1].astype(np.uint32) << 8) | buf[2:]
    ).astype(np.int64)
    return window, base_bits


class _Chunks(NamedTuple):
    """Every chunk of a batch, longest first (so the active ones are a prefix)."""

    start: np.ndarray  # first bit in the joined payloads
    count: np.ndarray  # symbols
    tab_off: np.ndarray  # its stream's table offset
    shift: np.ndarray  # 24 - L: aligns the window's next L bits
    mask: np.ndarray  # 2**L - 1
    out_off: np.ndarray  # where its symbols go in the batch's output
    owner: np.ndarray  # index of its stream in the batch


def _chunks(
    streams: list[HuffmanStream], base_bits: list[int], tab_offsets: list[int], Ls: list[int]
) -> _Chunks:
    starts, counts, offs, shifts, masks, outs, owner = [], [], [], [], [], [], []
    out_base = 0
    for k, s in enumerate(streams):
        nchunks = s.chunk_bits.size + 1
        chunk_counts = np.full(nchunks, s.chunk, dtype=np.int64)
        chunk_counts[-1] = s.n - (nchunks - 1) * s.chunk
        starts.append(base_bits[k] + np.concatenate([[0], np.cumsum(s.chunk_bits)]))
        counts.append(chunk_counts)
        offs.append(np.full(nchunks, tab_offsets[k], dtype=np.int64))
        shifts.append(np.full(nchunks, 24 - Ls[k], dtype=np.int64))
        masks.append(np.full(nchunks, (1 << Ls[k]) - 1, dtype=np.int64))
        outs.append(out_base + s.chunk * np.arange(nchunks, dtype=np.int64))
        owner.append(np.full(nchunks, k, dtype=np.int64))
        out_base += s.n
    count = np.concatenate(counts)
    order = np.argsort(-count, kind="stable")  # longest chunks first
    return _Chunks(
        *(np.concatenate(parts)[order] for parts in (starts, counts, offs, shifts, masks, outs)),
        np.concatenate(owner)[order],
    )


def _check_chunk_ends(streams: list[HuffmanStream], c: _Chunks, used_bits: np.ndarray) -> None:
    """Each chunk must end exactly where the next starts; the last chunk of a stream must
    end in the payload's final byte with zero padding after it."""
    for k, s in enumerate(streams):
        idx = np.flatnonzero(c.owner == k)
        ordered = idx[np.argsort(c.out_off[idx])]
        bits = used_bits[ordered]
        if s.chunk_bits.size and not np.array_equal(bits[:-1], s.chunk_bits):
            raise FormatError(f"{s.where}: a chunk does not decode to its stored bit length")
        total = int(s.chunk_bits.sum()) + int(bits[-1])
        if (total + 7) // 8 != len(s.payload):
            raise FormatError(
                f"{s.where}: invalid Huffman data (decoded {total} bits, payload holds "
                f"{len(s.payload)} bytes)"
            )
        pad = 8 * len(s.payload) - total
        if pad and s.payload[-1] & ((1 << pad) - 1):
            raise FormatError(f"{s.where}: nonzero padding bits after the last code")
