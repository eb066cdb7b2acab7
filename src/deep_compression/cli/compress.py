"""``deep-compression compress`` (the whole pipeline) and ``deep-compression report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deep_compression.cli._common import (
    add_data_args,
    existing_file,
    progress_enabled,
    setup_threads,
)
from deep_compression.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compress",
        help="run the whole pipeline from a recipe: prune, quantize, encode, report",
        description="Run a recipe (recipes/*.toml) from a dense checkpoint, or from scratch "
        "with --train, to a .dcz file: iterative pruning with retraining, k-means "
        "quantization with centroid fine-tuning, relative-index + entropy coding. Every "
        "phase writes its output into --out-dir; an interrupted run resumes after its last "
        "finished phase. Prints the per-stage and per-layer tables and writes them as "
        "report.json and report.md, with plots under plots/.",
    )
    c.add_argument("--recipe", required=True, type=existing_file, help="recipe TOML file")
    start = c.add_mutually_exclusive_group(required=True)
    start.add_argument("--checkpoint", type=existing_file, help="dense checkpoint to start from")
    start.add_argument(
        "--train", action="store_true", help="train the dense model first (recipe's [train])"
    )
    c.add_argument(
        "--out-dir",
        type=Path,
        help="run directory (default: runs/compress/<recipe name>)",
    )
    c.add_argument("-o", "--out", type=Path, help="also copy the final .dcz here")
    c.add_argument("--restart", action="store_true", help="discard a previous run in --out-dir")
    c.add_argument("--no-plots", action="store_true", help="skip the plots")
    add_data_args(c)
    c.set_defaults(func=run_compress)

    r = sub.add_parser(
        "report",
        help="print the tables of a finished compress run and (re)write its plots",
        description="Print the per-stage and per-layer tables of a run directory written by "
        "`compress`, and write its plots: weight distributions before/after pruning and "
        "after quantization with the centroids, per-layer kept %% and bits, and the "
        "sensitivity curves of the dense model.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    r.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity curves")
    add_data_args(r)
    r.set_defaults(func=run_report)


def _print_report(report: dict, run_dir: Path) -> None:
    from deep_compression.pipeline import report_markdown

    print()
    print(report_markdown(report))
    print(f"report: {run_dir / 'report.md'} and report.json")


def run_compress(args: argparse.Namespace) -> int:
    from deep_compression.pipeline import compress, copy_final, load_recipe
    from deep_compression.report.plots import write_run_plots

    setup_threads(args.threads)
    recipe = load_recipe(args.recipe)
    run_dir = args.out_dir or Path("runs") / "compress" / args.recipe.stem
    if args.out is not None and args.out.suffix != ".dcz":
        raise ConfigError(f"--out {args.out}: compressed models are .dcz files")
    report = compress(
        recipe,
        run_dir,
        checkpoint=args.checkpoint,
        data_dir=args.data_dir,
        restart=args.restart,
        progress=progress_enabled(),
    )
    if not args.no_plots:
        paths = write_run_plots(
            run_dir, report, data_dir=args.data_dir, progress=progress_enabled()
        )
        print(f"plots: {', '.join(str(p) for p in paths)}")
    _print_report(report, run_dir)
    if args.out is not None:
        print(f"copied the final file to {copy_final(run_dir, args.out)}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from deep_compression.report.plots import write_run_plots

    setup_threads(args.threads)
    path = args.run_dir / "report.json"
    if not path.is_file():
        raise ConfigError(f"{args.run_dir}: no report.json (not a finished compress run)")
    try:
        report = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e})") from None
    paths = write_run_plots(
        args.run_dir,
        report,
        data_dir=args.data_dir,
        sensitivity=not args.no_sensitivity,
        progress=progress_enabled(),
    )
    print(f"plots: {', '.join(str(p) for p in paths)}")
    _print_report(report, args.run_dir)
    return 0
