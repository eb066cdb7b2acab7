"""Argument types and the one-line-error parser shared by the subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn

__all__ = [
    "OneLineParser",
    "HelpFormatter",
    "add_out_arg",
    "add_force_arg",
    "check_out",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "existing_file",
    "add_data_args",
    "add_model_args",
    "model_args_of",
    "dataset_of",
    "add_input_args",
    "load_input",
    "load_input_data",
    "setup_threads",
]


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it has none worth showing
    (``None``, ``False``) or the help text already states it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default" in text
            or not action.option_strings
        ):
            return text
        if isinstance(default, list | tuple):
            default = " ".join(str(v) for v in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``prog: error: message``, and
    whose help shows every default."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_out_arg(parser: argparse.ArgumentParser, what: str, *, required: bool = True) -> None:
    """``-o/--out FILE`` (the file the command writes) and ``--force``."""
    parser.add_argument(
        "-o", "--out", type=Path, required=required, metavar="FILE", help=f"{what} to write"
    )
    add_force_arg(parser)


def add_force_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force", action="store_true", help="replace output files that already exist"
    )


def check_out(args: argparse.Namespace, suffix: str | None, attr: str = "out") -> Path | None:
    """Check ``args.<attr>`` as an output file before any work starts (see
    :func:`deep_compression.fileio.check_output`); None when it was not given."""
    from deep_compression.fileio import check_output

    path = getattr(args, attr)
    if path is None:
        return None
    flag = "--" + attr.replace("_", "-")
    return check_output(path, force=args.force, suffix=suffix, what=flag)


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
        help="directory holding the dataset; an error if it does not (default: "
        "$DEEP_COMPRESSION_DATA, then the user cache, then a download)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)",
    )


def setup_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def progress_enabled() -> bool:
    """Progress goes to stderr: bars on a terminal, a line every few seconds elsewhere
    (see :mod:`deep_compression.progress`); ``DEEP_COMPRESSION_PROGRESS=0`` turns it off."""
    return os.environ.get("DEEP_COMPRESSION_PROGRESS", "1") != "0"


def model_arg(text: str) -> tuple[str, object]:
    """``KEY=VALUE``; VALUE is read as JSON (numbers, true, lists...), else as a string."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. depth=20)")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_model_args(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--model SPEC``, ``--model-arg KEY=VALUE`` and ``--allow-code``."""
    parser.add_argument(
        "--model",
        required=required,
        metavar="SPEC",
        help="a built-in model (lenet-300-100, lenet-5, small-cnn, vgg-16...), or your own: "
        "'path/to/net.py:name' or 'package.module:name', a callable returning the nn.Module "
        "(naming it here allows importing it)"
        + ("" if required else "; default: what the file says"),
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        type=model_arg,
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of --model, repeatable (VALUE read as JSON if it parses)",
    )
    parser.add_argument(
        "--allow-code",
        action="store_true",
        help="allow importing the Python code a file or recipe names as its model or dataset",
    )


def model_args_of(args: argparse.Namespace) -> dict[str, object]:
    return dict(args.model_arg)


def model_spec_of(args: argparse.Namespace) -> str | None:
    """``--model``, with a relative ``file.py`` made absolute (the files this command
    writes must name it so that it is found from anywhere)."""
    from deep_compression.models import resolve_spec

    return None if args.model is None else resolve_spec(args.model)


def dataset_of(text: str | None, meta_dataset: object = None, details: object = None):  # type: ignore[no-untyped-def]
    """The :class:`~deep_compression.data.DatasetConfig` of ``--dataset`` (a built-in name,
    an image folder or an .npz file), else the one a checkpoint records."""
    from deep_compression.data import DatasetConfig
    from deep_compression.errors import ConfigError

    if text is not None:
        return DatasetConfig.from_value(text)
    source = details.get("dataset_source") if isinstance(details, dict | MappingProxyType) else None
    if source is not None:
        return DatasetConfig.from_value(source)
    from deep_compression.data import DATASETS

    if isinstance(meta_dataset, str) and meta_dataset in DATASETS:
        return DatasetConfig.from_value(meta_dataset)
    raise ConfigError("the file does not say its dataset: pass --dataset")


def add_input_args(parser: argparse.ArgumentParser) -> None:
    """What a command reading a checkpoint accepts besides it: ``--model`` (and its
    arguments, ``--allow-code``) and ``--dataset`` for files that do not say them."""
    add_model_args(parser)
    parser.add_argument(
        "--dataset",
        default=None,
        metavar="DATASET",
        help="a built-in name, an image folder, an .npz file, or a table as in a recipe: "
        "'{ root = \"DIR\", mean = [...], std = [...] }' (default: what the checkpoint says)",
    )


def load_input(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``(model, metadata)`` of the checkpoint ``args.checkpoint`` (``--model`` and
    ``--allow-code`` applied)."""
    from deep_compression.loading import load_model

    allow = args.allow_code or args.model is not None
    return load_model(
        args.checkpoint, model=model_spec_of(args), model_args=model_args_of(args), allow_code=allow
    )


def load_input_data(args: argparse.Namespace, meta):  # type: ignore[no-untyped-def]
    """``(metadata, data)``: the dataset a checkpoint with ``meta`` was trained on (or
    ``--dataset``), normalised as it was trained, and ``meta`` naming it."""
    from dataclasses import replace

    from deep_compression.data import load_data

    config = dataset_of(args.dataset, meta.dataset, meta.details)
    loaded = load_data(
        config, args.data_dir, allow_code=args.allow_code, preprocessing=meta.preprocessing
    )
    meta = replace(
        meta,
        dataset=config.label,
        preprocessing=meta.preprocessing or loaded.info.preprocessing,
    ).with_details(dataset_source=config.to_dict())
    return meta, loaded


def _val_size(text: str) -> int | float | str:
    if text == "auto":
        return text
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', an image count or a fraction in (0, 1), got {text!r}"
        ) from None


def add_validation_args(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--val-size`` and ``--val-seed``: the validation split carved from the training
    set (:class:`~deep_compression.data.ValidationConfig`)."""
    parser.add_argument(
        "--val-size",
        type=_val_size,
        default=default,
        metavar="N",
        help="training images held out for validation: 'auto' (5,000, or a tenth of a "
        "smaller set), a count, a fraction such as 0.1, or 0 for none",
    )
    parser.add_argument(
        "--val-seed", type=int, default=0, metavar="SEED", help="seed of the validation draw"
    )
    parser.add_argument(
        "--val-from",
        choices=("train", "test", "val"),
        default=None,
        help="where the validation images come from: held out of the training images "
        "(right for a model trained here, or one that never saw them), the dataset's own "
        "val/, or one seeded part of the test images (the rest for the report); default: "
        "val/ if there is one, else train for a model trained here and test for a "
        "checkpoint that does not record the split it held out",
    )


def validation_of(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The :class:`~deep_compression.data.ValidationConfig` of ``--val-size``,
    ``--val-seed`` and ``--val-from``."""
    from deep_compression.data import ValidationConfig

    size = "auto" if args.val_size is None else args.val_size
    return ValidationConfig(size=size, seed=args.val_seed, source=args.val_from or "auto")
