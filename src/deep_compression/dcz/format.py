"""Constants of the ``.dcz`` container and validation of its JSON header.

Byte layout (``docs/FORMAT.md`` is the normative description)::

    offset  size  field
    0       4     magic b"\\x89DCZ"
    4       2     format version, u16 little-endian (this reader: 1 and 2)
    6       2     flags, u16 LE: bit 0 = header is zlib-compressed; other bits 0
    8       4     header length H (as stored), u32 LE, H <= MAX_HEADER_BYTES
    12      H     header: UTF-8 JSON object (zlib stream of it if flag bit 0)
    12+H    D     data section: the tensors' segments, back to back
    end-4   4     CRC-32 (zlib/PNG polynomial) of every preceding byte, u32 LE

Every field of the header is checked here, before any tensor data is touched or any
array is allocated: types, bounds, element counts against stream counts, and segments
that must tile the data section exactly (in order, no overlap, no hole).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from deep_compression.coding.coders import CODERS
from deep_compression.coding.context import MAX_CTX_ELEMENTS
from deep_compression.coding.gaps import MAX_GAP_BITS, MIN_GAP_BITS
from deep_compression.errors import FormatError

__all__ = [
    "MAGIC",
    "VERSION",
    "FLAG_ZLIB_HEADER",
    "PREAMBLE_BYTES",
    "TRAILER_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_ELEMENTS",
    "MAX_CODEBOOK",
    "MAX_CHUNK",
    "DEFAULT_CHUNK",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DTYPES",
    "ENCODINGS",
    "Segment",
    "Stream",
    "TensorEntry",
    "validate_header",
]

MAGIC = b"\x89DCZ"
VERSION = 2  # what the writer writes by default
VERSIONS = (1, 2)  # what the reader reads
FLAG_ZLIB_HEADER = 1  # v1: zlib stream; v2: raw DEFLATE with the preset dictionary below
PREAMBLE_BYTES = 12
TRAILER_BYTES = 4
MAX_HEADER_BYTES = 1 << 24  # 16 MiB, stored or decompressed: never a memory hazard
MAX_TENSORS = 1 << 16
MAX_NAME_CHARS = 1024
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 31  # per tensor
MAX_CODEBOOK = 1 << 16
MAX_CHUNK = 1 << 24
DEFAULT_CHUNK = 1 << 14
# Decoded arrays of one file, in bytes. A sparse tensor legitimately expands a lot (it is
# the point), so a tiny file could still ask for gigabytes; this bound is the backstop.
# VGG-16 needs 553 MB.
DEFAULT_MAX_OUTPUT_BYTES = 1 << 32

# Dense tensors may have any of these dtypes (raw little-endian); sparse and quantized
# tensors are float32.
DTYPES: dict[str, str] = {
    "float32": "<f4",
    "float64": "<f8",
    "float16": "<f2",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "?",
}
ITEMSIZE = {
    "float32": 4,
    "float64": 8,
    "float16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
ENCODINGS = ("dense", "sparse", "quantized")
# Segment order inside a tensor (and therefore in the data section).
SEGMENT_ORDER = ("data", "codebook", "gaps", "indices", "values")
_KEYS = {
    "dense": {"name", "shape", "dtype", "enc", "data"},
    "sparse": {"name", "shape", "dtype", "enc", "kept", "gap_bits", "gaps", "values"},
    "quantized": {
        "name",
        "shape",
        "dtype",
        "enc",
        "kept",
        "gap_bits",
        "k",
        "codebook",
        "gaps",
        "indices",
    },
}
_STREAM_KEYS = {"coder", "n", "at"}
# Version 2: the coder of a stream may also be "ctx" (context-adaptive, coding/context.py);
# a gaps stream coded with ctx codes the positions themselves, and its tensor then has no
# "gap_bits".
CTX = "ctx"
# Version 2 headers are raw DEFLATE (RFC 1951) with this preset dictionary: the keys and
# strings every header repeats, so a LeNet header shrinks from ~550 to ~200 bytes. It is
# part of the format (FORMAT.md section 10.2 spells it out); changing it is a new version.
HEADER_DICTIONARY_V2 = (
    b'{"chunk":16384,"meta":{"dataset":"mnist","model":{"kwargs":{},"name":"lenet-300-100"},'
    b'"preprocessing":{"formula":"x = (pixel * scale - mean) / std","input_shape":[1,28,28],'
    b'"mean":0.1307,"scale":0.00392156862745098,"std":0.3081},"recipe_digest":"","seed":0,'
    b'"stage":"P+Q+H","test_accuracy":0.99,"test_error":0.0,"tool_version":"0.1.0"},'
    b'"tensors":[{"data":,"dtype":"float32","enc":"dense","name":"conv1.bias","shape":[],'
    b'"store":"float16"},{"enc":"sparse","values":"gaps":{"at":,"coder":"ans","n":},'
    b'{"codebook":,"dtype":"float32","enc":"quantized","gap_bits":,"gaps":{"at":,'
    b'"coder":"huffman","n":},"indices":{"at":,"coder":"ctx","n":},"k":16,"kept":,'
    b'"name":"fc1.weight","shape":[],"store":"float16"}]}'
)
# Optional in every tensor object: "store": "float16" says its float32 payload (dense data,
# sparse values or codebook) is stored as IEEE binary16, every value exactly representable.
_OPTIONAL_KEYS = {"store"}
STORES = ("float16",)


@dataclass(frozen=True)
class Segment:
    """A byte range ``[offset, offset + length)`` of the data section."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Stream:
    """A coded symbol stream: coder, symbol count ``n``, alphabet size and its segment."""

    coder: str
    n: int
    alphabet: int
    segment: Segment


