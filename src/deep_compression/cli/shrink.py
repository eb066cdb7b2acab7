"""``deep-compression shrink``: structured pruning (whole channels) of a checkpoint."""

from __future__ import annotations

import argparse

from deep_compression.cli._common import (
    add_data_args,
    add_input_args,
    add_out_arg,
    add_validation_args,
    check_out,
    existing_file,
    load_input,
    load_input_data,
    progress_enabled,
    setup_threads,
    validation_of,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shrink",
        help="structured pruning: remove whole neurons, filters and channels",
        description="Remove whole output neurons, convolution filters and the input "
        "channels that read them, following BatchNorm, residual additions, concatenations "
        "and flattens, as the [shrink] table of a TOML recipe says (criterion l1, l2, bn, "
        "lasso or reduce; per-group keep amounts; optional training with a group-lasso "
        "penalty before and retraining after). The checkpoint written holds the smaller "
        "network, and its model arguments say the new widths (built-in LeNets), so every "
        "later stage and the .dcz file rebuild it directly.",
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", type=existing_file, help="trained dense checkpoint"
    )
    p.add_argument(
        "--recipe",
        type=existing_file,
        help="TOML file with a [shrink] table (other tables are ignored); required unless "
        "--list-groups",
    )
    p.add_argument(
        "--list-groups",
        action="store_true",
        help="print the model's channel groups (the names [shrink] keep uses) and exit",
    )
    add_out_arg(p, "shrunk checkpoint (.safetensors)", required=False)
    add_input_args(p)
    add_validation_args(p)
    add_data_args(p)
    p.set_defaults(func=run_shrink)


def _list_groups(model, example) -> None:  # type: ignore[no-untyped-def]
    from deep_compression.shrink import trace_groups
    from deep_compression.table import format_table

    rows = [
        [g.name, g.size, g.pinned or "yes", ", ".join(sorted({m.module for m in g.members}))]
        for g in trace_groups(model, example)
    ]
    print(format_table(["group", "channels", "prunable", "layers"], rows))


def run_shrink(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from deep_compression.checkpoint import save_checkpoint
    from deep_compression.data import carve_validation
    from deep_compression.errors import ConfigError
    from deep_compression.phases import shrink_phase, test_error, with_stage
    from deep_compression.recipe_io import load_config
    from deep_compression.shrink import SHRUNK_KEY, ShrinkConfig
    from deep_compression.shrink.phase import calibration_inputs

    setup_threads(args.threads)
    if not args.list_groups and (args.recipe is None or args.out is None):
        raise ConfigError("--recipe and -o/--out are required (or --list-groups)")
    check_out(args, ".safetensors")
    config = (
        None if args.list_groups else load_config(args.recipe, ShrinkConfig.from_dict, "shrink")
    )
    model, meta = load_input(args)
    meta, data = load_input_data(args, meta)
    # Retraining leaves the validation images out; the errors printed are measured on them
    # (every decision is), and the test error once at the end, for the record. A
    # checkpoint that does not record its held-out images decides on part of the test set.
    held_out = meta.details.get("validation")
    validation = validation_of(args).resolve(data.val is not None, bool(held_out))
    data = carve_validation(data, validation)
    if data.val is not None:
        print(validation.describe(len(data.val), len(data.test)))
    split, label = (data.val, "validation") if data.val is not None else (data.test, "test")
    if args.list_groups:
        _list_groups(model, calibration_inputs(data.train, 2))
        return 0
    assert config is not None
    error0 = test_error(model, split)
    print(f"shrinking {args.checkpoint} ({meta.model.name}, {label} error {100 * error0:.2f}%)")
    outcome = shrink_phase(
        model, config, data.train, split, progress=progress_enabled(), log=print, label=label
    )
    final = test_error(model, data.test) if data.val is not None else outcome.test_error
    new_meta = with_stage(meta, "shrunk", final, shrink=outcome.details(),
                          **({"validation": validation.to_dict()} if data.val is not None else {}))
    new_meta = replace(new_meta, model=outcome.model_spec(meta.model, model))
    save_checkpoint(args.out, model, new_meta.with_details(**{SHRUNK_KEY: True}))
    r = outcome.report
    print(
        f"{label} error {100 * error0:.2f}% -> {100 * outcome.test_error:.2f}% (test "
        f"{100 * final:.2f}%); parameters "
        f"{r.params[0]:,} -> {r.params[1]:,} ({r.params[0] / max(1, r.params[1]):.1f}x fewer), "
        f"MACs per input {r.macs[0]:,} -> {r.macs[1]:,}; model {new_meta.model.name} "
        f"{dict(new_meta.model.kwargs)}; {outcome.seconds:.0f}s; saved {args.out}"
    )
    return 0
