"""Writing and decoding .dcz files with numpy: exact round trips, determinism, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from deep_compression.dcz import (
    DenseTensor,
    QuantizedTensor,
    SparseTensor,
    decode,
    open_dcz,
    to_bytes,
    write_dcz,
)
from deep_compression.dcz.reader import to_dense
from deep_compression.errors import ConfigError, FormatError


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("coder", ["fixed", "huffman", "ans", "best"])
@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_is_bit_exact(records, coder: str, compress: bool) -> None:
    meta = {"model": {"name": "demo", "kwargs": {}}, "test_accuracy": 0.9876}
    blob = to_bytes(records, meta, coder=coder, chunk=100, compress_header=compress)
    arrays, got_meta = decode(blob)
    assert list(arrays) == [r.name for r in records]
    for r in records:
        assert bits_equal(arrays[r.name], to_dense(r)), r.name
    assert got_meta["test_accuracy"] == 0.9876 and "tool_version" in got_meta


def test_same_input_same_bytes(records, tmp_path) -> None:
    meta = {"b": 1, "a": [1, 2]}
    a = to_bytes(records, meta)
    assert a == to_bytes(records, dict(reversed(list(meta.items()))))
    write_dcz(tmp_path / "x.dcz", records, meta)
    assert (tmp_path / "x.dcz").read_bytes() == a


def test_edge_cases() -> None:
    f32, Q, S = np.float32, QuantizedTensor, SparseTensor
    none, two = np.zeros(0, int), np.arange(2, dtype=f32)
    records = [
        Q("none_kept", (4, 4), none, none, np.ones(2, f32), 5),
        Q("all_kept", (3, 3), np.arange(9), np.arange(9) % 2, np.array([1, -1], f32), 5),
        Q("k1", (50,), np.array([3, 40]), np.array([0, 0]), np.array([7], f32), 5),
        Q("bits1", (20,), np.array([0, 19]), np.array([0, 1]), two, 1),
        Q("bits16", (70_000,), np.array([69_999]), np.array([1]), two, 16),
        S("empty", (0, 5), none, np.zeros(0, f32), 5),
        S("scalar", (), np.array([0]), np.array([2.5], f32), 5),
        DenseTensor("half", np.arange(6, dtype=np.float16).reshape(2, 3)),
        DenseTensor("steps", np.array(7, dtype=np.int64)),
        DenseTensor("flags", np.array([True, False])),
        DenseTensor("big_endian", np.arange(3, dtype=">f4")),
    ]
    for coder in ("fixed", "huffman", "ans"):
        arrays, _ = decode(to_bytes(records, {}, coder=coder, chunk=1))
        for r in records:
            want = to_dense(r)
            if r.name == "big_endian":
                want = want.astype("<f4")
            assert np.array_equal(arrays[r.name], want) and arrays[r.name].shape == want.shape
            assert arrays[r.name].dtype == want.dtype.newbyteorder("="), r.name


def test_the_worked_example_of_the_spec() -> None:
    # docs/FORMAT.md section 8, byte for byte.
    blob = to_bytes(
        [
            QuantizedTensor(
                "w", (2, 8), np.array([1, 3, 4, 15]), np.array([0, 1, 1, 2]),
                np.array([-0.5, 0.25, 1.0], np.float32), gap_bits=2,
            ),
            DenseTensor("b", np.array([1.5, -2.0], np.float32)),
        ],
        {"model": {"name": "demo", "kwargs": {}}},
        compress_header=False,
        version=1,
    )  # fmt: skip
    assert len(blob) == 437
    assert blob[:12].hex(" ") == "89 44 43 5a 01 00 00 00 92 01 00 00"
    assert blob[12 + 402 :].hex(" ") == (
        "00 b8 00 34 00 3c 04 22 01 f8 60 03 21 20 8c 00 3e 00 c0 22 a5 2e e0"
    )
    assert decode(blob)[0]["w"].tolist() == [
        [0, -0.5, 0, 0.25, 0.25, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 1.0],
    ]


def test_stats_account_for_every_byte(records) -> None:
    f = open_dcz(to_bytes(records, {}, coder="huffman", chunk=64))
    stats = f.stats()
    assert 16 + f.header_bytes + sum(t.bytes for t in stats) == f.size
    fc = next(t for t in stats if t.name == "fc.weight")
    rec = next(r for r in records if r.name == "fc.weight")
    gaps = np.diff(rec.positions, prepend=-1)
    assert fc.fillers == int(((gaps - 1) // 31).sum())
    assert fc.streams["gaps"].n == fc.kept + fc.fillers
    assert fc.streams["indices"].fixed_bytes == (fc.kept * 5 + 7) // 8


def q(positions: list[int], indices: list[int], k: int, gap_bits: int = 5) -> QuantizedTensor:
    return QuantizedTensor("q", (4,), np.array(positions), np.array(indices), np.ones(k), gap_bits)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (q([2, 1], [0, 0], 1), "increasing"),
        (q([1, 4], [0, 0], 1), "increasing"),
        (q([1], [3], 2), r"outside \[0, 2\)"),
        (q([1], [0, 1], 2), "2 indices"),
        (q([1], [0], 0), "codebook size"),
        (q([1], [0], 1, gap_bits=0), "gap_bits"),
        (SparseTensor("s", (4,), np.array([1]), np.ones(2), 5), "2 values"),
        (DenseTensor("d", np.array(["a"])), "cannot be stored"),
    ],
)
def test_writer_rejects_bad_tensors(record, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        to_bytes([record], {})


def test_writer_rejects_bad_settings(records) -> None:
    with pytest.raises(ConfigError, match="coder"):
        to_bytes(records, {}, coder="zip")
    with pytest.raises(ConfigError, match="chunk"):
        to_bytes(records, {}, chunk=0)
    with pytest.raises(ConfigError, match="repeated"):
        to_bytes([records[-1], records[-1]], {})
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        to_bytes(records, {"accuracy": float("nan")})
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        to_bytes(records, {"when": object()})


def test_summary_of_odd_files() -> None:
    from deep_compression.dcz.summary import format_summary, summarize

    f32 = np.float32
    odd = [
        SparseTensor("empty", (0, 5), np.zeros(0, int), np.zeros(0, f32), 5),
        QuantizedTensor("q", (8,), np.array([1, 6]), np.array([0, 1]), np.ones(2, f32), 2),
    ]
    for records in (odd, [DenseTensor("d", np.ones(3, f32))], []):
        s = summarize(open_dcz(to_bytes(records, {})))
        assert s["file_bytes"] == sum(s["breakdown"].values())
        assert "this file" in format_summary(s)


def test_float16_storage_only_when_exact() -> None:
    """Float payloads go to 2 bytes exactly when nothing is lost, bits and zero signs alike."""
    from deep_compression.dcz import open_dcz

    exact = np.array([1.5, -0.0, 2.0**-14, 65504.0], np.float32)  # all binary16 values
    inexact = np.array([1.5, 0.1], np.float32)  # 0.1 is not
    records = [
        DenseTensor("exact", exact),
        DenseTensor("inexact", inexact),
        QuantizedTensor("q", (8,), np.array([2, 5]), np.array([1, 0]), exact[:2].copy(), 3),
        SparseTensor("s", (8,), np.array([0, 7]), np.array([0.1, 3.0], np.float32), 3),
    ]
    blob = to_bytes(records, {}, coder="huffman", compress_header=False)
    f = open_dcz(blob)
    half = {t.name: t.half for t in f.tensors}
    assert half == {"exact": True, "inexact": False, "q": True, "s": False}
    arrays, _ = decode(blob)
    assert arrays["exact"].view(np.uint32).tolist() == exact.view(np.uint32).tolist()
    assert arrays["inexact"].tolist() == inexact.tolist()
    assert f.tensors[0].segments["data"].length == 8  # 4 values x 2 bytes


@pytest.mark.parametrize(
    ("store", "dtype", "message"),
    [("float8", "float32", "store 'float8' is not allowed"),
     ("float16", "int32", "store 'float16' is not allowed")],
)  # fmt: skip
def test_bad_store_rejected(store: str, dtype: str, message: str) -> None:
    import json
    import struct
    import zlib

    blob = to_bytes([DenseTensor("d", np.zeros(2, np.int32))], {}, compress_header=False)
    h = int.from_bytes(blob[8:12], "little")
    header = json.loads(blob[12 : 12 + h])
    header["tensors"][0].update(store=store, dtype=dtype)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    body = blob[:8] + struct.pack("<I", len(text)) + text + blob[12 + h : -4]
    bad = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(FormatError, match=message):
        decode(bad)
