"""Image folders: ``DIR/<split>/<class>/<image>``, decoded with Pillow one at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from deep_compression.data.info import Data, DatasetConfig, DatasetInfo, per_channel
from deep_compression.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "load_imagefolder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Images whose statistics give an image folder's default mean/std (evenly spaced).
_STAT_SAMPLE = 5000
# A decoded image larger than this (pixels) is refused: Pillow's own bomb guard is 89M.
_MAX_PIXELS = 1 << 24


class ImageFolder(Dataset):
    """``root/<class>/<image>`` files, decoded with Pillow one at a time.

    Args:
        root: the split's directory (``DIR/train``).
        classes: class names in label order (the training split's sorted folder names).
        mean, std: per channel, for pixels scaled to [0, 1].
        size: ``(H, W)`` to resize to, or None (every image must have this shape then:
            ``shape`` is taken from the first image).
        channels: 1 (grey) or 3 (RGB).
    """

    def __init__(
        self,
        root: Path,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        size: tuple[int, int] | None,
        channels: int,
    ) -> None:
        index = {c: i for i, c in enumerate(classes)}
        self.samples: list[tuple[Path, int]] = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name not in index:
                raise DataError(
                    f"{folder}: class {folder.name!r} is not among the training classes"
                )
            files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            self.samples += [(f, index[folder.name]) for f in files]
        if not self.samples:
            raise DataError(f"{root}: no images (expected {root}/<class>/*.png or .jpg)")
        self.channels = channels
        self.size = size
        self.shape = size or self._read(self.samples[0][0]).shape[:2]
        c = channels
        self.mean = torch.tensor(per_channel(mean, c, "mean")).view(c, 1, 1)
        self.std = torch.tensor(per_channel(std, c, "std")).view(c, 1, 1)

    def _read(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                if im.width * im.height > _MAX_PIXELS:
                    raise DataError(f"{path}: {im.width}x{im.height} pixels is too large")
                im = im.convert("L" if self.channels == 1 else "RGB")
                if self.size is not None and im.size != (self.size[1], self.size[0]):
                    im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
                return np.array(im, dtype=np.uint8).reshape(im.height, im.width, self.channels)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"{path}: not a readable image ({e})") from None

    def __len__(self) -> int:
        return len(self.samples)

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i`` as ``(H, W, C)`` uint8."""
        path = self.samples[i][0]
        arr = self._read(path)
        if arr.shape[:2] != tuple(self.shape):
            first = f"{self.shape[1]}x{self.shape[0]}"
            raise DataError(
                f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from the first image's "
                f"{first}; set dataset.size"
            )
        return arr

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.pixels(i)).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std, self.samples[i][1]


def _folder_stats(folder: ImageFolder) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels in [0, 1] over (up to) 5,000 evenly spaced
    training images."""
    n = len(folder)
    picks = np.unique(np.linspace(0, n - 1, min(n, _STAT_SAMPLE)).astype(np.int64))
    total = np.zeros(folder.channels)
    squares = np.zeros(folder.channels)
    count = 0
    for i in picks:
        px = folder.pixels(int(i)).reshape(-1, folder.channels).astype(np.float64) / 255.0
        total += px.sum(0)
        squares += (px * px).sum(0)
        count += px.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_imagefolder(config: DatasetConfig) -> Data:
    root = Path(config.root)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(f"{root}: an image folder needs train/<class>/ and test/<class>/ folders")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not classes:
        raise DataError(f"{root / 'train'}: no class folders")
    first = next(
        f
        for c in classes
        for f in sorted((root / "train" / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    )
    channels = config.channels
    if channels is None:
        from PIL import Image

        with Image.open(first) as im:
            channels = 1 if im.mode in ("1", "L", "I", "I;16", "F") else 3

    def split(name: str, mean: Sequence[float], std: Sequence[float]) -> ImageFolder:
        return ImageFolder(root / name, classes, mean, std, config.size, channels)

    mean, std = config.mean, config.std
    if mean is None or std is None:
        stats = _folder_stats(split("train", [0.0], [1.0]))
        mean, std = mean or stats[0], std or stats[1]
    train = split("train", mean, std)
    info = DatasetInfo(
        config.label,
        (channels, *train.shape),
        tuple(per_channel(mean, channels, "mean")),
        tuple(per_channel(std, channels, "std")),
        classes,
    )
    val = split("val", mean, std) if (root / "val").is_dir() else None
    return Data(train, split("test", mean, std), info, val)
