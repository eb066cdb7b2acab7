"""``deep-compression quantize``: per-layer k-means weight sharing, then centroid fine-tuning."""

from __future__ import annotations

import argparse
import dataclasses
import re

from deep_compression.cli._common import (
    add_data_args,
    add_input_args,
    add_out_arg,
    check_out,
    existing_file,
    load_input,
    load_input_data,
    nonnegative_int,
    positive_float,
    progress_enabled,
    setup_threads,
)
from deep_compression.errors import ConfigError

_BITS = re.compile(r"^\s*(?:(?P<pattern>[^=\s]+)\s*=\s*)?(?P<bits>[+-]?\d+)\s*$")


def _bits(text: str) -> tuple[str, int]:
    """``PATTERN=N`` (``fc1=4``, ``conv*=8``) or a bare ``N`` (short for ``*=N``)."""
    m = _BITS.match(text)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PATTERN=BITS (e.g. '*=6', 'conv*=8', 'fc1=4') or BITS"
        )
    return m.group("pattern") or "*", int(m.group("bits"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    from deep_compression.quantize.kmeans import INITS

    p = sub.add_parser(
        "quantize",
        help="share weights: per-layer k-means codebooks, then fine-tune the centroids",
        description="Trained quantization (weight sharing). For each Linear/Conv layer, "
        "cluster the surviving (unpruned) weights into 2^bits shared values by 1-D k-means, "
        "store the layer as codebook[indices] * mask, and fine-tune the centroids on the "
        "training set (assignments fixed, pruned weights stay exactly zero). Works on "
        "pruned and dense checkpoints (quantization only). Settings come from the "
        "[quantize] table of --recipe, then the options below; layers no --bits key "
        "matches get the paper's bits: 8 for convolutions, 5 for everything else.",
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", type=existing_file, help="trained or pruned checkpoint"
    )
    p.add_argument(
        "--recipe",
        type=existing_file,
        default=None,
        metavar="TOML",
        help="TOML file with a [quantize] table (other tables are ignored)",
    )
    p.add_argument(
        "--bits",
        type=_bits,
        action="append",
        metavar="PATTERN=N",
        help="index bits of the layers a key matches, 1..16; repeatable: '*=5', "
        "'conv*=8' (nested layers too), 'layer1.*=6', 'type:Linear=4', 'fc1=3'; replaces "
        "the recipe's table",
    )
    p.add_argument(
        "--init",
        choices=INITS,
        default=None,
        help="centroid initialisation (default linear, the paper's best)",
    )
    p.add_argument(
        "--lloyd-iterations",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="at most N Lloyd iterations; Lloyd stops at its fixed point (default 20000; "
        "0: keep the initial centroids)",
    )
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="seeds the forgy draw and the fine-tuning (default 0)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="epochs of centroid fine-tuning (default 3; 0: none)",
    )
    p.add_argument(
        "--finetune-lr",
        type=positive_float,
        default=None,
        metavar="LR",
        help="fine-tuning learning rate (default 0.001, Adam)",
    )
    p.add_argument(
        "--float16",
        action="store_true",
        help="after fine-tuning, round codebooks and biases to float16 values (stored in 2 "
        "bytes each by the .dcz writer, losslessly)",
    )
    add_out_arg(p, "quantized checkpoint (.safetensors)")
    add_input_args(p)
    add_data_args(p)
    p.set_defaults(func=run_quantize)


def config_from_args(args: argparse.Namespace):
    """The :class:`QuantizeConfig` of ``--recipe`` (or the default) with options applied."""
    from deep_compression.quantize import QuantizeConfig, load_quantize_config

    config = load_quantize_config(args.recipe) if args.recipe else QuantizeConfig()
    changes: dict[str, object] = {}
    if args.bits:
        table: dict[str, int] = {}
        for pattern, bits in args.bits:
            if pattern in table and table[pattern] != bits:
                raise ConfigError(f"--bits gives {pattern!r} twice ({table[pattern]}, {bits})")
            table[pattern] = bits
        changes["bits"] = table
    if args.init is not None:
        changes["init"] = args.init
    if args.lloyd_iterations is not None:
        changes["lloyd_iterations"] = args.lloyd_iterations
    finetune = {}
    if args.seed is not None:
        changes["seed"] = args.seed
        finetune["seed"] = args.seed
    if args.finetune_epochs is not None:
        finetune["epochs"] = args.finetune_epochs
    if args.finetune_lr is not None:
        finetune["lr"] = args.finetune_lr
    if finetune:
        changes["finetune"] = dataclasses.replace(config.finetune, **finetune)
    if args.float16:
        changes["float16"] = True
    return dataclasses.replace(config, **changes) if changes else config


def run_quantize(args: argparse.Namespace) -> int:
    from deep_compression.checkpoint import save_checkpoint
    from deep_compression.phases import PhaseContext, quantize_phase, test_error, with_stage
    from deep_compression.quantize import layer_bits
    from deep_compression.table import format_table

    setup_threads(args.threads)
    check_out(args, ".safetensors")
    config = config_from_args(args)
    model, meta = load_input(args)
    bits = layer_bits(model, config)  # reject a bad bits table before any work
    meta, data = load_input_data(args, meta)
    train, test = data.train, data.test
    error0 = test_error(model, test)
    print(
        f"quantizing {args.checkpoint} ({meta.model.name}, {meta.stage}, "
        f"test error {100 * error0:.2f}%): bits "
        + ", ".join(f"{k}={v}" for k, v in config.bits.items())
        + f", {config.init} init, {config.finetune.epochs} fine-tuning epochs",
        flush=True,
    )
    ctx = PhaseContext(train, test, progress=progress_enabled(), log=print)
    outcome = quantize_phase(model, config, ctx)
    save_checkpoint(
        args.out,
        model,
        with_stage(meta, "quantized", outcome.test_error, quantize=outcome.details()),
    )
    clustered = outcome.clustered
    rows = [
        [
            q.name,
            q.weights,
            q.nonzero,
            bits[q.name],
            q.codebook_size,
            q.distinct,
            f"{clustered[q.name].mse:.3g}",
            f"{100 * clustered[q.name].relative_error:.2f}%",
            f"{100 * q.relative_error:.2f}%",
        ]
        for q in outcome.report.layers
    ]
    headers = ["layer", "weights", "non-zero", "bits", "codebook", "distinct"]
    headers += ["MSE", "rel. error", "rel. change tuned"]
    print(format_table(headers, rows))
    print(
        "(MSE, rel. error: kept weights after k-means vs. before quantization; rel. change "
        "tuned: the same after fine-tuning the centroids; distinct: values among the kept "
        "weights now)"
    )
    print(
        f"test error {100 * error0:.2f}% before, {100 * outcome.test_error_clustered:.2f}% "
        f"after k-means, {100 * outcome.test_error:.2f}% after {config.finetune.epochs} "
        f"fine-tuning epochs ({outcome.seconds:.0f}s); saved {args.out}"
    )
    return 0
