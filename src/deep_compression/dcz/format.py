"""Validation of the ``.dcz`` container's JSON header (constants: :mod:`.layout`).

The byte layout is in :mod:`.layout` and, normatively, ``docs/FORMAT.md``.
Every field of the header is checked here, before any tensor data is touched or any
array is allocated: types, bounds, element counts against stream counts, and segments
that must tile the data section exactly (in order, no overlap, no hole).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from deep_compression.coding.coders import CODERS
from deep_compression.coding.context import MAX_CTX_ELEMENTS
from deep_compression.coding.gaps import MAX_GAP_BITS, MIN_GAP_BITS
from deep_compression.dcz.layout import (
    CTX,
    DEFAULT_CHUNK,
    DEFAULT_MAX_OUTPUT_BYTES,
    DTYPES,
    ENCODINGS,
    FLAG_ZLIB_HEADER,
    HEADER_DICTIONARY_V2,
    ITEMSIZE,
    MAGIC,
    MAX_CHUNK,
    MAX_CODEBOOK,
    MAX_DIMS,
    MAX_ELEMENTS,
    MAX_HEADER_BYTES,
    MAX_NAME_CHARS,
    MAX_TENSORS,
    PREAMBLE_BYTES,
    SEGMENT_ORDER,
    STORES,
    TRAILER_BYTES,
    VERSION,
    VERSIONS,
    Segment,
    Stream,
    TensorEntry,
)
from deep_compression.errors import FormatError

# The constants are imported from here by the writer, the reader and users: re-exported.
__all__ = [
    "MAGIC",
    "VERSION",
    "VERSIONS",
    "FLAG_ZLIB_HEADER",
    "PREAMBLE_BYTES",
    "TRAILER_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "MAX_NAME_CHARS",
    "MAX_DIMS",
    "MAX_ELEMENTS",
    "MAX_CODEBOOK",
    "MAX_CHUNK",
    "DEFAULT_CHUNK",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DTYPES",
    "ITEMSIZE",
    "ENCODINGS",
    "SEGMENT_ORDER",
    "CTX",
    "HEADER_DICTIONARY_V2",
    "STORES",
    "Segment",
    "Stream",
    "TensorEntry",
    "validate_header",
]

# Keys of a tensor object by encoding, of a stream object, and optional in every tensor.
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
_OPTIONAL_KEYS = {"store"}


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
    shape = _shape(obj["shape"], where)
    numel = math.prod(shape)
    if numel > MAX_ELEMENTS:
        raise FormatError(f"{where}: {numel} elements exceed the limit of {MAX_ELEMENTS}")
    dtype, half = _dtype(obj, where)
    if enc == "dense":
        seg = _dense_data(obj, where, data_len, version, numel, dtype, half)
        return TensorEntry(
            name, shape, dtype, enc, numel, numel, None, None, {}, {"data": seg}, half
        )

    if dtype != "float32":
        raise FormatError(f"{where}: {enc} tensors must be float32, not {dtype}")
    kept = _int(obj["kept"], f"{where} kept", 0, numel)
    gap_bits, gaps = _gaps(obj, where, data_len, version, numel, kept, ctx_gaps)
    streams = {"gaps": gaps}
    segments = {"gaps": gaps.segment}
    k = None
    fb = 2 if half else 4  # bytes per stored float of the payload
    if enc == "sparse":
        segments["values"] = _segment(obj["values"], f"{where} values", data_len, version)
        if segments["values"].length != fb * kept:
            raise FormatError(
                f"{where}: {kept} values of {fb} bytes need {fb * kept} bytes, segment has "
                f"{segments['values'].length}"
            )
    else:
        k, segments["codebook"], indices = _codebook_indices(
            obj, where, data_len, version, numel, kept, fb
        )
        streams["indices"] = indices
        segments["indices"] = indices.segment
    return TensorEntry(name, shape, dtype, enc, numel, kept, gap_bits, k, streams, segments, half)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise FormatError(f"{where}: shape must be a list of at most {MAX_DIMS} integers")
    return tuple(_int(d, f"{where} shape", 0, MAX_ELEMENTS) for d in value)


def _dtype(obj: dict[str, Any], where: str) -> tuple[str, bool]:
    """The tensor's dtype, and whether its float payload is stored as float16."""
    dtype = obj["dtype"]
    if dtype not in DTYPES:
        raise FormatError(f"{where}: unsupported dtype {dtype!r:.40}")
    half = "store" in obj
    if half and (obj["store"] not in STORES or dtype != "float32"):
        raise FormatError(
            f'{where}: store {obj["store"]!r:.40} is not allowed (only "float16", and only '
            "for float32 tensors)"
        )
    return dtype, half


def _dense_data(
    obj: dict[str, Any], where: str, data_len: int, version: int, numel: int, dtype: str, half: bool
) -> Segment:
    """A dense tensor's one segment, of exactly ``numel`` stored items."""
    seg = _segment(obj["data"], f"{where} data", data_len, version)
    itemsize = 2 if half else ITEMSIZE[dtype]
    if seg.length != numel * itemsize:
        raise FormatError(
            f"{where}: {numel} x {'float16' if half else dtype} needs {numel * itemsize} "
            f"bytes, segment has {seg.length}"
        )
    return seg


def _gaps(
    obj: dict[str, Any],
    where: str,
    data_len: int,
    version: int,
    numel: int,
    kept: int,
    ctx_gaps: bool,
) -> tuple[int | None, Stream]:
    """The positions stream of a sparse or quantized tensor, and its ``gap_bits`` (None when
    the positions are coded with ctx), with its symbol count bounded by ``kept``."""
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
    return gap_bits, gaps


def _codebook_indices(
    obj: dict[str, Any], where: str, data_len: int, version: int, numel: int, kept: int, fb: int
) -> tuple[int, Segment, Stream]:
    """A quantized tensor's ``k``, codebook segment (``fb`` bytes a value) and indices stream."""
    k = _int(obj["k"], f"{where} k", 1, MAX_CODEBOOK)
    codebook = _segment(obj["codebook"], f"{where} codebook", data_len, version)
    if codebook.length != fb * k:
        raise FormatError(
            f"{where}: codebook of {k} values of {fb} bytes needs {fb * k} bytes, segment "
            f"has {codebook.length}"
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
    return k, codebook, indices


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
