"""Deliberately malformed files: each is rejected with a FormatError naming the problem."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest

from deep_compression.dcz import QuantizedTensor, decode, open_dcz, to_bytes
from deep_compression.dcz.format import MAX_HEADER_BYTES
from deep_compression.errors import FormatError


def rejects(blob: bytes, message: str, **kwargs) -> None:
    with pytest.raises(FormatError, match=message):
        decode(blob, **kwargs)


def test_valid_sample_decodes(sample_blob) -> None:
    decode(sample_blob)


def test_preamble(sample_blob, reseal) -> None:
    rejects(b"PK\x03\x04" + sample_blob[4:], "not a .dcz file")
    rejects(b"\x89DC", "truncated")
    rejects(b"", "truncated")
    rejects(b"hello", "not a .dcz file")
    rejects(sample_blob[:4] + b"\x07\x00" + sample_blob[6:], "version 7 is not supported")
    rejects(sample_blob[:4] + b"\x00\x00" + sample_blob[6:], "version 0 is not supported")
    rejects(sample_blob[:6] + b"\x02\x00" + sample_blob[6 + 2 :], "unknown flags")
    huge = (MAX_HEADER_BYTES + 1).to_bytes(4, "little")
    rejects(sample_blob[:8] + huge + sample_blob[12:], "exceeds the limit")
    past = (len(sample_blob)).to_bytes(4, "little")
    rejects(sample_blob[:8] + past + sample_blob[12:], "runs past the end of the file")


def test_every_truncation_is_rejected(sample_blob, records) -> None:
    v2 = to_bytes(records, {"model": {"name": "demo"}}, coder="best")
    for blob in (sample_blob, v2):
        for cut in range(len(blob)):
            with pytest.raises(FormatError):
                decode(blob[:cut])


@pytest.mark.parametrize("version", [1, 2])
def test_every_single_bit_flip_is_rejected(records, version: int) -> None:
    blob = to_bytes(records, {"model": {"name": "demo"}}, version=version, coder="best")
    rng = np.random.default_rng(0)
    for pos in range(len(blob)):
        bad = bytearray(blob)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(FormatError):
            decode(bytes(bad))


def test_checksum_names_the_corruption(sample_blob) -> None:
    bad = bytearray(sample_blob)
    bad[-10] ^= 0x40  # inside the last (dense) segment
    rejects(bytes(bad), "checksum mismatch")


def header_text(blob: bytes, text: bytes, reseal) -> bytes:
    data = blob[12 + int.from_bytes(blob[8:12], "little") :]
    return reseal(blob[:8] + len(text).to_bytes(4, "little") + text + data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid UTF-8 JSON"),
        (b'{"chunk":1,"chunk":2,"meta":{},"tensors":[]}', "repeats the key 'chunk'"),
        (b'{"chunk":NaN,"meta":{},"tensors":[]}', "NaN"),
        (b'{"chunk":1,"meta":{},"tensors":[],"extra":0}', "unknown key"),
        (b'{"chunk":1.0,"meta":{},"tensors":[]}', "chunk must be an integer"),
        (b'{"chunk":true,"meta":{},"tensors":[]}', "chunk must be an integer"),
        (b'{"meta":{},"tensors":[]}', "lacks chunk"),
        (b"[]", "must be a JSON object"),
    ],
)
def test_bad_header_json(sample_blob, reseal, text: bytes, message: str) -> None:
    rejects(header_text(sample_blob, text, reseal), message)


def test_bad_compressed_header(sample_blob, reseal) -> None:
    n = int.from_bytes(sample_blob[8:12], "little")
    raw = sample_blob[12 : 12 + n]
    packed = zlib.compress(raw)

    def with_stored(stored: bytes) -> bytes:
        return reseal(
            sample_blob[:6] + b"\x01\x00" + len(stored).to_bytes(4, "little") + stored
            + sample_blob[12 + n :]
        )  # fmt: skip

    decode(with_stored(packed))  # the compressed form of the same header is fine
    rejects(with_stored(packed[:-3]), "truncated or has trailing")
    rejects(with_stored(packed + b"xx"), "truncated or has trailing")
    rejects(with_stored(b"\x00" + packed[1:]), "not a valid zlib stream")
    bomb = zlib.compress(b" " * (MAX_HEADER_BYTES + 10))
    rejects(with_stored(bomb), "decompresses to more than")


def first(header: dict, name: str) -> dict:
    return next(t for t in header["tensors"] if t["name"] == name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: first(h, "fc.bias").update(data=[10**9, 160]), "runs past the end of the data"),
        (lambda h: first(h, "fc.bias")["data"].__setitem__(0, first(h, "fc.bias")["data"][0] - 1),
         "overlaps the previous segment"),
        (lambda h: first(h, "fc.bias")["data"].__setitem__(0, first(h, "fc.bias")["data"][0] + 1),
         "runs past the end|unreferenced bytes"),
        (lambda h: first(h, "fc.bias").update(shape=[41]), "needs 164 bytes"),
        (lambda h: first(h, "fc.weight").update(shape=[2**20, 2**20]), "exceed the limit"),
        (lambda h: first(h, "fc.weight").update(shape=[-1, 50]), "outside"),
        (lambda h: first(h, "fc.weight").update(kept=first(h, "fc.weight")["kept"] + 1),
         "cluster indices for"),
        (lambda h: first(h, "fc.weight").update(k=31), "codebook of 31"),
        (lambda h: first(h, "fc.weight").update(gap_bits=0), "gap_bits = 0 outside"),
        (lambda h: first(h, "fc.weight")["gaps"].update(coder="lzw"), "unknown coder"),
        (lambda h: first(h, "fc.weight")["gaps"].update(n=10**9), "outside"),
        (lambda h: first(h, "sp.weight").update(dtype="float16"), "must be float32"),
        (lambda h: first(h, "sp.weight").update(enc="zip"), "unknown encoding"),
        (lambda h: first(h, "sp.weight").update(k=3), "unknown key"),
        (lambda h: first(h, "fc.bias").update(name="fc.weight"), "duplicate name"),
        (lambda h: first(h, "fc.bias").update(name=""), "name must be"),
        (lambda h: h["tensors"].pop(), "segments cover"),
    ],
)  # fmt: skip
def test_bad_header_fields(sample_blob, edit_header, change, message: str) -> None:
    rejects(edit_header(sample_blob, change), message)


def test_counts_that_disagree_with_the_streams(sample_blob, edit_header, records) -> None:
    fc = next(r for r in records if r.name == "fc.weight")
    # A gap stream that runs past the tensor: same stream, a smaller tensor.
    last = int(fc.positions[-1])
    bad = edit_header(sample_blob, lambda h: first(h, "fc.weight").update(shape=[1, last]))
    rejects(bad, "runs past the tensor")
    # The Huffman gap stream claims one symbol fewer than it holds.
    bad = edit_header(sample_blob, lambda h: first(h, "fc.weight")["gaps"].update(
        n=first(h, "fc.weight")["gaps"]["n"] - 1))  # fmt: skip
    rejects(bad, "fc.weight.*gaps")


def test_fixed_stream_symbol_outside_alphabet(reseal) -> None:
    # 33 centroids need 6-bit fields, which can also say 33 .. 63.
    q = QuantizedTensor("q", (10,), np.arange(0, 10, 2), np.zeros(5, int), np.ones(33), 5)
    blob = to_bytes([q], {}, coder="fixed", compress_header=False)
    f = open_dcz(blob)
    start = 12 + f.header_bytes + f.tensors[0].segments["indices"].offset
    bad = bytearray(blob)
    bad[start] = 0xFF  # first index = 0b111111 = 63
    rejects(reseal(bad), "symbol 63 >= alphabet 33")


def test_malicious_sizes_are_refused_quickly(sample_blob, edit_header) -> None:
    # A 2^31-element tensor described by a few bytes: the output bound stops it before
    # anything is allocated.
    bad = edit_header(sample_blob, lambda h: first(h, "sp.weight").update(shape=[2**31]))
    t0 = time.perf_counter()
    rejects(bad, "more than the limit", max_output_bytes=1 << 20)
    assert time.perf_counter() - t0 < 0.5
    with pytest.raises(FormatError, match="more than the limit"):
        open_dcz(sample_blob, max_output_bytes=100)


# --- version 2: segment lengths without offsets, ctx streams ---------------------------


@pytest.fixture
def sample_v2(records) -> bytes:
    """A version-2 file with an uncompressed header; fc.weight's kept entries fill a block
    (whole rows and columns empty), so ctx wins for its positions."""
    rng = np.random.default_rng(1)
    block = np.zeros((40, 50), dtype=bool)
    block[:10, :25] = rng.random((10, 25)) < 0.5
    pos = np.flatnonzero(block)
    fc = QuantizedTensor("fc.weight", (40, 50), pos, rng.integers(0, 4, pos.size),
                         np.array([-1.0, -0.5, 0.5, 1.0], np.float32), 5)  # fmt: skip
    recs = [fc if r.name == "fc.weight" else r for r in records]
    return to_bytes(recs, {"model": {"name": "demo"}}, coder="best", compress_header=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: first(h, "fc.bias").update(data=161), "needs 160 bytes, segment has 161"),
        (lambda h: first(h, "fc.bias").update(data=[0, 160]), "must be an integer"),
        (lambda h: first(h, "fc.weight")["indices"].update(coder="lzw"), "unknown coder"),
        (lambda h: first(h, "fc.weight")["gaps"].update(coder="huffman"), "lacks gap_bits"),
        (lambda h: first(h, "fc.weight")["gaps"].update(n=1), "ctx positions stream has n"),
        (lambda h: first(h, "fc.weight").update(gap_bits=4), "unknown key"),
        (lambda h: first(h, "fc.weight").update(shape=[5000, 1000]), "ctx coder's limit"),
        (lambda h: h["tensors"].pop(), "segments cover"),
    ],
)  # fmt: skip
def test_bad_v2_header_fields(sample_v2, edit_header, change, message: str) -> None:
    f = open_dcz(sample_v2)
    assert f.version == 2
    fc = next(t for t in f.tensors if t.name == "fc.weight")
    assert fc.streams["gaps"].coder == "ctx"  # the fixture exercises the ctx paths
    rejects(edit_header(sample_v2, change), message)


def test_ctx_is_not_allowed_in_version_1(sample_blob, edit_header) -> None:
    bad = edit_header(sample_blob, lambda h: first(h, "fc.weight")["indices"].update(coder="ctx"))
    rejects(bad, "unknown coder 'ctx'")


def test_ctx_segment_damage_is_rejected(sample_v2, reseal) -> None:
    f = open_dcz(sample_v2)
    fc = next(t for t in f.tensors if t.name == "fc.weight")
    seg = fc.segments["gaps"]
    start = 12 + f.header_bytes + seg.offset
    rejected = 0
    for i in range(seg.length):
        bad = bytearray(sample_v2)
        bad[start + i] ^= 0x10
        try:
            arrays, _ = decode(reseal(bad))
        except FormatError:
            rejected += 1
    # A range-coded map decodes to *something* from most damaged bytes (measured: 9 of 117
    # here are caught by the kept count, row flags and canonical end); the CRC is what
    # catches the rest. What matters: a FormatError or a decode, never anything else.
    assert rejected >= 1
