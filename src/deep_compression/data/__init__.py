"""Data: the built-in IDX datasets (MNIST, Fashion-MNIST; :mod:`~deep_compression.data.idx`)
and the user's own (image folders, ``.npz`` arrays, callables;
:mod:`~deep_compression.data.sources`)."""

from deep_compression.data.folder import ImageFolder
from deep_compression.data.idx import (
    DATASETS,
    DatasetSpec,
    Split,
    cache_dir,
    find_dataset_dir,
    get_spec,
    load_dataset,
    read_idx,
)
from deep_compression.data.info import FORMATS, Data, DatasetConfig, DatasetInfo
from deep_compression.data.memory import DEFAULT_MAX_BYTES, in_memory
from deep_compression.data.sources import load_data
from deep_compression.data.split import (
    DEFAULT_VAL_SIZE,
    ValidationConfig,
    carve_validation,
    split_indices,
)

__all__ = [
    "DEFAULT_VAL_SIZE",
    "ValidationConfig",
    "carve_validation",
    "split_indices",
    "DATASETS",
    "FORMATS",
    "Data",
    "DatasetConfig",
    "DatasetInfo",
    "DatasetSpec",
    "ImageFolder",
    "Split",
    "cache_dir",
    "find_dataset_dir",
    "get_spec",
    "load_data",
    "load_dataset",
    "read_idx",
    "DEFAULT_MAX_BYTES",
    "in_memory",
]
