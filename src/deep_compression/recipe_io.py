"""Reading recipe files: one place for the TOML parsing and its error messages.

A recipe (``recipes/*.toml``) is read whole by :mod:`deep_compression.pipeline`, and its
``[prune]`` or ``[quantize]`` table alone by the ``prune`` and ``quantize`` commands.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from deep_compression.errors import ConfigError

__all__ = ["read_toml"]


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed TOML document at ``path``.

    Raises:
        ConfigError: the file cannot be read or is not valid TOML (the message names it).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read recipe ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
