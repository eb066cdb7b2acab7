"""Load any model file this project writes, ready to evaluate or deploy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from deep_compression.errors import FormatError

__all__ = ["load_any"]


def load_any(
    path: str | os.PathLike[str], *, sparse: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in ``path`` (``.safetensors`` checkpoint or ``.dcz``), in eval mode.

    Args:
        path: the file.
        sparse: run pruned fully connected layers as CSR
            :class:`~deep_compression.sparse.SparseLinear`: for a ``.dcz``, those the file
            stores pruned (see :func:`~deep_compression.encode.load_dcz`); for a
            checkpoint, those :func:`~deep_compression.sparse.sparsify_` picks (at least
            half of the weights masked out or zero).

    Returns:
        ``(model, metadata)``.

    Raises:
        FormatError: unknown file type or a malformed file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from deep_compression.checkpoint import load_model

        model, meta = load_model(path)
        if sparse:
            from deep_compression.sparse import sparsify_

            model = sparsify_(model)
        return model, meta
    if path.suffix == ".dcz":
        from deep_compression.encode import load_dcz

        return load_dcz(path, sparse=sparse)
    raise FormatError(
        f"{path}: unknown model file type {path.suffix!r} (expected .safetensors or .dcz)"
    )
