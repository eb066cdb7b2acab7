"""Read, validate and decode ``.dcz`` files with numpy alone.

Validation happens in this order, each step before anything that depends on it:
file size, magic, version, flags, header length (bounded, and inside the file), header
JSON (strict: no NaN, no duplicate keys), every header field and the segment layout
(:func:`~deep_compression.dcz.format.validate_header`), the CRC-32 of the whole file,
and only then the streams, whose decoders check their own structure (code tables, chunk
lengths, gap streams that run past a tensor, counts that disagree).
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from deep_compression.coding.context import decode_indices, decode_positions
from deep_compression.coding.gaps import best_gap_bits, decode_gaps
from deep_compression.coding.streams import StreamRef, decode_streams
from deep_compression.dcz.format import (
    CTX,
    DEFAULT_MAX_OUTPUT_BYTES,
    DTYPES,
    FLAG_ZLIB_HEADER,
    HEADER_DICTIONARY_V2,
    MAGIC,
    MAX_HEADER_BYTES,
    PREAMBLE_BYTES,
    TRAILER_BYTES,
    VERSIONS,
    TensorEntry,
    validate_header,
)
from deep_compression.dcz.records import (
    DenseTensor,
    QuantizedTensor,
    SparseTensor,
    Tensor,
    to_dense,
)
from deep_compression.dcz.stats import StreamStats, TensorStats, stream_stats, tensor_stats
from deep_compression.errors import FormatError

__all__ = ["DczFile", "StreamStats", "TensorStats", "open_dcz", "decode", "to_dense"]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"header JSON repeats the key {key!r:.80}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise FormatError(f"header JSON contains {name}, which is not JSON")


class DczFile:
    """A validated ``.dcz`` file in memory. Build it with :func:`open_dcz`.

    Attributes:
        size: file size in bytes.
        header_bytes: length of the header as stored (compressed or not).
        header_json_bytes: length of the header's JSON text.
        chunk: Huffman chunk size ``C`` (symbols).
        metadata: the ``meta`` object.
        tensors: validated header entries, in file order.
    """

    def __init__(
        self,
        blob: bytes,
        header_bytes: int,
        header_json_bytes: int,
        chunk: int,
        meta: dict[str, Any],
        tensors: list[TensorEntry],
        where: str,
        version: int = 1,
    ) -> None:
        self._blob = memoryview(blob)
        self._data_start = PREAMBLE_BYTES + header_bytes
        self.size = len(blob)
        self.header_bytes = header_bytes
        self.header_json_bytes = header_json_bytes
        self.chunk = chunk
        self.metadata = meta
        self.tensors = tensors
        self.where = where
        self.version = version
        self._symbols: dict[tuple[str, str], np.ndarray] | None = None
        self._ctx_symbols: dict[tuple[str, str], np.ndarray] = {}  # filled by records()

    @property
    def original_bytes(self) -> int:
        """The model's size before compression: every floating-point tensor as float32
        (4 bytes a value, whatever dtype it was stored in); integer tensors such as
        BatchNorm's ``num_batches_tracked`` are not weights and count 0. Rates divide
        this by the file size."""
        return 4 * sum(t.numel for t in self.tensors if t.dtype.startswith("float"))

    def to_bytes(self) -> bytes:
        """The file's bytes, as read."""
        return bytes(self._blob)

    def segment(self, t: TensorEntry, role: str) -> memoryview:
        seg = t.segments[role]
        start = self._data_start + seg.offset
        return self._blob[start : start + seg.length]

    def _refs(self) -> tuple[list[tuple[TensorEntry, str]], list[StreamRef]]:
        keys, refs = [], []
        for t in self.tensors:
            for role, s in t.streams.items():
                if s.coder == CTX:  # decoded in records(): its contexts need the positions
                    continue
                keys.append((t, role))
                refs.append(
                    StreamRef(
                        self.segment(t, role),
                        s.coder,
                        s.n,
                        s.alphabet,
                        f"{self.where}: tensor {t.name!r} {role}",
                        None if self.version == 1 else self.chunk,
                    )
                )
        return keys, refs

    def decode_symbols(self) -> dict[tuple[str, str], np.ndarray]:
        """Every order-0 stream's symbols, keyed by ``(tensor name, "gaps" | "indices")``
        (``ctx`` streams are decoded by :meth:`records`).

        Decoded once and kept: ``records``, ``decode`` and ``stats`` all start here.
        """
        if self._symbols is None:
            self._symbols = self._decode_symbols()
        return self._symbols

    def _decode_symbols(self) -> dict[tuple[str, str], np.ndarray]:
        keys, refs = self._refs()
        symbols = decode_streams(refs, self.chunk)
        out = {}
        for (t, role), s, r in zip(keys, symbols, refs):
            if s.size and int(s.max()) >= r.alphabet:
                raise FormatError(f"{r.where}: symbol {int(s.max())} >= alphabet {r.alphabet}")
            out[(t.name, role)] = s
        return out

    def _floats(self, t: TensorEntry, role: str) -> np.ndarray:
        """A float payload as float32: stored float32, or float16 widened exactly."""
        stored = np.dtype("<f2") if t.half else np.dtype("<f4")
        return np.frombuffer(self.segment(t, role), dtype=stored).astype(np.float32)

    def records(self) -> list[Tensor]:
        """The tensors as writer records (positions, indices, codebooks), in file order.

        ``to_bytes(f.records(), f.metadata, coder=...)`` re-encodes the same model with
        another coder, which is how ``info`` measures the P, P+Q and P+Q+H files.
        """
        symbols = self.decode_symbols()
        out: list[Tensor] = []
        for t in self.tensors:
            where = f"{self.where}: tensor {t.name!r}"
            if t.encoding == "dense" and t.half:
                arr = self._floats(t, "data").reshape(t.shape)
                out.append(DenseTensor(t.name, arr))
                continue
            if t.encoding == "dense":
                raw = np.frombuffer(self.segment(t, "data"), dtype=DTYPES[t.dtype])
                if t.dtype == "bool" and raw.view(np.uint8).max(initial=0) > 1:
                    raise FormatError(f"{where}: bool data holds bytes other than 0 and 1")
                arr = raw.astype(raw.dtype.newbyteorder("="), copy=True).reshape(t.shape)
                out.append(DenseTensor(t.name, arr))
                continue
            if t.streams["gaps"].coder == CTX:
                positions = decode_positions(
                    self.segment(t, "gaps"), t.shape, t.kept, f"{where} positions"
                )
            elif t.kept == t.numel:  # every entry kept: no gap stream
                positions = np.arange(t.numel, dtype=np.int64)
            else:
                assert t.gap_bits is not None
                positions = decode_gaps(
                    symbols[(t.name, "gaps")], t.gap_bits, t.numel, t.kept, f"{where} gaps"
                )
            # A record needs a gap width even when its positions were ctx-coded: the one
            # the writer would pick for a gap stream (what a re-encoding falls back to).
            gap_bits = t.gap_bits or best_gap_bits(positions, "huffman")
            if t.encoding == "sparse":
                values = self._floats(t, "values")
                out.append(SparseTensor(t.name, t.shape, positions, values, gap_bits))
            else:
                codebook = self._floats(t, "codebook")
                if t.streams["indices"].coder == CTX:
                    indices = decode_indices(
                        self.segment(t, "indices"),
                        positions,
                        t.shape,
                        codebook,
                        f"{where} indices",
                    )
                    self._ctx_symbols[(t.name, "indices")] = indices
                else:
                    indices = symbols[(t.name, "indices")]
                out.append(QuantizedTensor(t.name, t.shape, positions, indices, codebook, gap_bits))
        return out

    def decode(self) -> dict[str, np.ndarray]:
        """Dense arrays by state-dict name: float32 for sparse/quantized tensors."""
        return {r.name: to_dense(r) for r in self.records()}

    def stats(self) -> list[TensorStats]:
        """Per-tensor sizes and per-stream entropy (decodes the symbol streams)."""
        symbols = self.decode_symbols()
        ctx_indices = [
            (t.name, "indices")
            for t in self.tensors
            if t.streams.get("indices") is not None and t.streams["indices"].coder == CTX
        ]
        if any(key not in self._ctx_symbols for key in ctx_indices):
            self.records()  # ctx indices are decoded there (their contexts need positions)
        out = []
        for t in self.tensors:
            streams = {}
            for role, s in t.streams.items():
                if s.coder == CTX and role == "gaps":
                    syms = None  # the kept map's entropy is measured instead
                elif s.coder == CTX:
                    syms = self._ctx_symbols[(t.name, role)]
                else:
                    syms = symbols[(t.name, role)]
                seg = self.segment(t, role)
                streams[role] = stream_stats(t, role, s, seg, syms, self.chunk, self.version)
            out.append(tensor_stats(t, streams))
        return out


