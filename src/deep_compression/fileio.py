"""Writing files so that no command ever leaves half a file or loses an old one.

Every output of the project goes through :func:`atomic_write` (or
:func:`atomic_path`): the data are written to a hidden temporary file in the target's
directory and renamed over the target only once complete, so a crash, a full disk or a
bad argument leaves either the old file or the new one, never a mix, and no temporary
file behind. No torch here: the ``.dcz`` writer uses it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deep_compression.errors import ConfigError

__all__ = ["atomic_path", "atomic_write", "write_json", "check_output", "is_writer"]


def is_writer() -> bool:
    """Whether this process writes files: always, except the ranks other than 0 of a
    ``torchrun`` launch (``RANK`` and ``WORLD_SIZE`` set), where rank 0 alone writes.

    Every output goes through :func:`atomic_path`, so this is the one place that makes
    N processes produce one set of files.
    """
    world = os.environ.get("WORLD_SIZE", "1")
    return not (world.isdigit() and int(world) > 1 and os.environ.get("RANK", "0") != "0")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write; renamed to ``path`` when the block ends without error.

    Parent directories are created. On an exception the temporary file is removed and
    ``path`` is untouched. On ranks other than 0 of a torchrun launch the data go to a
    scratch file that is discarded (see :func:`is_writer`).
    """
    path = Path(path)
    if not is_writer():  # another rank of a torchrun launch: rank 0 writes the file
        with tempfile.TemporaryDirectory(prefix="deep-compression-") as scratch:
            yield Path(scratch) / path.name
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON (reproducible bytes), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def check_output(
    path: str | os.PathLike[str], *, force: bool, suffix: str | None = None, what: str = "output"
) -> Path:
    """Check, before any work starts, that ``path`` can be written as an output file.

    Args:
        path: the file to write.
        force: replacing an existing file is allowed.
        suffix: the required file suffix (``".dcz"``), if any.
        what: names the argument in messages (``"--out"``).

    Raises:
        ConfigError: wrong suffix, an existing directory, an existing file without
            ``force``, or a parent that is not a directory.
    """
    path = Path(path)
    if suffix is not None and path.suffix != suffix:
        raise ConfigError(f"{what} {path}: expected a {suffix} file")
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a directory; give a file name")
    if path.exists() and not force:
        raise ConfigError(f"{what} {path}: already exists; pass --force to replace it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{what} {path}: {parent} is not writable")
    return path
