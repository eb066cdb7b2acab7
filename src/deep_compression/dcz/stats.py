"""Where the bytes of a ``.dcz`` file go: per-tensor and per-stream sizes, with the
order-0 entropy of every stream's symbols to compare the coders against.

:meth:`DczFile.stats <deep_compression.dcz.reader.DczFile.stats>` decodes the symbols and
calls the functions here; they only measure, so they take the decoded pieces rather than
the file (and do not import the reader).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deep_compression.coding.bits import fixed_width
from deep_compression.coding.coders import CODERS
from deep_compression.coding.streams import entropy_bits
from deep_compression.dcz.layout import CTX, Stream, TensorEntry

__all__ = ["StreamStats", "TensorStats", "stream_stats", "tensor_stats"]


@dataclass(frozen=True)
class StreamStats:
    """Sizes of one coded stream. ``entropy`` is the empirical order-0 entropy of its
    symbols in bits per symbol; ``fixed_bytes`` what the ``fixed`` coder would take."""

    coder: str
    n: int
    alphabet: int
    bytes: int
    table_bytes: int
    entropy: float
    fixed_bytes: int

    @property
    def bits_per_symbol(self) -> float:
        """Payload bits per symbol, tables excluded (nan for an empty stream)."""
        return 8 * (self.bytes - self.table_bytes) / self.n if self.n else float("nan")


@dataclass(frozen=True)
class TensorStats:
    """Where the bytes of one tensor go."""

    name: str
    encoding: str
    shape: tuple[int, ...]
    numel: int
    kept: int
    gap_bits: int | None
    k: int | None
    fillers: int
    streams: dict[str, StreamStats]
    codebook_bytes: int
    values_bytes: int
    dense_bytes: int

    @property
    def bytes(self) -> int:
        return (
            sum(s.bytes for s in self.streams.values())
            + self.codebook_bytes
            + self.values_bytes
            + self.dense_bytes
        )


def stream_stats(
    t: TensorEntry,
    role: str,
    s: Stream,
    seg: memoryview,
    symbols: np.ndarray | None,
    chunk: int,
    version: int,
) -> StreamStats:
    """Sizes and entropy of stream ``role`` of tensor ``t``, stored in ``seg``.

    Args:
        symbols: the stream's decoded symbols, shape ``(s.n,)``; None for a ctx positions
            stream, whose figure is the entropy of the kept map instead.
        chunk, version: the file's, for the size of the coder's tables.
    """
    if s.coder == CTX and role == "gaps":
        # ctx codes the kept map, one binary decision per element: its order-0
        # entropy, per kept entry (the stream's n), is the figure to beat.
        bitmap = np.array([t.numel - t.kept, t.kept])
        entropy = entropy_bits(bitmap) * t.numel / max(t.kept, 1)
        table = 0
    else:
        assert symbols is not None
        table = 0 if s.coder == CTX else CODERS[s.coder].table_bytes(seg, s.n, chunk, version)
        entropy = entropy_bits(np.bincount(symbols, minlength=s.alphabet))
    return StreamStats(
        coder=s.coder,
        n=s.n,
        alphabet=s.alphabet,
        bytes=len(seg),
        table_bytes=table,
        entropy=entropy,
        fixed_bytes=(s.n * fixed_width(s.alphabet) + 7) // 8,
    )


def tensor_stats(t: TensorEntry, streams: dict[str, StreamStats]) -> TensorStats:
    """The sizes of tensor ``t``, given those of its streams (:func:`stream_stats`)."""
    gaps = t.streams.get("gaps")
    seg = t.segments
    return TensorStats(
        name=t.name,
        encoding=t.encoding,
        shape=t.shape,
        numel=t.numel,
        kept=t.kept,
        gap_bits=t.gap_bits,
        k=t.k,
        fillers=gaps.n - t.kept if gaps is not None and gaps.n else 0,  # ctx: n = kept
        streams=streams,
        codebook_bytes=seg["codebook"].length if "codebook" in seg else 0,
        values_bytes=seg["values"].length if "values" in seg else 0,
        dense_bytes=seg["data"].length if "data" in seg else 0,
    )