@dataclass(frozen=True)
class TensorEntry:
    """One validated tensor of the header.

    ``kept`` is ``numel`` for dense tensors. ``streams`` holds ``"gaps"`` (sparse and
    quantized) and ``"indices"`` (quantized); ``segments`` every byte range by role
    (``data``, ``codebook``, ``gaps``, ``indices``, ``values``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str
    numel: int
    kept: int
    gap_bits: int | None  # None: positions coded with ctx (version 2)
    k: int | None
    streams: dict[str, Stream]
    segments: dict[str, Segment]
    half: bool = False

    @property
    def float_bytes(self) -> int:
        """Bytes per stored float of the payload (dense data, values, codebook)."""
        return 2 if self.half else 4

    @property
    def output_bytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    # bool is an int in Python and JSON floats such as 3.0 are not integers: reject both.
    if type(value) is not int:
        raise FormatError(f"{where} must be an integer, got {value!r:.40}")
    if not lo <= value <= hi:
        raise FormatError(f"{where} = {value} outside [{lo}, {hi}]")
    return value


def _obj(
    value: Any, where: str, keys: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be a JSON object")
    missing, unknown = keys - value.keys(), value.keys() - keys - optional
    if missing:
        raise FormatError(f"{where} lacks {', '.join(sorted(missing))}")
    if unknown:
        raise FormatError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
    return value


def _segment(value: Any, where: str, data_len: int, version: int = 1) -> Segment:
    if version >= 2:  # a length; offsets follow from the order (validate_header)
        length = _int(value, f"{where} length", 0, data_len)
        return Segment(-1, length)
    if not isinstance(value, list) or len(value) != 2:
        raise FormatError(f"{where} must be [offset, length]")
    offset = _int(value[0], f"{where} offset", 0, 1 << 62)
    length = _int(value[1], f"{where} length", 0, 1 << 62)
    if offset + length > data_len:
        raise FormatError(
            f"{where} [{offset}, {offset + length}) runs past the end of the data section "
            f"({data_len} bytes): truncated file?"
        )
    return Segment(offset, length)


def _stream(
    value: Any, where: str, alphabet: int, data_len: int, max_n: int, version: int
) -> Stream:
    obj = _obj(value, where, _STREAM_KEYS)
    coder = obj["coder"]
    known = (*CODERS, CTX) if version >= 2 else tuple(CODERS)
    if coder not in known:
        raise FormatError(f"{where}: unknown coder {coder!r:.40} (known: {', '.join(known)})")
    n = _int(obj["n"], f"{where} n", 0, max_n)
    seg = _segment(obj["at"], f"{where} at", data_len, version)
    if coder != CTX:
        CODERS[coder].check_length(n, alphabet, seg.length, where)
    return Stream(coder, n, alphabet, seg)


def _tensor(value: Any, where: str, data_len: int, version: int) -> TensorEntry:
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be a JSON object")
    enc = value.get("enc")
    if enc not in ENCODINGS:
        raise FormatError(f"{where}: unknown encoding {enc!r:.40} (known: {', '.join(ENCODINGS)})")
    keys = _KEYS[enc]
    gaps_v = value.get("gaps")
    ctx_gaps = version >= 2 and isinstance(gaps_v, dict) and gaps_v.get("coder") == CTX
    if ctx_gaps:
        keys = keys - {"gap_bits"}
    obj = _obj(value, where, keys, frozenset(_OPTIONAL_KEYS))
    name = obj["name"]
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise FormatError(f"{where}: name must be a string of 1..{MAX_NAME_CHARS} characters")
    where = f"tensor {name!r:.80}"
    shape_v = obj["shape"]
    if not isinstance(shape_v, list) or len(shape_v) > MAX_DIMS:
        raise FormatError(f"{where}: shape must be a list of at most {MAX_DIMS} integers")
    shape = tuple(_int(d, f"{where} shape", 0, MAX_ELEMENTS) for d in shape_v)
    numel = math.prod(shape)
    if numel > MAX_ELEMENTS:
        raise FormatError(f"{where}: {numel} elements exceed the limit of {MAX_ELEMENTS}")
    dtype = obj["dtype"]
    if dtype not in DTYPES:
        raise FormatError(f"{where}: unsupported dtype {dtype!r:.40}")
    half = "store" in obj
    if half and (obj["store"] not in STORES or dtype != "float32"):
        raise FormatError(
            f'{where}: store {obj["store"]!r:.40} is not allowed (only "float16", and only '
            "for float32 tensors)"
        )
    fb = 2 if half else 4  # bytes per stored float of the payload
    if enc == "dense":
        seg = _segment(obj["data"], f"{where} data", data_len, version)
        itemsize = fb if half else ITEMSIZE[dtype]
        if seg.length != numel * itemsize:
            raise FormatError(
                f"{where}: {numel} x {'float16' if half else dtype} needs {numel * itemsize} "
                f"bytes, segment has {seg.length}"
            )
        return TensorEntry(
            name, shape, dtype, enc, numel, numel, None, None, {}, {"data": seg}, half
        )

    if dtype != "float32":
        raise FormatError(f"{where}: {enc} tensors must be float32, not {dtype}")
    kept = _int(obj["kept"], f"{where} kept", 0, numel)
    if ctx_gaps:
        gap_bits = None
        gaps = _stream(obj["gaps"], f"{where} gaps", 2, data_len, kept, version)
        if gaps.n != kept:
            raise FormatError(f"{where}: ctx positions stream has n = {gaps.n}, kept is {kept}")
        if numel > MAX_CTX_ELEMENTS:
            raise FormatError(
                f"{where}: {numel} elements exceed the ctx coder's limit of {MAX_CTX_ELEMENTS}"
            )
    else:
        gap_bits = _int(obj["gap_bits"], f"{where} gap_bits", MIN_GAP_BITS, MAX_GAP_BITS)
        filler_step = (1 << gap_bits) - 1
        # Fillers sit strictly before the last kept position (< numel), one per filler_step.
        max_gaps = kept + (numel - 1) // filler_step if numel else 0
        gaps = _stream(obj["gaps"], f"{where} gaps", 1 << gap_bits, data_len, max_gaps, version)
    if kept in (0, numel) and gaps.n and not ctx_gaps:
        raise FormatError(
            f"{where}: {'no' if kept == 0 else 'every'} entry is kept, so the gap stream "
            f"must be empty (it has {gaps.n} symbols)"
        )
    if 0 < kept < numel and gaps.n < kept:
        raise FormatError(f"{where}: gap stream of {gaps.n} symbols for {kept} kept entries")
    streams = {"gaps": gaps}
    segments = {"gaps": gaps.segment}
    k = None
    if enc == "sparse":
        segments["values"] = _segment(obj["values"], f"{where} values", data_len, version)
        if segments["values"].length != fb * kept:
            raise FormatError(
                f"{where}: {kept} values of {fb} bytes need {fb * kept} bytes, segment has "
                f"{segments['values'].length}"
            )
    else:
        k = _int(obj["k"], f"{where} k", 1, MAX_CODEBOOK)
        segments["codebook"] = _segment(obj["codebook"], f"{where} codebook", data_len, version)
        if segments["codebook"].length != fb * k:
            raise FormatError(
                f"{where}: codebook of {k} values of {fb} bytes needs {fb * k} bytes, segment "
                f"has {segments['codebook'].length}"
            )
        indices = _stream(obj["indices"], f"{where} indices", k, data_len, kept, version)
        if indices.coder == CTX and (
            numel > MAX_CTX_ELEMENTS or kept * (k - 1).bit_length() > MAX_CTX_ELEMENTS
        ):
            raise FormatError(
                f"{where}: {numel} elements or {kept} x {(k - 1).bit_length()} index bits "
                f"exceed the ctx coder's limit of {MAX_CTX_ELEMENTS}"
            )
        if indices.n != kept:
            raise FormatError(f"{where}: {indices.n} cluster indices for {kept} kept entries")
        streams["indices"] = indices
        segments["indices"] = indices.segment
    return TensorEntry(name, shape, dtype, enc, numel, kept, gap_bits, k, streams, segments, half)


def _place(t: TensorEntry, offset: int) -> tuple[TensorEntry, int]:
    """Version 2: give the segments of ``t`` their offsets, back to back from ``offset``."""
    segments = {}
    for role in SEGMENT_ORDER:
        if role in t.segments:
            segments[role] = Segment(offset, t.segments[role].length)
            offset += t.segments[role].length
    streams = {role: replace(s, segment=segments[role]) for role, s in t.streams.items()}
    return replace(t, segments=segments, streams=streams), offset


def validate_header(
    header: Any,
    data_len: int,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    version: int = 1,
) -> tuple[int, dict[str, Any], list[TensorEntry]]:
    """Check a parsed header of format ``version`` against the data section length.

    Returns:
        ``(chunk, metadata, tensors)``.

    Raises:
        FormatError: anything wrong, naming the tensor and field.
    """
    obj = _obj(header, "header", {"chunk", "meta", "tensors"})
    chunk = _int(obj["chunk"], "header chunk", 1, MAX_CHUNK)
    meta = obj["meta"]
    if not isinstance(meta, dict):
        raise FormatError("header meta must be a JSON object")
    raw = obj["tensors"]
    if not isinstance(raw, list) or len(raw) > MAX_TENSORS:
        raise FormatError(f"header tensors must be a list of at most {MAX_TENSORS} entries")
    tensors = [_tensor(t, f"tensor #{i}", data_len, version) for i, t in enumerate(raw)]
    if version >= 2:
        offset = 0
        for i, t in enumerate(tensors):
            tensors[i], offset = _place(t, offset)
            if offset > data_len:
                raise FormatError(
                    f"tensor {t.name!r} segments run past the end of the data section "
                    f"({data_len} bytes): truncated file?"
                )
    names: set[str] = set()
    total = 0
    expected = 0  # segments must tile the data section in order
    for t in tensors:
        if t.name in names:
            raise FormatError(f"tensor {t.name!r}: duplicate name")
        names.add(t.name)
        total += t.output_bytes
        for role in SEGMENT_ORDER:
            seg = t.segments.get(role)
            if seg is None:
                continue
            if seg.offset != expected:
                problem = (
                    "overlaps the previous segment"
                    if seg.offset < expected
                    else ("leaves unreferenced bytes before it")
                )
                raise FormatError(
                    f"tensor {t.name!r} {role} segment at offset {seg.offset} {problem} "
                    f"(expected offset {expected})"
                )
            expected = seg.end
    if expected != data_len:
        raise FormatError(f"data section has {data_len} bytes but the segments cover {expected}")
    if total > max_output_bytes:
        raise FormatError(
            f"decoded tensors would take {total} bytes, more than the limit of "
            f"{max_output_bytes} (raise max_output_bytes if this file is trusted)"
        )
    return chunk, meta, tensors
