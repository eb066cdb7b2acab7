"""Load any model file this project writes, ready to evaluate or deploy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from deep_compression.errors import FormatError

__all__ = ["load_any"]


def load_any(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in ``path`` (``.safetensors`` checkpoint or ``.dcz``), in eval mode.

    Returns:
        ``(model, metadata)``.

    Raises:
        FormatError: unknown file type or a malformed file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from deep_compression.checkpoint import load_model

        return load_model(path)
    if path.suffix == ".dcz":
        from deep_compression.encode import load_dcz

        return load_dcz(path)
    raise FormatError(
        f"{path}: unknown model file type {path.suffix!r} (expected .safetensors or .dcz)"
    )
