"""One entry point for the stream coders of :data:`~deep_compression.coding.coders.CODERS`.

A *stream* is ``n`` integer symbols over an alphabet ``[0, A)``; see
:mod:`~deep_compression.coding.coders` for the coders themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deep_compression.coding.coders import CODERS as _TABLE
from deep_compression.coding.coders import StreamRef, get_coder
from deep_compression.coding.entropy import entropy_bits

__all__ = ["CODERS", "StreamRef", "encode_stream", "decode_streams", "entropy_bits"]

CODERS = tuple(_TABLE)  # the coder names, in order of simplicity (ties go to the first)


def encode_stream(
    symbols: np.ndarray, alphabet: int, coder: str, chunk: int, version: int = 2
) -> bytes:
    """The segment of ``symbols`` (``(n,)`` ints in ``[0, alphabet)``) under ``coder``.

    ``version`` is the file format version the segment is for (ANS lanes exist from 2).
    """
    return get_coder(coder).encode(np.asarray(symbols), alphabet, chunk, version)


def decode_streams(refs: Sequence[StreamRef], chunk: int) -> list[np.ndarray]:
    """Decode every stream; returns ``(n,)`` integer symbols for each, in order.

    Streams are handed to their coder in one batch per coder (Huffman decodes a batch in
    lockstep).

    Raises:
        FormatError: any stream is malformed.
    """
    out: list[np.ndarray | None] = [None] * len(refs)
    for name, coder in _TABLE.items():
        ids = [i for i, r in enumerate(refs) if r.coder == name]
        if ids:
            for i, symbols in zip(ids, coder.decode([refs[i] for i in ids], chunk)):
                out[i] = symbols
    assert all(o is not None for o in out), "the header validator admits only CODERS"
    return out  # type: ignore[return-value]
