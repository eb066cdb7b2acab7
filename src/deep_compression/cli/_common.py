"""Argument types and the one-line-error parser shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = [
    "OneLineParser",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "existing_file",
    "add_data_args",
    "setup_threads",
]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``prog: error: message``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: type, minimum: float, inclusive: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse uses it in messages
    return parse


positive_int = _number(int, 1, True, "a positive integer")
nonnegative_int = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0.0, False, "a positive number")
nonnegative_float = _number(float, 0.0, True, "a number >= 0")


def existing_file(text: str) -> Path:
    """An argument naming a readable file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable")
    return path


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--threads``, which every command that touches data accepts."""
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory holding the dataset (else $DEEP_COMPRESSION_DATA, the user cache, "
        "or a download)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )


def setup_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def progress_enabled() -> bool:
    """Progress bars go to stderr; show them unless it is redirected to a file."""
    return sys.stderr.isatty() or bool(os.environ.get("DEEP_COMPRESSION_PROGRESS"))
