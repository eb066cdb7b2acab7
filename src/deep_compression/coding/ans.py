"""ANS (asymmetric numeral systems) coding of a symbol stream, via ``constriction``.

Closer to the entropy than Huffman (no whole-bit code lengths, so no 1-bit floor on skewed
streams), at the price of a count table. The coder is constriction's
``stream.stack.AnsCoder`` (rANS, 32-bit words, 64-bit state) with a
``stream.model.Categorical`` built from the stream's integer symbol counts, passed as
float64 values (``perfect=False``; constriction normalises them itself). Counts below
2**53 are exact in float64, so the model is an exact function of the stored integers; a
second decoder reproduces it with the rule in ``docs/FORMAT.md``:
``cdf[i] = floor(S_i * ((2**24 - A) / total)) + i`` in IEEE double arithmetic.

Segment layout::

    varint m | m varint counts (sum = n, last > 0) | u32 LE words of constriction's
    get_compressed(), decoded from the end
"""

from __future__ import annotations

import numpy as np

from deep_compression.coding.bits import decode_varint, encode_varints
from deep_compression.errors import FormatError

__all__ = ["PRECISION", "encode_stream", "decode_stream"]

PRECISION = 24  # constriction's default Categorical precision (probabilities in 2**-24)


def _model(counts: np.ndarray):
    import constriction  # compiled extension; imported lazily like every heavy dependency

    # constriction needs at least two symbols; a zero count is legal (it leaks 2**-24).
    probs = np.zeros(max(counts.size, 2), dtype=np.float64)
    probs[: counts.size] = counts
    return constriction.stream.model.Categorical(probs, perfect=False)


def encode_stream(symbols: np.ndarray, alphabet: int) -> bytes:
    """The ANS segment of ``symbols`` (``(n,)`` ints in ``[0, alphabet)``); empty if n = 0."""
    import constriction

    symbols = np.asarray(symbols)
    if symbols.size == 0:
        return b""
    counts = np.bincount(symbols.astype(np.int64), minlength=alphabet)
    m = int(np.flatnonzero(counts)[-1]) + 1
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), _model(counts))
    words = coder.get_compressed().astype("<u4")
    return encode_varints([m, *counts[:m].tolist()]) + words.tobytes()


def decode_stream(segment: bytes | memoryview, n: int, alphabet: int, where: str) -> np.ndarray:
    """Decode ``n`` symbols from an ANS segment; returns ``(n,)`` int32.

    Raises:
        FormatError: a bad count table (sum must be ``n``), a word area that is not whole
            ``u32`` words or ends in a zero word, or data left over after ``n`` symbols.
    """
    import constriction

    if n == 0:
        if len(segment):
            raise FormatError(f"{where}: empty stream must have an empty segment")
        return np.zeros(0, dtype=np.int32)
    m, pos = decode_varint(segment, 0, where)
    if not 1 <= m <= alphabet:
        raise FormatError(f"{where}: ANS count table size {m} outside [1, alphabet {alphabet}]")
    counts = np.zeros(alphabet, dtype=np.int64)
    total = 0
    for i in range(m):  # m <= alphabet <= 65537 varints, and each is at least one byte
        counts[i], pos = decode_varint(segment, pos, where)
        total += int(counts[i])
    if counts[m - 1] == 0:
        raise FormatError(f"{where}: ANS count table ends with a zero count (not canonical)")
    if total != n:
        raise FormatError(f"{where}: ANS counts sum to {total}, the stream has {n} symbols")
    rest = len(segment) - pos
    if rest % 4:  # (zero words is legal: a stream of symbol 0 alone can encode to nothing)
        raise FormatError(f"{where}: ANS data of {rest} bytes is not a whole number of words")
    words = np.frombuffer(segment, dtype="<u4", offset=pos).astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
    except ValueError as e:
        raise FormatError(f"{where}: invalid ANS data ({e})") from None
    symbols = coder.decode(_model(counts), n)
    if not coder.is_empty():
        raise FormatError(f"{where}: ANS data does not end after {n} symbols")
    symbols = np.asarray(symbols, dtype=np.int32)
    # ANS decodes *something* from any words; the stored counts must match what came out.
    if not np.array_equal(np.bincount(symbols, minlength=alphabet), counts):
        raise FormatError(f"{where}: decoded ANS symbols disagree with the count table")
    return symbols
