"""in_memory: the tensors iterating the dataset gives, decoded once; bounded by max_bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

from deep_compression.data import ImageFolder, Split, in_memory
from deep_compression.errors import ConfigError

CIFAR_TEST = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10-jpeg/test"


def make_folder(root: Path, per_class: int = 4, size: tuple[int, int] = (5, 6)) -> ImageFolder:
    """Random RGB PNGs in ``root/<class>/`` (two classes), as an ImageFolder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            px = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(px).save(root / c / f"{i}.png")
    return ImageFolder(root, ("cat", "dog"), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), None, 3)


def iterated(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: every item, one at a time, stacked."""
    items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def test_image_folder_gives_the_iterated_tensors_bit_for_bit(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    split = in_memory(folder)
    assert isinstance(split, Split)
    x, y = iterated(folder)
    assert split.x.dtype == torch.float32 and split.x.shape == (8, 3, 5, 6)
    assert split.x.is_contiguous()
    assert torch.equal(split.x, x) and torch.equal(split.y, y) and split.y.dtype == torch.int64


def test_subsets_of_a_folder_keep_their_order(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    nested = Subset(Subset(folder, [7, 0, 5, 2, 3]), [4, 0, 1])  # folder items 3, 7, 0
    split = in_memory(nested)
    x, y = iterated(nested)
    assert isinstance(split, Split)
    assert torch.equal(split.x, x) and torch.equal(split.y, y)
    assert split.y.tolist() == [0, 1, 0]


class Pairs(Dataset):
    """A dataset of numpy images and integer labels (not an ImageFolder)."""

    def __init__(self, n: int) -> None:
        self.x = np.random.default_rng(1).standard_normal((n, 2, 3, 3)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i], i % 3


def test_any_dataset_is_stacked() -> None:
    data = Pairs(7)
    split = in_memory(data)
    assert isinstance(split, Split)
    assert torch.equal(split.x, torch.from_numpy(data.x))
    assert split.y.tolist() == [i % 3 for i in range(7)] and split.y.dtype == torch.int64


def test_a_split_stays_as_it_is() -> None:
    split = Split(torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.int64))
    assert in_memory(split) is split


def test_too_large_keeps_streaming(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path)
    need = 8 * (3 * 5 * 6 * 4 + 8)
    assert in_memory(folder, max_bytes=need - 1) is folder
    assert "stream" in capsys.readouterr().err
    assert isinstance(in_memory(folder, max_bytes=need), Split)
    assert not isinstance(in_memory(Pairs(7), max_bytes=10), Split)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "2G", None, 1 << 41])
def test_bad_max_bytes(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        in_memory(Pairs(2), max_bytes=bad)  # type: ignore[arg-type]


def test_items_of_different_shapes_are_refused() -> None:
    class Ragged(Pairs):
        def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
            return self.x[i][:, : 1 + i % 2], 0

    with pytest.raises(ConfigError, match="item 1"):
        in_memory(Ragged(3))


@pytest.mark.skipif(not CIFAR_TEST.is_dir(), reason=f"{CIFAR_TEST} not here")
def test_cifar_jpegs_match_the_iterated_images() -> None:
    classes = sorted(p.name for p in CIFAR_TEST.iterdir())
    folder = ImageFolder(CIFAR_TEST, classes, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), None, 3)
    picks = Subset(folder, list(range(0, len(folder), 50)))  # 200 images, every class
    split = in_memory(picks)
    x, y = iterated(picks)
    assert isinstance(split, Split) and split.x.shape == (200, 3, 32, 32)
    assert torch.equal(split.x, x) and torch.equal(split.y, y)
