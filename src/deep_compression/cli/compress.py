"""``deep-compression compress`` (the whole pipeline) and ``deep-compression report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from deep_compression.cli._common import (
    add_data_args,
    add_force_arg,
    add_validation_args,
    check_out,
    dataset_of,
    existing_file,
    model_arg,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    progress_enabled,
    setup_threads,
)
from deep_compression.errors import ConfigError
from deep_compression.fileio import check_output

if TYPE_CHECKING:  # imported when a command runs (the CLI starts without torch)
    from deep_compression.recipe import NoRetrainRecipe, Recipe
    from deep_compression.records import RunReport

# The thresholds s (x std) of the sensitivity curves drawn with every run.
_SENSITIVITY_THRESHOLDS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)


def _add_budget_args(c: argparse.ArgumentParser) -> None:
    b = c.add_argument_group(
        "compress to an accuracy budget (no recipe needed; docs in deep_compression.budget)"
    )
    b.add_argument(
        "--max-error-increase",
        type=nonnegative_float,
        metavar="P",
        help="search pruning, bits and coding for the smallest file whose validation error "
        "stays within P points of the dense model's; writes the chosen recipe.toml",
    )
    b.add_argument(
        "--no-retrain",
        action="store_true",
        help="no gradient step: rate-distortion quantization of the trained weights only, "
        "for when the training pipeline is not at hand (docs/NO_RETRAIN.md)",
    )
    b.add_argument(
        "--calibration",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="with --no-retrain: training images whose activations weight the quantization "
        "error (default: the recipe's, else 2048); 0 for none (no data but the validation "
        "split)",
    )
    b.add_argument(
        "--confidence",
        type=positive_float,
        default=None,
        metavar="C",
        help="keep a candidate only when its error increase over the dense model, paired on "
        "the same validation images, is within the budget with this confidence (0.9)",
    )
    b.add_argument(
        "--max-minutes",
        type=positive_float,
        metavar="M",
        help="wall-time budget of the search: fewer epochs per step, pruning stops early",
    )
    b.add_argument(
        "--seed",
        type=nonnegative_int,
        default=None,
        help="seed of the search's retraining (default: the recipe's, else 0)",
    )
    b.add_argument(
        "--model",
        metavar="SPEC",
        help="the checkpoint's model when it does not say (a built-in or file.py:name)",
    )
    b.add_argument(
        "--model-arg",
        action="append",
        type=model_arg,
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of --model, repeatable",
    )
    b.add_argument(
        "--dataset",
        metavar="DATASET",
        help="a built-in name, an image folder, an .npz file, or a table as in a recipe: "
        "'{ root = \"DIR\", mean = [...], std = [...] }' (default: what the checkpoint says)",
    )
    add_validation_args(b, default=None)


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
        "plots under plots/. A recipe with a [no_retrain] table instead compresses a "
        "trained CHECKPOINT with no training step (docs/NO_RETRAIN.md); "
        "--max-error-increase P searches a recipe for you (with --no-retrain: no "
        "gradient step).",
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
    c.add_argument(
        "--recipe",
        type=existing_file,
        help="recipe TOML file: [prune]/[quantize] (the pipeline) or [no_retrain] (from "
        "CHECKPOINT, no training step); with --max-error-increase optional, its model, "
        "dataset, validation split, seed and retraining or [no_retrain] settings are the "
        "defaults",
    )
    _add_budget_args(c)
    c.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="run directory (default: runs/compress/<recipe name>, or "
        "<checkpoint name>-budget<P> with --max-error-increase)",
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


def _print_report(report: RunReport, run_dir: Path) -> None:
    from deep_compression.report.markdown import report_markdown

    print()
    print(report_markdown(report))
    print(f"report: {run_dir / 'report.md'} and report.json")


def _write_plots(
    run_dir: Path, report: RunReport, data_dir: str | None, sensitivity: bool, allow_code: bool
) -> None:
    """Load the run's checkpoints (and the test data for the sensitivity curves) and
    draw every plot into ``run_dir/plots``; a run without retraining has no pruned one."""
    from deep_compression.data import ValidationConfig, carve_validation, load_data
    from deep_compression.loading import load_model
    from deep_compression.prune.sensitivity import sensitivity_analysis, write_csv
    from deep_compression.report.plots import write_run_plots

    dense, _ = load_model(run_dir / "dense.safetensors", allow_code=allow_code)
    pruned = None
    if (run_dir / "pruned.safetensors").is_file():
        pruned, _ = load_model(run_dir / "pruned.safetensors", allow_code=allow_code)
    quantized, meta = load_model(run_dir / "quantized.safetensors", allow_code=allow_code)
    result = None
    if sensitivity:
        data = load_data(
            dataset_of(None, meta.dataset, meta.details),
            data_dir,
            allow_code=allow_code,
            preprocessing=meta.preprocessing,
        )
        # Measured on the run's validation split when it had one (it guides decisions).
        split = meta.details.get("validation")
        if split:
            data = carve_validation(data, ValidationConfig.from_value(split))
        result = sensitivity_analysis(
            dense,
            data.val if data.val is not None else data.test,
            _SENSITIVITY_THRESHOLDS,
            progress=progress_enabled(),
        )
        (run_dir / "plots").mkdir(exist_ok=True)
        write_csv(result, run_dir / "plots" / "sensitivity.csv")
    paths = write_run_plots(run_dir / "plots", report, dense, pruned, quantized, result)
    print(f"plots: {', '.join(str(p) for p in paths)}")


# The options of a search (a recipe says them otherwise).
_SEARCH_OPTIONS = (
    "no_retrain",
    "max_minutes",
    "model",
    "model_arg",
    "dataset",
    "val_size",
    "val_from",
    "seed",
    "confidence",
)


def _check_flags(args: argparse.Namespace, recipe: Recipe | NoRetrainRecipe | None) -> Path | None:
    """The checkpoint, after the checks of the flags that go together (before any work)."""
    from deep_compression.recipe import NoRetrainRecipe

    if args.checkpoint and args.checkpoint_opt:
        raise ConfigError("give the checkpoint once (positional or --checkpoint)")
    checkpoint = args.checkpoint or args.checkpoint_opt
    if (checkpoint is None) == (not args.train):
        raise ConfigError("give a dense CHECKPOINT or --train (one of them)")
    budget = args.max_error_increase is not None
    if budget and args.train:
        raise ConfigError("--max-error-increase starts from a dense CHECKPOINT, not --train")
    if not budget:
        extra = [f for f in _SEARCH_OPTIONS if getattr(args, f) not in (None, False, [])]
        if extra:
            flag = extra[0].replace("_", "-")
            raise ConfigError(
                f"--{flag} goes with --max-error-increase P (a recipe says it otherwise)"
            )
        if recipe is None:
            raise ConfigError("give --recipe, or --max-error-increase to search one")
    nr_recipe = isinstance(recipe, NoRetrainRecipe)
    if args.calibration is not None and not (args.no_retrain or (nr_recipe and not budget)):
        raise ConfigError("--calibration goes with --no-retrain (or a [no_retrain] recipe)")
    if nr_recipe and budget and not args.no_retrain:
        raise ConfigError(
            f"{args.recipe} is a [no_retrain] recipe: add --no-retrain, or drop "
            "--max-error-increase to run the recipe as it is"
        )
    return checkpoint


def run_compress(args: argparse.Namespace) -> int:
    from deep_compression.cli.plan import what_to_run
    from deep_compression.pipeline import compress, copy_final
    from deep_compression.recipe import NoRetrainRecipe, load_any_recipe

    setup_threads(args.threads)
    recipe = load_any_recipe(args.recipe) if args.recipe is not None else None
    checkpoint = _check_flags(args, recipe)
    out = check_out(args, ".dcz")
    if out is not None:  # copy_final writes the report beside the file
        for suffix in (".report.json", ".report.md"):
            check_output(out.with_name(out.stem + suffix), force=args.force, what="--out")
    start, planner, name = what_to_run(args, checkpoint, recipe)
    run_dir = args.out_dir or Path("runs") / "compress" / name
    allow_code = args.allow_code or args.model is not None  # --model names the code
    report = compress(
        start,
        run_dir,
        checkpoint=checkpoint,
        planner=planner,
        data_dir=args.data_dir,
        restart=args.restart,
        force=args.force,
        allow_code=allow_code,
        progress=progress_enabled(),
    )
    if not args.no_plots:
        # Without retraining (compute is scarce) the sensitivity curves, an evaluation per
        # layer and threshold, are left to `deep-compression report DIR`.
        curves = not isinstance(start, NoRetrainRecipe)
        _write_plots(run_dir, report, args.data_dir, curves, allow_code)
    _print_report(report, run_dir)
    if planner is not None:
        print(f"chosen recipe: {run_dir / 'recipe.toml'}; every candidate: search.json")
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