def _inflate(raw: bytes, where: str, version: int = 1) -> bytes:
    """Decompress a header (v1: zlib; v2: raw DEFLATE with the preset dictionary),
    refusing to produce more than MAX_HEADER_BYTES."""
    if version == 1:
        d = zlib.decompressobj()
    else:
        d = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY_V2)
    try:
        out = d.decompress(raw, MAX_HEADER_BYTES + 1)
    except zlib.error as e:
        raise FormatError(f"{where}: compressed header is not a valid zlib stream ({e})") from None
    if len(out) > MAX_HEADER_BYTES:
        raise FormatError(f"{where}: header decompresses to more than {MAX_HEADER_BYTES} bytes")
    if not d.eof or d.unused_data or d.unconsumed_tail:
        raise FormatError(f"{where}: compressed header is truncated or has trailing bytes")
    return out


def open_dcz(
    source: str | os.PathLike[str] | bytes,
    *,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> DczFile:
    """Read and validate a ``.dcz`` file (a path, or its bytes); streams stay coded.

    Raises:
        FormatError: the file is missing, malformed, corrupt or over the output limit.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        blob, where = bytes(source), "<bytes>"
    else:
        where = str(source)
        path = Path(source)
        if not path.is_file():
            raise FormatError(f"{where}: no such file")
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise FormatError(f"{where}: cannot read ({e.strerror})") from None
    size = len(blob)
    if size < PREAMBLE_BYTES + TRAILER_BYTES:
        if blob[:4] != MAGIC[: len(blob[:4])]:
            raise FormatError(f"{where}: not a .dcz file (bad magic bytes)")
        raise FormatError(f"{where}: truncated ({size} bytes, a .dcz file has at least 16)")
    if blob[:4] != MAGIC:
        raise FormatError(
            f"{where}: not a .dcz file (magic bytes {blob[:4].hex()}, expected {MAGIC.hex()})"
        )
    version = int.from_bytes(blob[4:6], "little")
    if version not in VERSIONS:
        raise FormatError(
            f"{where}: format version {version} is not supported (this reader "
            f"reads versions {', '.join(map(str, VERSIONS))})"
        )
    flags = int.from_bytes(blob[6:8], "little")
    if flags & ~FLAG_ZLIB_HEADER:
        raise FormatError(
            f"{where}: unknown flags 0x{flags:04x} (version {version} defines only bit 0)"
        )
    header_len = int.from_bytes(blob[8:12], "little")
    if header_len > MAX_HEADER_BYTES:
        raise FormatError(
            f"{where}: header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes"
        )
    data_len = size - PREAMBLE_BYTES - TRAILER_BYTES - header_len
    if data_len < 0:
        raise FormatError(
            f"{where}: header length {header_len} runs past the end of the "
            f"file ({size} bytes): truncated?"
        )
    raw = blob[PREAMBLE_BYTES : PREAMBLE_BYTES + header_len]
    if flags & FLAG_ZLIB_HEADER:
        raw = _inflate(raw, where, version)
    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, digits
        raise FormatError(f"{where}: header is not valid UTF-8 JSON ({str(e)[:120]})") from None
    try:
        chunk, meta, tensors = validate_header(header, data_len, max_output_bytes, version)
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from None
    stored = int.from_bytes(blob[-TRAILER_BYTES:], "little")
    actual = zlib.crc32(memoryview(blob)[:-TRAILER_BYTES])
    if stored != actual:
        raise FormatError(
            f"{where}: checksum mismatch (stored CRC-32 {stored:08x}, computed "
            f"{actual:08x}): the file is corrupt"
        )
    return DczFile(blob, header_len, len(raw), chunk, meta, tensors, where, version)


def decode(
    path: str | os.PathLike[str] | bytes,
    *,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decode a ``.dcz`` file into dense arrays, without torch.

    Returns:
        ``(arrays, metadata)``: ``arrays`` maps state-dict names (``"fc1.weight"``) to
        dense numpy arrays (float32 for every pruned or quantized tensor), ready for
        ``model.load_state_dict`` after ``torch.from_numpy``; ``metadata`` is the file's
        ``meta`` object (model, dataset, preprocessing, accuracy, tool version).

    Raises:
        FormatError: the file is malformed or corrupt; the message says what and where.
    """
    f = open_dcz(path, max_output_bytes=max_output_bytes)
    return f.decode(), f.metadata
