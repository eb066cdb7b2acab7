"""``deep-compression prune``, ``sensitivity`` and ``neuron``."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from deep_compression.cli._common import (
    add_data_args,
    add_force_arg,
    add_input_args,
    add_out_arg,
    check_out,
    existing_file,
    load_input,
    load_input_data,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    progress_enabled,
    setup_threads,
)
from deep_compression.fileio import check_output
from deep_compression.layer_config import check_patterns


def _thresholds(text: str) -> list[float]:
    """``0:3:0.25`` (start:stop:step, stop included) or ``0.5,1,1.5``."""
    try:
        if ":" in text:
            start, stop, step = (float(t) for t in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = int(round((stop - start) / step))
            values = [start + i * step for i in range(n + 1)]
        else:
            values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not START:STOP:STEP or a comma-separated list of numbers"
        ) from None
    if not values or any(v != v or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: thresholds must be numbers >= 0")
    return sorted(set(round(v, 10) for v in values))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune",
        help="prune a checkpoint with an iterative prune -> retrain schedule",
        description="Prune a trained checkpoint following the [prune] table of a TOML "
        "recipe (rounds of pruning, each followed by retraining), and save the pruned "
        "checkpoint. Pruned weights are masked: exactly zero, never updated, never regrown.",
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", type=existing_file, help="trained checkpoint"
    )
    p.add_argument(
        "--recipe",
        required=True,
        type=existing_file,
        help="TOML file with a [prune] table (other tables are ignored)",
    )
    add_out_arg(p, "pruned checkpoint (.safetensors)")
    add_input_args(p)
    add_data_args(p)
    p.set_defaults(func=run_prune)

    _add_sensitivity(sub)
    _add_neuron(sub)


def _add_sensitivity(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "sensitivity",
        help="prune one layer at a time, plot accuracy vs. kept fraction, suggest thresholds",
        description="Sensitivity analysis: prune each layer alone at rising thresholds "
        "s x std(layer weights), without retraining; record test accuracy; write "
        "sensitivity.csv and sensitivity.png to --out and print per-layer thresholds that "
        "lose at most --budget points of accuracy.",
    )
    s.add_argument(
        "checkpoint", metavar="CHECKPOINT", type=existing_file, help="trained checkpoint"
    )
    s.add_argument(
        "--out-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="directory for sensitivity.csv and sensitivity.png",
    )
    add_force_arg(s)
    add_input_args(s)
    s.add_argument(
        "--thresholds",
        type=_thresholds,
        default=_thresholds("0:3:0.125"),
        metavar="SPEC",
        help="values of s: START:STOP:STEP or a list a,b,c (default 0:3:0.125)",
    )
    s.add_argument(
        "--budget",
        type=nonnegative_float,
        default=0.5,
        help="accuracy loss allowed per layer, in percentage points (default 0.5)",
    )
    s.add_argument(
        "--layers", nargs="+", metavar="PATTERN", help="only these layers (names or patterns)"
    )
    s.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="evaluate on the first N test images only (default: all)",
    )
    add_data_args(s)
    s.set_defaults(func=run_sensitivity)


def _add_neuron(sub: argparse._SubParsersAction) -> None:
    n = sub.add_parser(
        "neuron",
        help="smallest subset of a neuron's inputs that keeps its output (the original 'reduce')",
        description="Read rows of (weight, input value) for one neuron from a CSV file (a "
        "header row is allowed) and find the smallest subset of inputs whose summed "
        "contribution weight*input stays within a tolerance of the full pre-activation. "
        "Exact dynamic programming for small inputs; a clearly labelled greedy fallback "
        "for large ones.",
    )
    n.add_argument(
        "csv",
        metavar="WEIGHTS_CSV",
        type=existing_file,
        help="rows of weight,input (a header row is allowed)",
    )
    tol = n.add_mutually_exclusive_group()
    tol.add_argument(
        "--tolerance",
        type=nonnegative_float,
        default=None,
        help="absolute tolerance on the pre-activation",
    )
    tol.add_argument(
        "--relative",
        type=nonnegative_float,
        default=None,
        help="tolerance as a fraction of |full pre-activation| (default 0.01)",
    )
    n.add_argument("--bias", type=float, default=0.0, help="the neuron's bias (default 0)")
    n.add_argument(
        "--method",
        choices=("auto", "exact", "greedy"),
        default="auto",
        help="auto: exact when the problem is small enough, else greedy (default)",
    )
    n.add_argument(
        "--limit",
        type=nonnegative_int,
        default=40,
        metavar="N",
        help="show at most N rows of the per-input table, the largest contributions first "
        "(0: no table)",
    )
    n.set_defaults(func=run_neuron)


def run_prune(args: argparse.Namespace) -> int:
    from deep_compression.checkpoint import save_checkpoint
    from deep_compression.phases import PhaseContext, prune_phase, test_error, with_stage
    from deep_compression.prune import load_schedule, prunable_layers, sparsity_report
    from deep_compression.table import format_table

    setup_threads(args.threads)
    check_out(args, ".safetensors")
    schedule = load_schedule(args.recipe)
    model, meta = load_input(args)
    for i, r in enumerate(schedule.rounds, start=1):  # layer names, before any work
        check_patterns(r.criteria, prunable_layers(model), f"prune.rounds[{i}].criteria")
    meta, data = load_input_data(args, meta)
    train, test = data.train, data.test
    error0 = test_error(model, test)
    before = sparsity_report(model)
    print(
        f"pruning {args.checkpoint} ({meta.model.name}, test error {100 * error0:.2f}%, "
        f"{100 * before.kept_fraction:.2f}% of {before.weights:,} weights kept) with "
        f"{args.recipe}: {len(schedule.rounds)} rounds, {schedule.total_epochs} retraining epochs"
    )
    ctx = PhaseContext(train, test, progress=progress_enabled(), log=print)
    outcome = prune_phase(model, schedule, ctx)
    new_meta = with_stage(meta, "pruned", outcome.test_error, prune=outcome.details())
    save_checkpoint(args.out, model, replace(new_meta, model=outcome.model_spec(meta.model)))
    report = outcome.sparsity
    print(format_table(["layer", "weights", "kept", "kept %"], report.table_rows()))
    print(
        f"test error {100 * error0:.2f}% -> {100 * outcome.test_error:.2f}% with "
        f"{100 * report.kept_fraction:.2f}% of weights kept "
        f"({report.weights / max(1, report.kept):.1f}x fewer); {outcome.seconds:.0f}s; "
        f"saved {args.out}"
    )
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    from torch.utils.data import Subset

    from deep_compression.prune.sensitivity import (
        sensitivity_analysis,
        suggest_thresholds,
        write_csv,
    )
    from deep_compression.report.sensitivity_plot import plot_sensitivity
    from deep_compression.table import format_table

    setup_threads(args.threads)
    for name in ("sensitivity.csv", "sensitivity.png"):
        check_output(args.out_dir / name, force=args.force, what="--out-dir")
    model, meta = load_input(args)
    meta, data = load_input_data(args, meta)
    test = data.test
    if args.limit is not None:
        test = Subset(test, range(min(args.limit, len(test))))
    t0 = time.perf_counter()
    result = sensitivity_analysis(
        model, test, args.thresholds, layers=args.layers, progress=progress_enabled()
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(result, args.out_dir / "sensitivity.csv")
    png_path = plot_sensitivity(
        result, args.out_dir / "sensitivity.png", title=f"{meta.model.name}: {args.checkpoint}"
    )
    suggestions = suggest_thresholds(result, args.budget / 100)
    print(
        f"baseline test accuracy {100 * result.baseline:.2f}% on {len(test):,} images; "
        f"{len(result.points)} evaluations in {time.perf_counter() - t0:.0f}s; "
        f"wrote {csv_path} and {png_path}"
    )
    rows = [
        [
            s.layer,
            f"{s.s:g}",
            f"{100 * s.kept_fraction:.1f}%",
            f"{100 * s.accuracy:.2f}%",
            f"{100 * (result.baseline - s.accuracy):+.2f}",
        ]
        for s in suggestions
    ]
    print(f"largest s per layer losing at most {args.budget:g} points of accuracy:")
    print(format_table(["layer", "s", "kept", "accuracy", "loss (points)"], rows))
    print("as a [[prune.rounds]] criteria table:")
    for s in suggestions:
        print(f'{s.layer} = {{ method = "std", s = {s.s:g} }}')
    return 0


def run_neuron(args: argparse.Namespace) -> int:
    from deep_compression.neuron import read_neuron_csv, reduce_neuron

    weights, inputs = read_neuron_csv(args.csv)
    full = float((weights * inputs).sum()) + args.bias
    if args.tolerance is not None:
        tolerance = args.tolerance
    else:
        relative = 0.01 if args.relative is None else args.relative
        tolerance = relative * abs(full)
    r = reduce_neuron(weights, inputs, tolerance, bias=args.bias, method=args.method)
    print(r.describe(limit=args.limit))
    return 0
