"""Reading recipe files and their tables: one place for the parsing and its messages.

A recipe (``recipes/*.toml``) is read whole by :mod:`deep_compression.pipeline`, and its
``[prune]`` or ``[quantize]`` table alone by the ``prune`` and ``quantize`` commands.
Every config dataclass reads its table with :func:`from_table`: unknown keys are an
error that lists the allowed ones, nested tables are converted by the caller's parsers,
and the dataclass's own ``__post_init__`` validates the values.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from deep_compression.errors import ConfigError

__all__ = ["read_toml", "load_config", "from_table", "reject_unknown"]

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


def reject_unknown(d: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    """Raise :class:`ConfigError` if ``d`` has keys outside ``allowed`` (usually typos)."""
    unknown = set(d) - set(allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def from_table(
    cls: Callable[..., T],
    d: object,
    where: str,
    parsers: Mapping[str, Callable[[Any, str], Any]] | None = None,
) -> T:
    """Build the dataclass ``cls`` from the recipe table ``d``.

    Args:
        cls: a dataclass whose ``__post_init__`` validates its fields (messages name the
            field as ``<table>.<field>``).
        d: the table (any other type is an error).
        where: the table's name in messages (``"prune.retrain"``).
        parsers: per field, ``parse(value, where_of_field)`` for values that are tables
            themselves (nested configs); other values are passed as they are.

    Raises:
        ConfigError: ``d`` is not a table, has unknown keys, or a value is invalid; the
            message starts with ``where``.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a table, got {d!r}")
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    reject_unknown(d, fields, where)
    kwargs = dict(d)
    for name, parse in (parsers or {}).items():
        if name in kwargs:
            kwargs[name] = parse(kwargs[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
