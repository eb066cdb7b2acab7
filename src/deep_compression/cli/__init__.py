"""The ``deep-compression`` command: one subcommand per pipeline stage.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)``, which registers the subcommand with ``func=run`` as default.
Subcommand modules import the torch-side stages inside their ``run`` functions, so
``--help`` and the numpy-only commands (``decode``, ``info``) start without loading torch.
Every error a user can cause surfaces as a :class:`~deep_compression.errors.DeepCompressionError`
and is printed here on one line with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from deep_compression import __version__
from deep_compression.cli._common import OneLineParser
from deep_compression.errors import DeepCompressionError

__all__ = ["main", "build_parser"]

# Subcommand modules in the order --help lists them (the order of the pipeline).
_COMMANDS = ("train", "shrink", "prune", "quantize", "dcz", "imports", "compress", "export")


def _launched() -> bool:
    """Whether torchrun (or another launcher) started several processes."""
    world = os.environ.get("WORLD_SIZE", "1")
    return world.isdigit() and int(world) > 1


@contextlib.contextmanager
def _quiet_unless_main(main: bool) -> Iterator[None]:
    """Stdout and progress of ranks other than 0 are dropped (errors still show)."""
    if main:
        yield
        return
    progress = os.environ.get("DEEP_COMPRESSION_PROGRESS")
    os.environ["DEEP_COMPRESSION_PROGRESS"] = "0"
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        if progress is None:
            os.environ.pop("DEEP_COMPRESSION_PROGRESS", None)
        else:
            os.environ["DEEP_COMPRESSION_PROGRESS"] = progress


def build_parser() -> OneLineParser:
    import importlib

    parser = OneLineParser(
        prog="deep-compression",
        description="Deep Compression for PyTorch: prune, quantize and entropy-code a "
        "network into one small .dcz file, and decode it back.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in _COMMANDS:
        importlib.import_module(f"deep_compression.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # Under torchrun every rank runs the command; rank 0 alone prints and writes
        # (files: deep_compression.fileio.is_writer). A single process is unaffected.
        if not _launched():
            return int(args.func(args) or 0)
        from deep_compression import distributed  # imports torch: only when launched

        with distributed.session(), _quiet_unless_main(distributed.is_main()):
            return int(args.func(args) or 0)
    except DeepCompressionError as e:
        print(f"deep-compression {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"deep-compression {args.command}: interrupted", file=sys.stderr)
        return 130
