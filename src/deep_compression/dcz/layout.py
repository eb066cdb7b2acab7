"""The ``.dcz`` container's constants and the validated header entries (no logic).

Byte layout (``docs/FORMAT.md`` is the normative description)::

    offset  size  field
    0       4     magic b"\\x89DCZ"
    4       2     format version, u16 little-endian (this reader: 1 and 2)
    6       2     flags, u16 LE: bit 0 = header is zlib-compressed; other bits 0
    8       4     header length H (as stored), u32 LE, H <= MAX_HEADER_BYTES
    12      H     header: UTF-8 JSON object (zlib stream of it if flag bit 0)
    12+H    D     data section: the tensors' segments, back to back
    end-4   4     CRC-32 (zlib/PNG polynomial) of every preceding byte, u32 LE

The header is validated by :mod:`deep_compression.dcz.format`, which re-exports every
name defined here.
"""

from __future__ import annotations

from dataclasses import dataclass

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
