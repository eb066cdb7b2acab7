"""Datasets as numpy arrays in an ``.npz`` file (read without pickle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deep_compression.data.idx import Split
from deep_compression.data.info import Data, DatasetConfig, DatasetInfo, per_channel
from deep_compression.errors import DataError

__all__ = ["load_npz"]


def _images(x: np.ndarray, where: str) -> torch.Tensor:
    """``(N, C, H, W)`` float32 in [0, 1] from ``(N, H, W)`` or ``(N, H, W, C)``."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise DataError(f"{where}: images must be (N, H, W) or (N, H, W, C), got {x.shape}")
    if x.dtype == np.uint8:
        t = torch.from_numpy(x).float() / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        t = torch.from_numpy(x.astype(np.float32))
    else:
        raise DataError(f"{where}: images must be uint8 or float, got {x.dtype}")
    return t.permute(0, 3, 1, 2).contiguous()


def load_npz(config: DatasetConfig) -> Data:
    path = Path(config.root)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays)
    if missing:
        raise DataError(f"{path}: missing arrays {sorted(missing)}")
    xs = {
        s: _images(arrays[f"x_{s}"], f"{path}: x_{s}")
        for s in ("train", "test", "val")
        if f"x_{s}" in arrays
    }
    c = xs["train"].shape[1]
    mean = config.mean or tuple(xs["train"].mean(dim=(0, 2, 3)).tolist())
    std = config.std or tuple(xs["train"].std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())
    m = torch.tensor(per_channel(mean, c, "mean")).view(1, c, 1, 1)
    s = torch.tensor(per_channel(std, c, "std")).view(1, c, 1, 1)
    splits = {}
    for name, x in xs.items():
        y = np.asarray(arrays.get(f"y_{name}"))
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: y_{name} must be {x.shape[0]} integer labels")
        splits[name] = Split((x - m) / s, torch.from_numpy(y.astype(np.int64)))
    n_classes = int(max(int(sp.y.max()) for sp in splits.values())) + 1
    classes = (
        tuple(str(c) for c in arrays["classes"])
        if "classes" in arrays
        else tuple(str(i) for i in range(n_classes))
    )
    info = DatasetInfo(
        config.label,
        tuple(xs["train"].shape[1:]),
        tuple(m.flatten().tolist()),
        tuple(s.flatten().tolist()),
        classes,
    )
    return Data(splits["train"], splits["test"], info, splits.get("val"))
