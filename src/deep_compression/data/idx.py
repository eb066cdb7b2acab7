"""MNIST and Fashion-MNIST: find the IDX files, verify them, load normalised tensors.

Where a dataset is looked for, in order (the first directory holding all four files wins):

1. the directory given by the caller (``--data-dir`` on the command line);
2. the ``DEEP_COMPRESSION_DATA`` environment variable;
3. the user cache directory (``$XDG_CACHE_HOME/deep-compression`` or ``~/.cache/deep-compression``);
4. a system copy (Debian's ``dataset-fashion-mnist`` package installs one);
5. a download from the usual public mirrors into the cache directory.

Each directory may hold the files directly or in a ``<dataset>/`` subdirectory
(``$DEEP_COMPRESSION_DATA/mnist/train-images-idx3-ubyte.gz``). Files may be gzipped or
raw. Whatever the source, the MD5 of the *uncompressed* bytes must equal the official
one: re-compressed copies differ in their ``.gz`` checksums but never in the raw bytes.

The IDX reader is numpy only; :func:`load_dataset` converts to torch tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deep_compression.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "Split",
    "cache_dir",
    "find_dataset_dir",
    "idx_file",
    "load_dataset",
    "read_idx",
]

ENV_VAR = "DEEP_COMPRESSION_DATA"

# IDX type byte -> numpy dtype (big-endian on disk).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# No real IDX file comes near this; it bounds what a corrupt header can make us allocate.
_MAX_IDX_BYTES = 1 << 31


@dataclass(frozen=True)
class DatasetSpec:
    """A 28x28 grey-scale IDX dataset: file names, official raw MD5s, mirrors, statistics.

    ``mean`` and ``std`` are the training-set pixel statistics (pixels scaled to [0, 1])
    used to normalise inputs; a deployer must apply the same preprocessing, so they are
    written into checkpoints and ``.dcz`` files.
    """

    name: str
    files: dict[str, tuple[str, str]]  # role -> (file name without .gz, raw MD5)
    mirrors: tuple[str, ...]
    mean: float
    std: float
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 28, 28)

    @property
    def preprocessing(self) -> dict[str, object]:
        """What a deployer must do to raw ``uint8`` pixels before calling the model."""
        return {
            "input_shape": list(self.input_shape),
            "scale": 1.0 / 255.0,
            "mean": self.mean,
            "std": self.std,
            "formula": "x = (pixel * scale - mean) / std",
        }


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        files={
            "train-images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
            "train-labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
            "test-images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
            "test-labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        mean=0.1307,
        std=0.3081,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files={
            "train-images": ("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            "train-labels": ("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9"),
            "test-images": ("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a"),
            "test-labels": ("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965"),
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        mean=0.2860,
        std=0.3530,
    ),
}

_SYSTEM_DIRS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``; a :class:`ConfigError` lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}"
        ) from None


def _read_bytes(path: Path) -> bytes:
    """The uncompressed bytes of ``path`` (gunzipped when it is a gzip file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as g:
                # Read at most one byte past the bound so an oversized file is detected
                # without ever holding more than the bound in memory.
                data = g.read(_MAX_IDX_BYTES + 1)
        else:
            data = path.read_bytes()
    except OSError as e:  # includes gzip.BadGzipFile and EOFError subclasses of OSError
        raise DataError(f"{path}: cannot read ({e})") from None
    except EOFError:
        raise DataError(f"{path}: truncated gzip stream") from None
    if len(data) > _MAX_IDX_BYTES:
        raise DataError(f"{path}: larger than {_MAX_IDX_BYTES} bytes; not an IDX dataset file")
    return data


def read_idx(path: str | os.PathLike[str], md5: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a numpy array of its declared shape.

    Args:
        path: the file.
        md5: if given, the expected MD5 (hex) of the uncompressed bytes.

    Returns:
        An array of shape ``(d0, d1, ...)`` as declared in the header, in native byte order.

    Raises:
        DataError: the file is missing, not gzip or IDX, truncated, too long, or its
            checksum differs. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = _read_bytes(path)
    if md5 is not None:
        got = hashlib.md5(data).hexdigest()
        if got != md5.lower():
            raise DataError(f"{path}: MD5 of the uncompressed bytes is {got}, expected {md5}")
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise DataError(f"{path}: bad IDX magic {data[:4].hex()} (expected 0000 08-0e 01-04)")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_DTYPES[type_code]
    expected = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise DataError(
            f"{path}: {what}: {len(data)} bytes, header declares shape {shape} = {expected} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def cache_dir() -> Path:
    """The per-user cache directory for downloaded datasets."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "deep-compression"


def idx_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem.gz`` or ``directory/stem`` (an IDX file, compressed or not), or None."""
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _complete_dir(directory: Path, spec: DatasetSpec) -> Path | None:
    """``directory`` or ``directory/<name>`` if it holds all four files of ``spec``."""
    for d in (directory / spec.name, directory):
        if all(idx_file(d, stem) for stem, _ in spec.files.values()):
            return d
    return None


def _download(spec: DatasetSpec, target: Path) -> None:
    """Fetch the four gzipped files from the first mirror that answers; verify raw MD5s.

    Raises:
        DataError: no mirror gave a file (the message names the first failure only).
    """
    target.mkdir(parents=True, exist_ok=True)
    for stem, md5 in spec.files.values():
        errors = []
        for mirror in spec.mirrors:
            url = mirror + stem + ".gz"
            fd, tmp = tempfile.mkstemp(dir=target, suffix=".part")
            try:
                with urllib.request.urlopen(url, timeout=30) as r, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(r, out)
                read_idx(tmp, md5)  # verify before the file takes its final name
                os.replace(tmp, target / (stem + ".gz"))
                break
            except (OSError, DataError) as e:
                reason = getattr(e, "reason", None) or e
                errors.append(f"{url.split('/')[2]}: {reason}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise DataError(f"download failed ({errors[0]})")


def _check_data_dir(data_dir: str | os.PathLike[str], spec: DatasetSpec) -> Path:
    """The directory of ``spec``'s files under a ``--data-dir`` the user gave, or an error
    that says what is wrong with it (a typo must not silently fall back elsewhere)."""
    directory = Path(data_dir)
    if not directory.exists():
        raise DataError(f"--data-dir {directory}: no such directory")
    if not directory.is_dir():
        raise DataError(f"--data-dir {directory}: not a directory")
    found = _complete_dir(directory, spec)
    if found is None:
        names = ", ".join(stem for stem, _ in spec.files.values())
        raise DataError(
            f"--data-dir {directory}: no {spec.name} files in it or in {directory / spec.name} "
            f"(expected {names}, each optionally .gz)"
        )
    return found


def find_dataset_dir(
    name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> Path:
    """The directory holding the four IDX files of dataset ``name`` (see module docs).

    A ``data_dir`` given by the caller must hold the files: it is never skipped.

    Raises:
        DataError: ``data_dir`` lacks the files, or they are nowhere and the download
            failed (or ``download=False``); one line that says where it looked and how
            to fix it.
    """
    spec = get_spec(name)
    if data_dir is not None:
        return _check_data_dir(data_dir, spec)
    candidates: list[tuple[str, Path]] = []
    if os.environ.get(ENV_VAR):
        candidates.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR])))
    candidates.append(("cache", cache_dir()))
    candidates += [("system", d) for d in _SYSTEM_DIRS.get(name, ())]
    for _, directory in candidates:
        found = _complete_dir(directory, spec)
        if found is not None:
            return found
    looked = ", ".join(str(d) for _, d in candidates)
    fix = (
        f"pass --data-dir DIR or set {ENV_VAR}=DIR (DIR holding the four IDX files or a "
        f"{name}/ folder of them)"
    )
    if not download:
        raise DataError(f"{name} not found in {looked}; {fix}")
    target = cache_dir() / spec.name
    try:
        _download(spec, target)
    except DataError as e:
        raise DataError(f"{name} not found in {looked} and {e}; {fix}") from None
    return target


@dataclass(frozen=True)
class Split:
    """One split of a dataset as in-memory tensors; also a map-style torch ``Dataset``.

    Attributes:
        x: ``(N, C, H, W)`` float32, normalised with the dataset's mean and std.
        y: ``(N,)`` int64 class labels.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[Split, Split]:
    """Load ``(train, test)`` splits of ``name``, verified and normalised.

    Raises:
        DataError: a file is missing, corrupt, or images and labels disagree.
    """
    import torch

    spec = get_spec(name)
    directory = find_dataset_dir(name, data_dir, download)
    arrays = {}
    for role, (stem, md5) in spec.files.items():
        path = idx_file(directory, stem)
        assert path is not None
        arrays[role] = read_idx(path, md5)
    splits = []
    for part in ("train", "test"):
        images, labels = arrays[f"{part}-images"], arrays[f"{part}-labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{directory}: {part} images {images.shape} and labels {labels.shape} disagree"
            )
        x = torch.from_numpy(images.astype(np.float32) / 255.0)
        x = ((x - spec.mean) / spec.std).unsqueeze(1).contiguous()
        splits.append(Split(x, torch.from_numpy(labels.astype(np.int64))))
    return splits[0], splits[1]
