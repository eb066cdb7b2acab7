"""The validation split: seeded, disjoint, the dataset's own when it has one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from deep_compression.data import Data, DatasetInfo, Split, ValidationConfig, carve_validation
from deep_compression.data.split import split_indices
from deep_compression.errors import ConfigError, DataError
from deep_compression.recipe import Recipe

INFO = DatasetInfo("toy", (1, 4, 4), (0.0,), (1.0,), ("0", "1"))


def _data(n: int, val: Split | None = None) -> Data:
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    y = torch.arange(n) % 2
    return Data(Split(x, y), Split(x[:3], y[:3]), INFO, val)


def test_indices_partition_the_training_set_and_depend_only_on_n_size_seed() -> None:
    train, val = split_indices(1000, ValidationConfig(100, seed=3))
    assert len(val) == 100 and len(train) == 900
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    again = split_indices(1000, ValidationConfig(100, seed=3))
    assert np.array_equal(again[1], val)
    other = split_indices(1000, ValidationConfig(100, seed=4))[1]
    assert not np.array_equal(other, val)
    # The draw is numpy's PCG64 permutation: an independent re-derivation agrees.
    perm = np.random.Generator(np.random.PCG64(3)).permutation(1000)
    assert np.array_equal(val, np.sort(perm[:100]))


@pytest.mark.parametrize(
    ("size", "n", "expected"),
    [("auto", 60_000, 5000), ("auto", 48, 4), ("auto", 5, 1), (0.25, 400, 100), (7, 50, 7)],
)
def test_sizes(size: object, n: int, expected: int) -> None:
    assert ValidationConfig(size).count(n) == expected


def test_carving_a_split_keeps_images_and_labels_together() -> None:
    data = carve_validation(_data(200), ValidationConfig(50, seed=1))
    assert isinstance(data.train, Split) and isinstance(data.val, Split)
    assert len(data.train) == 150 and len(data.val) == 50
    # Each image's value is its index: labels still match, and no image is in both.
    for part in (data.train, data.val):
        ids = part.x[:, 0, 0, 0].long()
        assert torch.equal(part.y, ids % 2)
    assert not set(data.train.x[:, 0, 0, 0].tolist()) & set(data.val.x[:, 0, 0, 0].tolist())


def test_a_dataset_s_own_validation_split_wins_and_size_0_carves_nothing() -> None:
    own = Split(torch.zeros(5, 1, 4, 4), torch.zeros(5, dtype=torch.long))
    data = _data(100, val=own)
    assert carve_validation(data, ValidationConfig(10)) is data
    plain = _data(100)
    assert carve_validation(plain, ValidationConfig(0)).val is None


def test_any_map_style_dataset_is_carved_as_a_subset() -> None:
    ds = TensorDataset(torch.zeros(30, 1, 4, 4), torch.zeros(30, dtype=torch.long))
    data = carve_validation(Data(ds, ds, INFO), ValidationConfig(6))
    assert isinstance(data.val, Subset) and len(data.val) == 6 and len(data.train) == 24


@pytest.mark.parametrize("bad", [-1, 1.0, 1.5, "half", True, {"size": 5, "sed": 1}])
def test_bad_configs_are_rejected(bad: object) -> None:
    with pytest.raises(ConfigError):
        ValidationConfig.from_value(bad)


def test_a_split_that_leaves_nothing_to_train_on_is_a_data_error() -> None:
    with pytest.raises(DataError, match="nothing to train on"):
        ValidationConfig(100).count(100)


def test_recipes_read_validation_and_keep_old_digests_without_it() -> None:
    keep = {"method": "fraction", "keep": 0.5}
    base = {"model": "lenet-300-100", "prune": {"rounds": [{"criteria": {"*": keep}}]},
            "quantize": {}}  # fmt: skip
    default = Recipe.from_dict(base)
    assert default.validation == ValidationConfig("auto", 0)
    table = Recipe.from_dict({**base, "validation": {"size": 1000, "seed": 2}})
    assert table.validation == ValidationConfig(1000, 2)
    none = Recipe.from_dict({**base, "validation": 0})
    assert "validation" not in none.to_dict() and "validation" in default.to_dict()
    assert none.digest() != default.digest()
