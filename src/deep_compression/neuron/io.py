"""Reading one neuron's ``weight,input`` rows from a CSV file (the ``neuron`` command)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from deep_compression.errors import ConfigError

__all__ = ["read_neuron_csv"]


def _parse_number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {what} {text!r} is not a finite number")
    return value


def read_neuron_csv(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``weight,input`` rows of one neuron.

    An optional header row (both cells non-numeric, e.g. ``weight,input``) is skipped,
    as are blank lines and lines starting with ``#``; spaces around values are ignored.

    Returns:
        ``(weights, inputs)``, two ``(n,)`` float64 arrays.

    Raises:
        ConfigError: unreadable file, a row without exactly two cells, a value that is not
            a finite number, or no data rows. The message names the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    weights: list[float] = []
    inputs: list[float] = []
    seen_row = False
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        where = f"{path}: line {reader.line_num}"
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) != 2:
            raise ConfigError(
                f"{where}: expected 2 columns (weight, input), got {len(cells)}: {','.join(row)!r}"
            )
        if not seen_row:
            seen_row = True
            if not _looks_numeric(cells[0]) and not _looks_numeric(cells[1]):
                continue  # a header row
        if not cells[0] or not cells[1]:
            raise ConfigError(f"{where}: missing value in {','.join(row)!r}")
        weights.append(_parse_number(cells[0], "weight", where))
        inputs.append(_parse_number(cells[1], "input", where))
    if not weights:
        raise ConfigError(f"{path}: no data rows (expected lines of 'weight,input')")
    return np.array(weights), np.array(inputs)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
