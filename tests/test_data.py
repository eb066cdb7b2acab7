"""IDX reading, checksum verification and data lookup."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from deep_compression.data import DATASETS, find_dataset_dir, read_idx
from deep_compression.errors import DataError


def write_idx(path: Path, arr: np.ndarray, compress: bool = False) -> bytes:
    """Write ``arr`` (uint8) as an IDX file independently of the reader under test."""
    raw = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return raw


@pytest.mark.parametrize("compress", [False, True])
def test_roundtrip_raw_and_gzip(tmp_path: Path, compress: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = write_idx(tmp_path / "a", arr, compress)
    out = read_idx(tmp_path / "a", hashlib.md5(raw).hexdigest())
    np.testing.assert_array_equal(out, arr)


def test_int32_big_endian(tmp_path: Path) -> None:
    vals = np.array([1, -2, 70000], dtype=">i4")
    raw = struct.pack(">HBB", 0, 0x0C, 1) + struct.pack(">I", 3) + vals.tobytes()
    (tmp_path / "b").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), [1, -2, 70000])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw[:-1], "truncated"),
        (lambda raw: raw + b"\0", "too long"),
        (lambda raw: b"\x01" + raw[1:], "bad IDX magic"),
        (lambda raw: raw[:2] + b"\x07" + raw[3:], "bad IDX magic"),
        (lambda raw: raw[:3], "too short"),
        (lambda raw: raw[:6], "truncated IDX header"),
    ],
)
def test_corrupt_idx_rejected_naming_the_file(tmp_path: Path, mutate, message: str) -> None:
    raw = write_idx(tmp_path / "good", np.zeros((2, 2, 2), np.uint8))
    bad = tmp_path / "bad-file"
    bad.write_bytes(mutate(raw))
    with pytest.raises(DataError, match=message) as info:
        read_idx(bad)
    assert "bad-file" in str(info.value)
    assert "\n" not in str(info.value)


def test_checksum_mismatch(tmp_path: Path) -> None:
    write_idx(tmp_path / "c", np.ones((3,), np.uint8))
    with pytest.raises(DataError, match="MD5 .* expected 0{32}"):
        read_idx(tmp_path / "c", "0" * 32)


def test_truncated_gzip(tmp_path: Path) -> None:
    raw = gzip.compress(b"\0\0\x08\x01\0\0\0\x10" + bytes(16))
    (tmp_path / "t.gz").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="t.gz"):
        read_idx(tmp_path / "t.gz")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")


def _fake_dataset(directory: Path) -> None:
    directory.mkdir(parents=True)
    for stem, _ in DATASETS["mnist"].files.values():
        (directory / (stem + ".gz")).write_bytes(b"")


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--data-dir beats the environment variable, which beats the cache; a dataset
    subdirectory is found as well as the files themselves."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEP_COMPRESSION_DATA", raising=False)
    _fake_dataset(tmp_path / "cache" / "deep-compression" / "mnist")
    assert find_dataset_dir("mnist", download=False) == tmp_path / "cache/deep-compression/mnist"
    _fake_dataset(tmp_path / "env" / "mnist")
    monkeypatch.setenv("DEEP_COMPRESSION_DATA", str(tmp_path / "env"))
    assert find_dataset_dir("mnist", download=False) == tmp_path / "env" / "mnist"
    _fake_dataset(tmp_path / "flag")
    assert find_dataset_dir("mnist", tmp_path / "flag", download=False) == tmp_path / "flag"


def test_not_found_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One line that says where it looked and how to fix it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("DEEP_COMPRESSION_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        find_dataset_dir("mnist", download=False)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert str(tmp_path / "env") in message and str(tmp_path / "deep-compression") in message
    assert "--data-dir" in message and "DEEP_COMPRESSION_DATA" in message


def test_not_found_after_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the error names the first failure only, and the fix."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("DEEP_COMPRESSION_DATA", raising=False)

    def offline(url: str, timeout: float) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DataError) as info:
        find_dataset_dir("mnist")
    message = str(info.value)
    assert message.count("Name or service not known") == 1 and "--data-dir" in message


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_wrong_data_dir_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A --data-dir that does not hold the data never falls back to another place."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _fake_dataset(tmp_path / "cache" / "deep-compression" / "mnist")  # would be found
    target = tmp_path / "d"
    if kind == "file":
        target.write_text("")
    elif kind == "empty":
        target.mkdir()
    expected = {"missing": "no such directory", "file": "not a directory", "empty": "no mnist"}
    with pytest.raises(DataError, match=expected[kind]):
        find_dataset_dir("mnist", target, download=False)


@pytest.mark.mnist
def test_real_mnist(mnist) -> None:
    """The real files verify against the official raw MD5s and normalise as documented."""
    train, test = mnist
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.y.dtype.is_floating_point is False and int(train.y.max()) == 9
    assert abs(float(train.x.mean())) < 1e-3 and abs(float(train.x.std()) - 1) < 1e-2
    assert np.bincount(test.y.numpy()).tolist()[:3] == [980, 1135, 1032]
