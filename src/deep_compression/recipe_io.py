"""Reading recipe files: one place for the TOML parsing and its error messages.

A recipe (``recipes/*.toml``) is read whole by :mod:`deep_compression.pipeline`, and its
``[prune]`` or ``[quantize]`` table alone by the ``prune`` and ``quantize`` commands.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from deep_compression.errors import ConfigError

__all__ = ["read_toml", "load_config"]

T = TypeVar("T")


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


def load_config(
    path: str | os.PathLike[str], parse: Callable[[Mapping[str, Any]], T], table: str | None = None
) -> T:
    """``parse`` applied to the whole recipe at ``path``, or to its ``[table]``.

    Raises:
        ConfigError: unreadable file, invalid TOML, a missing ``[table]``, or what ``parse``
            rejects, every message prefixed with the file's path.
    """
    path = Path(path)
    doc = read_toml(path)
    if table is not None:
        if table not in doc:
            raise ConfigError(f"{path}: no [{table}] table")
        doc = doc[table]
    try:
        return parse(doc)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
