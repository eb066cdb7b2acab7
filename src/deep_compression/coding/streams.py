"""One entry point for the three stream coders: ``fixed``, ``huffman`` and ``ans``.

A *stream* is ``n`` integer symbols over an alphabet ``[0, A)`` (gaps: ``A = 2**b``;
cluster indices: ``A = k``). Its coded form is one byte string, the stream's *segment*;
the coder's name and ``n`` are stored beside it (in the ``.dcz`` header), ``A`` follows
from the tensor it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deep_compression.coding import ans, huffman
from deep_compression.coding.bits import fixed_width, pack_fixed, unpack_fixed

__all__ = ["CODERS", "StreamRef", "encode_stream", "decode_streams", "entropy_bits"]

CODERS = ("fixed", "huffman", "ans")


def encode_stream(symbols: np.ndarray, alphabet: int, coder: str, chunk: int) -> bytes:
    """The segment of ``symbols`` (``(n,)`` ints in ``[0, alphabet)``) under ``coder``."""
    if coder == "fixed":
        return pack_fixed(symbols, fixed_width(alphabet))
    if coder == "huffman":
        return huffman.encode_stream(symbols, alphabet, chunk)
    if coder == "ans":
        return ans.encode_stream(symbols, alphabet)
    raise ValueError(f"unknown coder {coder!r}; choose one of {', '.join(CODERS)}")


@dataclass(frozen=True)
class StreamRef:
    """A stream to decode: its segment bytes, coder, symbol count and alphabet size."""

    segment: bytes | memoryview
    coder: str
    n: int
    alphabet: int
    where: str  # names the stream in error messages, e.g. "fc1.weight gaps"


def decode_streams(refs: Sequence[StreamRef], chunk: int) -> list[np.ndarray]:
    """Decode every stream; returns ``(n,)`` integer symbols for each, in order.

    All Huffman streams are parsed (validated) first and then decoded together, so the
    lockstep loop runs ``chunk`` times for the whole file, not per stream.

    Raises:
        FormatError: any stream is malformed.
    """
    out: list[np.ndarray | None] = [None] * len(refs)
    huff_ids, huff = [], []
    for i, r in enumerate(refs):
        if r.coder == "fixed":
            out[i] = unpack_fixed(r.segment, r.n, fixed_width(r.alphabet), r.where)
        elif r.coder == "ans":
            out[i] = ans.decode_stream(r.segment, r.n, r.alphabet, r.where)
        elif r.coder == "huffman":
            huff_ids.append(i)
            huff.append(huffman.parse_stream(r.segment, r.n, r.alphabet, chunk, r.where))
        else:  # the header validator admits only CODERS
            raise AssertionError(r.coder)
    for i, symbols in zip(huff_ids, huffman.decode_streams(huff)):
        out[i] = symbols
    return out  # type: ignore[return-value]


def entropy_bits(counts: np.ndarray) -> float:
    """Empirical (order-0) entropy in bits per symbol of a histogram; 0.0 if empty.

    >>> entropy_bits(np.array([1, 1, 2]))
    1.5
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())
