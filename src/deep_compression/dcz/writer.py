"""Write ``.dcz`` files from numpy tensors (no torch).

Three tensor kinds, one per encoding:

* :class:`DenseTensor`: raw little-endian values (biases, layers that were not pruned);
* :class:`SparseTensor`: pruned, not quantized: gap stream + float32 values (the "P"
  stage as a real file);
* :class:`QuantizedTensor`: pruned and quantized: float32 codebook + gap stream +
  cluster-index stream (the "P+Q" file with the ``fixed`` coder, "P+Q+H" with
  ``huffman``, or ANS).

The output is deterministic: same tensors, metadata and settings give the same bytes
(sorted JSON keys, no timestamps, deterministic coders).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from deep_compression import __version__
from deep_compression.coding import ans, context
from deep_compression.coding.context import MAX_CTX_ELEMENTS, encode_indices, encode_positions
from deep_compression.coding.gaps import check_gap_bits, encode_gaps
from deep_compression.coding.streams import CODERS, encode_stream
from deep_compression.dcz.format import (
    CTX,
    DEFAULT_CHUNK,
    DTYPES,
    FLAG_ZLIB_HEADER,
    HEADER_DICTIONARY_V2,
    MAGIC,
    MAX_CHUNK,
    MAX_CODEBOOK,
    MAX_ELEMENTS,
    MAX_HEADER_BYTES,
    VERSION,
    VERSIONS,
)
from deep_compression.dcz.records import DenseTensor, QuantizedTensor, SparseTensor, Tensor
from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write

__all__ = ["DenseTensor", "SparseTensor", "QuantizedTensor", "Tensor", "write_dcz", "to_bytes"]

# "ctx" (format version 2) codes positions and indices with the context-adaptive coder
# wherever it is smaller than the best order-0 coder; "best" tries every coder.
CODER_CHOICES = (*CODERS, "ctx", "best")
# ctx decodes in pure Python at about 1 us per element, the order-0 coders in numpy: ctx is
# chosen only when it is at least 1% smaller. On the LeNets it saves 2-20% per stream; on
# VGG-16's iid synthetic weights it saved 832 of 13 MB for 2 s more decoding.
CTX_MIN_GAIN = 0.99


def _check_sparse(t: SparseTensor | QuantizedTensor) -> tuple[np.ndarray, int]:
    numel = math.prod(t.shape)
    if numel > MAX_ELEMENTS:
        raise ConfigError(f"{t.name}: {numel} elements exceed the format limit {MAX_ELEMENTS}")
    check_gap_bits(t.gap_bits, f"{t.name}: gap_bits")
    pos = np.asarray(t.positions, dtype=np.int64).reshape(-1)
    if pos.size and (pos[0] < 0 or pos[-1] >= numel or np.any(np.diff(pos) <= 0)):
        raise ConfigError(f"{t.name}: positions must be strictly increasing in [0, {numel})")
    return pos, numel


def _float_payload(values: np.ndarray, float16: bool = True) -> tuple[bytes, dict[str, str]]:
    """Little-endian bytes of float32 ``values``: as float16 when ``float16`` and every
    value (and the sign of every zero) survives the round trip exactly, else as float32.
    Lossless either way."""
    f32 = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    if float16 and f32.size and np.isfinite(f32).all():
        f16 = f32.astype("<f2")
        if np.array_equal(f16.astype("<f4").view("<u4"), f32.view("<u4")):
            return f16.tobytes(), {"store": "float16"}
    return f32.tobytes(), {}


def _pick(
    symbols: np.ndarray,
    alphabet: int,
    coder: str,
    chunk: int,
    version: int,
    ans_segment: bytes | None = None,
) -> tuple[str, bytes]:
    """The coder and segment for one stream; ``ans_segment``: its ANS segment if already
    encoded (version 2 encodes every ANS stream of a file in one batch)."""

    def encode(c: str) -> bytes:
        if c == "ans" and ans_segment is not None:
            return ans_segment
        return encode_stream(symbols, alphabet, c, chunk, version)

    if coder not in ("best", "ctx"):
        return coder, encode(coder)
    best: tuple[str, bytes] | None = None
    for c in CODERS:  # ties go to the simplest coder
        try:
            seg = encode(c)
        except ValueError:  # e.g. too many distinct symbols for a 15-bit Huffman code
            continue
        if best is None or len(seg) < len(best[1]):
            best = (c, seg)
    assert best is not None
    return best


def _ans_batch(tensors: Sequence[Tensor], chunk: int) -> dict[tuple[str, str], bytes]:
    """Version 2: the ANS segment of every stream of the file, encoded in one lockstep
    batch (``chunk`` vector steps for the whole file instead of per stream)."""
    keys, streams = [], []
    for t in tensors:
        if isinstance(t, DenseTensor):
            continue
        pos, numel = _check_sparse(t)
        if 0 < pos.size < numel:
            keys.append((t.name, "gaps"))
            streams.append((encode_gaps(pos, t.gap_bits), 1 << t.gap_bits))
        if isinstance(t, QuantizedTensor):
            k = int(np.asarray(t.codebook).size)
            idx = np.asarray(t.indices).reshape(-1).astype(np.int64)
            if idx.size != pos.size or (idx.size and (idx.min() < 0 or idx.max() >= k)):
                continue  # reported by the main loop, with its message
            keys.append((t.name, "indices"))
            streams.append((idx, max(k, 1)))
    return dict(zip(keys, ans.encode_streams(streams, chunk)))


def to_bytes(
    tensors: Sequence[Tensor],
    metadata: dict[str, Any],
    *,
    coder: str = "huffman",
    chunk: int = DEFAULT_CHUNK,
    compress_header: bool = True,
    float16: bool = True,
    version: int = VERSION,
    ctx_elements: int | None = None,
) -> bytes:
    """Serialise ``tensors`` and ``metadata`` to the bytes of a ``.dcz`` file.

    Args:
        tensors: in the order they should appear (state-dict order).
        metadata: JSON-serialisable; ``tool_version`` is added.
        coder: ``"huffman"`` (the paper), ``"ans"``, ``"fixed"`` (no entropy coding),
            ``"best"`` (per stream, the smallest of the three, and from version 2 also the
            context-adaptive ``ctx`` coding of positions and indices where it is smaller)
            or ``"ctx"`` (the same as ``"best"``).
        version: the format version to write: 2 (default) or 1 (the old layout, for
            readers that know only version 1; no ``ctx``, one-lane ANS).
        ctx_elements: ``ctx`` is tried only on tensors of at most this many elements (it
            runs at about 1 microsecond per element, in pure Python, both ways); ``None``:
            :data:`~deep_compression.coding.context.TRY_CTX_ELEMENTS`.
        chunk: symbols per Huffman chunk (decoder parallelism vs. 4 bytes per chunk).
        compress_header: store the JSON header zlib-compressed (flag bit 0); it is about
            2.5x smaller, which matters for a 20 KB LeNet file.
        float16: store float payloads in 2 bytes where that is lossless (``False``: always
            4, as the paper's P stage counts them).

    Raises:
        ConfigError: bad settings or tensors.
    """
    if coder not in CODER_CHOICES:
        raise ConfigError(f"coder must be one of {', '.join(CODER_CHOICES)}, got {coder!r}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise ConfigError(f"chunk must be in [1, {MAX_CHUNK}], got {chunk}")
    if version not in VERSIONS:
        raise ConfigError(f"version must be one of {VERSIONS}, got {version}")
    if version == 1 and coder == "ctx":
        raise ConfigError("the ctx coder needs format version 2")
    w = _Writer(tensors, coder, chunk, version, float16, ctx_elements)
    entries = []
    names: set[str] = set()
    for t in tensors:
        if t.name in names or not t.name:
            raise ConfigError(f"tensor name {t.name!r} is empty or repeated")
        names.add(t.name)
        entries.append(w.dense(t) if isinstance(t, DenseTensor) else w.pruned(t))
    header, flags = _header(chunk, metadata, entries, compress_header, version)
    body = b"".join(
        [
            MAGIC,
            version.to_bytes(2, "little"),
            flags.to_bytes(2, "little"),
            len(header).to_bytes(4, "little"),
            header,
            *w.segments,
        ]
    )
    return body + zlib.crc32(body).to_bytes(4, "little")


def _header(
    chunk: int, metadata: dict[str, Any], entries: list, compress: bool, version: int
) -> tuple[bytes, int]:
    """The header bytes (JSON, compressed when asked) and the flags word."""
    meta = {**metadata, "tool_version": __version__}
    try:
        header = json.dumps(
            {"chunk": chunk, "meta": meta, "tensors": entries},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        ).encode("ascii")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"metadata must be JSON-serialisable without NaN ({e})") from None
    if len(header) > MAX_HEADER_BYTES:
        raise ConfigError(f"header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
    if not compress:
        return header, 0
    if version == 1:
        return zlib.compress(header, 9), FLAG_ZLIB_HEADER
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=HEADER_DICTIONARY_V2)
    return packer.compress(header) + packer.flush(), FLAG_ZLIB_HEADER


class _Writer:
    """The data section as it is built: segments in file order, and the header entry of
    each tensor pointing into them."""

    def __init__(
        self,
        tensors: Sequence[Tensor],
        coder: str,
        chunk: int,
        version: int,
        float16: bool,
        ctx_elements: int | None,
    ) -> None:
        self.coder, self.chunk, self.version, self.float16 = coder, chunk, version, float16
        self.use_ctx = version >= 2 and coder in ("best", "ctx")
        ans_coders = ("ans", "best", "ctx")
        self.batch = _ans_batch(tensors, chunk) if version >= 2 and coder in ans_coders else {}
        # Read now, so it can be tuned globally.
        self.ctx_elements = context.TRY_CTX_ELEMENTS if ctx_elements is None else ctx_elements
        self.segments: list[bytes] = []
        self.offset = 0

    def put(self, data: bytes) -> list[int] | int:
        self.segments.append(data)
        at = [self.offset, len(data)]
        self.offset += len(data)
        return at if self.version == 1 else len(data)  # v2: offsets follow from the order

    def order0(self, symbols: np.ndarray, alphabet: int, key: tuple[str, str]) -> tuple[str, bytes]:
        return _pick(symbols, alphabet, self.coder, self.chunk, self.version, self.batch.get(key))

    def dense(self, t: DenseTensor) -> dict[str, Any]:
        arr = np.asarray(t.array)
        # Match on kind and size whatever the byte order; the file is little-endian.
        dtype = next(
            (k for k, v in DTYPES.items() if np.dtype(v) == arr.dtype.newbyteorder("<")), None
        )
        if dtype is None:
            raise ConfigError(f"{t.name}: dtype {arr.dtype} cannot be stored")
        store: dict[str, str] = {}
        if dtype == "float32":
            data, store = _float_payload(arr, self.float16)
        else:
            data = np.ascontiguousarray(arr, dtype=DTYPES[dtype]).tobytes()
        entry = {"name": t.name, "shape": list(arr.shape), "dtype": dtype, "enc": "dense"}
        return {**entry, "data": self.put(data), **store}

    def pruned(self, t: SparseTensor | QuantizedTensor) -> dict[str, Any]:
        pos, numel = _check_sparse(t)
        kept = int(pos.size)
        shape = tuple(int(d) for d in t.shape)
        try_ctx = self.use_ctx and 0 < numel <= min(self.ctx_elements, MAX_CTX_ELEMENTS)
        entry: dict[str, Any] = {
            "name": t.name,
            "shape": list(shape),
            "dtype": "float32",
            "kept": kept,
            "gap_bits": t.gap_bits,
        }
        if isinstance(t, SparseTensor):
            values = np.asarray(t.values, dtype="<f4").reshape(-1)
            if values.size != kept:
                raise ConfigError(f"{t.name}: {values.size} values for {kept} positions")
            data, store = _float_payload(values, self.float16)
            entry.update(enc="sparse", gaps=self.positions(t, pos, shape, try_ctx, entry), **store)
            entry["values"] = self.put(data)
            return entry
        codebook = np.asarray(t.codebook, dtype="<f4").reshape(-1)
        k = codebook.size
        if not 1 <= k <= MAX_CODEBOOK:
            raise ConfigError(f"{t.name}: codebook size {k} outside [1, {MAX_CODEBOOK}]")
        idx = np.asarray(t.indices).reshape(-1).astype(np.int64)
        if idx.size != kept:
            raise ConfigError(f"{t.name}: {idx.size} indices for {kept} positions")
        if idx.size and (idx.min() < 0 or idx.max() >= k):
            raise ConfigError(f"{t.name}: cluster indices outside [0, {k})")
        data, store = _float_payload(codebook, self.float16)
        entry.update(enc="quantized", k=k, codebook=self.put(data), **store)
        entry["gaps"] = self.positions(t, pos, shape, try_ctx, entry)
        # Contexts use the centroids' signs as stored (float32), as the reader sees them.
        small = kept * (k - 1).bit_length() <= min(self.ctx_elements, MAX_CTX_ELEMENTS)
        ctx = encode_indices(idx, pos, shape, codebook) if try_ctx and small else None
        used, seg = self.order0(idx, k, (t.name, "indices"))
        if ctx is not None and len(ctx) < CTX_MIN_GAIN * len(seg):
            used, seg = CTX, ctx
        entry["indices"] = {"coder": used, "n": int(idx.size), "at": self.put(seg)}
        return entry

    def positions(
        self,
        t: SparseTensor | QuantizedTensor,
        pos: np.ndarray,
        shape: tuple[int, ...],
        try_ctx: bool,
        entry: dict[str, Any],
    ) -> dict[str, Any]:
        """The positions' stream: ctx codes the positions themselves (``n = kept``, and
        the entry loses its ``gap_bits``), an order-0 coder the gaps."""
        kept, numel = int(pos.size), math.prod(shape)
        gaps = encode_gaps(pos, t.gap_bits) if 0 < kept < numel else np.zeros(0, np.int32)
        ctx = encode_positions(pos, shape) if try_ctx and 0 < kept < numel else None
        used, seg = self.order0(gaps, 1 << t.gap_bits, (t.name, "gaps"))
        if ctx is not None and len(ctx) < CTX_MIN_GAIN * len(seg):
            del entry["gap_bits"]
            return {"coder": CTX, "n": kept, "at": self.put(ctx)}
        return {"coder": used, "n": int(gaps.size), "at": self.put(seg)}


def write_dcz(
    path: str | os.PathLike[str],
    tensors: Sequence[Tensor],
    metadata: dict[str, Any],
    *,
    coder: str = "huffman",
    chunk: int = DEFAULT_CHUNK,
    compress_header: bool = True,
    version: int = VERSION,
) -> int:
    """Write a ``.dcz`` file atomically (see :func:`to_bytes`); returns its size in bytes."""
    blob = to_bytes(
        tensors,
        metadata,
        coder=coder,
        chunk=chunk,
        compress_header=compress_header,
        version=version,
    )
    atomic_write(path, blob)  # never a half-written file under the final name
    return len(blob)
