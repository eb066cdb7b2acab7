"""The one table of stream coders: ``fixed``, ``huffman`` and ``ans``.

A *stream* is ``n`` integer symbols over an alphabet ``[0, A)`` (gaps: ``A = 2**b``;
cluster indices: ``A = k``). Its coded form is one byte string, the stream's *segment*;
the coder's name and ``n`` are stored beside it (in the ``.dcz`` header), ``A`` follows
from the tensor it belongs to.

A coder is one :class:`Coder` object: how to encode a stream, how to decode a batch of
them, what its segment must look like (checked before decoding), how many of its bytes
are tables, and what it would cost from a histogram alone (for choosing gap widths).
Adding a coder means adding one object to :data:`CODERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deep_compression.coding import ans, huffman
from deep_compression.coding.bits import decode_varint, fixed_width, pack_fixed, unpack_fixed
from deep_compression.coding.entropy import entropy_bits
from deep_compression.errors import FormatError

__all__ = ["Coder", "CODERS", "StreamRef", "get_coder"]


@dataclass(frozen=True)
class StreamRef:
    """A stream to decode: its segment bytes, coder, symbol count and alphabet size.

    ``lanes``: ``None`` for a version-1 ANS stream (one lane), else the symbols per lane
    (version 2: the file's ``chunk``).
    """

    segment: bytes | memoryview
    coder: str
    n: int
    alphabet: int
    where: str  # names the stream in error messages, e.g. "fc1.weight gaps"
    lanes: int | None = None


class Coder:
    """One stream coder. Subclasses fill in every method."""

    name: str = ""

    def encode(self, symbols: np.ndarray, alphabet: int, chunk: int, version: int) -> bytes:
        """The segment of ``symbols`` (``(n,)`` ints in ``[0, alphabet)``)."""
        raise NotImplementedError

    def decode(self, refs: Sequence[StreamRef], chunk: int) -> list[np.ndarray]:
        """Decode every stream of ``refs`` (all of this coder); ``(n,)`` ints each."""
        raise NotImplementedError

    def check_length(self, n: int, alphabet: int, length: int, where: str) -> None:
        """Reject a segment length that cannot hold ``n`` symbols (header validation)."""
        if n == 0 and length:
            raise FormatError(f"{where}: empty stream with a {length}-byte segment")

    def table_bytes(self, segment: bytes | memoryview, n: int, chunk: int, version: int) -> int:
        """Bytes of a valid segment that are not coded symbols (code or count tables)."""
        raise NotImplementedError

    def cost_bits(self, counts: np.ndarray) -> float:
        """Estimated segment bits of a stream with the symbol histogram ``counts``."""
        raise NotImplementedError


class _Fixed(Coder):
    name = "fixed"

    def encode(self, symbols, alphabet, chunk, version):
        return pack_fixed(symbols, fixed_width(alphabet))

    def decode(self, refs, chunk):
        return [unpack_fixed(r.segment, r.n, fixed_width(r.alphabet), r.where) for r in refs]

    def check_length(self, n, alphabet, length, where):
        expected = (n * fixed_width(alphabet) + 7) // 8
        if length != expected:
            raise FormatError(
                f"{where}: fixed coder needs {expected} bytes for {n} symbols of "
                f"{fixed_width(alphabet)} bits, segment has {length}"
            )

    def table_bytes(self, segment, n, chunk, version):
        return 0

    def cost_bits(self, counts):
        return float(int(counts.sum()) * fixed_width(counts.size))


class _Huffman(Coder):
    name = "huffman"

    def encode(self, symbols, alphabet, chunk, version):
        return huffman.encode_stream(symbols, alphabet, chunk)

    def decode(self, refs, chunk):
        # Parsed (validated) first, then decoded together: the lockstep loop runs ``chunk``
        # times for the whole file, not per stream.
        parsed = [huffman.parse_stream(r.segment, r.n, r.alphabet, chunk, r.where) for r in refs]
        return huffman.decode_streams(parsed)

    def check_length(self, n, alphabet, length, where):
        super().check_length(n, alphabet, length, where)
        if n and 8 * length < n:
            raise FormatError(f"{where}: {length} bytes cannot hold {n} Huffman codes")

    def table_bytes(self, segment, n, chunk, version):
        if n == 0:
            return 0
        m, pos = decode_varint(segment, 0, "table")
        return pos + (m + 1) // 2 + 4 * (-(-n // chunk) - 1)

    def cost_bits(self, counts):
        used = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
        return float(np.dot(counts, huffman.code_lengths(counts))) + 4 * used + 8


_ANS_LANE = 1 << 14  # dcz.layout.DEFAULT_CHUNK: the symbols of one ANS lane (version 2)
_LANE_BITS = 48  # a lane's flushed state and varint word count, beyond the first lane's


class _Ans(Coder):
    name = "ans"

    def encode(self, symbols, alphabet, chunk, version):
        return ans.encode_stream(symbols, alphabet, None if version == 1 else chunk)

    def decode(self, refs, chunk):
        # Parsed (validated) first, then all lanes of all streams decoded in lockstep.
        parsed = [ans.parse_stream(r.segment, r.n, r.alphabet, r.where, r.lanes) for r in refs]
        return ans.decode_streams(parsed)

    def table_bytes(self, segment, n, chunk, version):
        if n == 0:
            return 0
        m, pos = decode_varint(segment, 0, "table")
        for _ in range(m + (0 if version == 1 else -(-n // chunk) - 1)):
            _, pos = decode_varint(segment, pos, "table")
        return pos

    def cost_bits(self, counts):
        used = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
        table = 8 * sum(max(1, (int(c).bit_length() + 6) // 7) for c in counts[:used]) + 8
        n = int(counts.sum())
        # Every further lane (of the writer's default 2**14 symbols) flushes its state and
        # stores a word count: 5.8-6.7 bytes measured. Without it a 1-bit gap field (a
        # bitmap: 18x the symbols of VGG-16's fc6 gaps at 5 bits) looked as small as any,
        # and "auto" widths made VGG-16's file 45 KB larger and 6x slower to write.
        lanes = max(1, -(-n // _ANS_LANE))
        return n * entropy_bits(counts) + table + 32 + _LANE_BITS * (lanes - 1)


CODERS: dict[str, Coder] = {c.name: c for c in (_Fixed(), _Huffman(), _Ans())}


def get_coder(name: str) -> Coder:
    """The coder called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return CODERS[name]
    except KeyError:
        raise ValueError(f"unknown coder {name!r}; choose one of {', '.join(CODERS)}") from None
