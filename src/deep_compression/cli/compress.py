"""``deep-compression compress`` (the whole pipeline) and ``deep-compression report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deep_compression.cli._common import (
    add_data_args,
    add_force_arg,
    check_out,
    dataset_of,
    existing_file,
    progress_enabled,
    setup_threads,
)
from deep_compression.errors import ConfigError
from deep_compression.fileio import check_output

# The thresholds s (x std) of the sensitivity curves drawn with every run.
_SENSITIVITY_THRESHOLDS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compress",
        help="run the whole pipeline from a recipe: prune, quantize, encode, report",
        description="Run a recipe (recipes/*.toml) from a dense checkpoint, or from scratch "
        "with --train, to a .dcz file: iterative pruning with retraining, k-means "
        "quantization with centroid fine-tuning, relative-index + entropy coding. Every "
        "phase writes its output into --out-dir; an interrupted run resumes after its last "
        "finished phase (and pruning after its last finished round). Prints the per-phase, "
        "per-stage and per-layer tables and writes them as report.json and report.md, with "
        "plots under plots/.",
    )
    c.add_argument(
        "checkpoint",
        nargs="?",
        type=existing_file,
        metavar="CHECKPOINT",
        help="dense checkpoint to start from (or --train)",
    )
    c.add_argument(
        "--checkpoint",
        dest="checkpoint_opt",
        type=existing_file,
        metavar="CHECKPOINT",
        help="the same as the positional CHECKPOINT",
    )
    c.add_argument(
        "--train", action="store_true", help="train the dense model first (recipe's [train])"
    )
    c.add_argument("--recipe", required=True, type=existing_file, help="recipe TOML file")
    c.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="run directory (default: runs/compress/<recipe name>)",
    )
    c.add_argument(
        "-o", "--out", type=Path, metavar="FILE", help="also copy the final .dcz (and report) here"
    )
    add_force_arg(c)
    c.add_argument(
        "--restart", action="store_true", help="discard a previous run in --out-dir, start over"
    )
    c.add_argument("--no-plots", action="store_true", help="skip the plots")
    c.add_argument(
        "--allow-code",
        action="store_true",
        help="allow importing the Python code the recipe names as its model or dataset",
    )
    add_data_args(c)
    c.set_defaults(func=run_compress)

    r = sub.add_parser(
        "report",
        help="print the tables of a finished compress run and (re)write its plots",
        description="Print the per-phase, per-stage and per-layer tables of a run directory "
        "written by `compress`, and write its plots: weight distributions before/after "
        "pruning and after quantization with the centroids, per-layer kept % and bits, "
        "and the sensitivity curves of the dense model.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a compress run directory")
    r.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity curves")
    r.add_argument("--allow-code", action="store_true", help="allow importing the run's model code")
    add_data_args(r)
    r.set_defaults(func=run_report)


def _print_report(report, run_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from deep_compression.report.markdown import report_markdown

    print()
    print(report_markdown(report))
    print(f"report: {run_dir / 'report.md'} and report.json")


def _write_plots(run_dir: Path, report, data_dir, sensitivity: bool, allow_code: bool) -> None:  # type: ignore[no-untyped-def]
    """Load the run's three checkpoints (and the test data for the sensitivity curves)
    and draw every plot into ``run_dir/plots``."""
    from deep_compression.data import load_data
    from deep_compression.loading import load_model
    from deep_compression.prune.sensitivity import sensitivity_analysis, write_csv
    from deep_compression.report.plots import write_run_plots

    dense, _ = load_model(run_dir / "dense.safetensors", allow_code=allow_code)
    pruned, _ = load_model(run_dir / "pruned.safetensors", allow_code=allow_code)
    quantized, meta = load_model(run_dir / "quantized.safetensors", allow_code=allow_code)
    result = None
    if sensitivity:
        test = load_data(
            dataset_of(None, meta.dataset, meta.details),
            data_dir,
            allow_code=allow_code,
            preprocessing=meta.preprocessing,
        ).test
        result = sensitivity_analysis(
            dense, test, _SENSITIVITY_THRESHOLDS, progress=progress_enabled()
        )
        (run_dir / "plots").mkdir(exist_ok=True)
        write_csv(result, run_dir / "plots" / "sensitivity.csv")
    paths = write_run_plots(run_dir / "plots", report, dense, pruned, quantized, result)
    print(f"plots: {', '.join(str(p) for p in paths)}")


def run_compress(args: argparse.Namespace) -> int:
    from deep_compression.pipeline import compress, copy_final
    from deep_compression.recipe import load_recipe

    setup_threads(args.threads)
    if args.checkpoint and args.checkpoint_opt:
        raise ConfigError("give the checkpoint once (positional or --checkpoint)")
    checkpoint = args.checkpoint or args.checkpoint_opt
    if (checkpoint is None) == (not args.train):
        raise ConfigError("give a dense CHECKPOINT or --train (one of them)")
    out = check_out(args, ".dcz")
    if out is not None:  # copy_final writes the report beside the file
        for suffix in (".report.json", ".report.md"):
            check_output(out.with_name(out.stem + suffix), force=args.force, what="--out")
    recipe = load_recipe(args.recipe)
    run_dir = args.out_dir or Path("runs") / "compress" / args.recipe.stem
    report = compress(
        recipe,
        run_dir,
        checkpoint=checkpoint,
        data_dir=args.data_dir,
        restart=args.restart,
        force=args.force,
        allow_code=args.allow_code,
        progress=progress_enabled(),
    )
    if not args.no_plots:
        _write_plots(run_dir, report, args.data_dir, True, args.allow_code)
    _print_report(report, run_dir)
    if out is not None:
        print(f"copied the final file to {copy_final(run_dir, out)}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from deep_compression.records import RunReport

    setup_threads(args.threads)
    path = args.run_dir / "report.json"
    if not path.is_file():
        raise ConfigError(f"{args.run_dir}: no report.json (not a finished compress run)")
    try:
        report = RunReport.from_dict(json.loads(path.read_text()), str(path))
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e})") from None
    _write_plots(args.run_dir, report, args.data_dir, not args.no_sensitivity, args.allow_code)
    _print_report(report, args.run_dir)
    return 0
