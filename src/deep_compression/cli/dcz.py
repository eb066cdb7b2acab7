"""``deep-compression encode``, ``decode`` and ``info``: the compressed ``.dcz`` file."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from deep_compression.cli._common import (
    add_data_args,
    add_input_args,
    add_out_arg,
    check_out,
    existing_file,
    load_input,
    load_input_data,
    positive_int,
    setup_threads,
)

if TYPE_CHECKING:  # imported when used: torch only for the commands that need it
    from deep_compression.encode_config import EncodeConfig


def _gap_bits(text: str) -> tuple[str, int | str]:
    """``"PATTERN=BITS"`` or ``"BITS"`` (meaning ``"*=BITS"``); BITS may be ``auto``."""
    pattern, _, bits = text.rpartition("=")
    if bits == "auto":
        return (pattern or "*"), "auto"
    try:
        value = int(bits)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not BITS or PATTERN=BITS (e.g. 5 or 'conv*=8')"
        ) from None
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError(f"{text!r}: gap bits must be in [1, 16]")
    return (pattern or "*"), value


def add_coding_args(parser: argparse.ArgumentParser) -> None:
    """``--coder``, ``--gap-bits`` and ``--chunk``: how a command writes its ``.dcz``
    (:class:`~deep_compression.encode_config.EncodeConfig`; read back by
    :func:`encode_config_of`). Every command that writes a ``.dcz`` shares them."""
    from deep_compression.dcz import CODER_CHOICES, DEFAULT_CHUNK
    from deep_compression.encode_config import DEFAULT_CODER

    parser.add_argument(
        "--coder",
        choices=CODER_CHOICES,
        default=DEFAULT_CODER,
        help="entropy coder of both streams: best (default: the smallest per stream, "
        "including ctx, context-adaptive coding of positions and indices; ctx = best), "
        "huffman (the paper's coding), ans (closer to the entropy), fixed (no entropy "
        "coding: the P+Q file)",
    )
    parser.add_argument(
        "--gap-bits",
        type=_gap_bits,
        action="append",
        metavar="[PATTERN=]BITS",
        help="gap field width per layer, repeatable: '5', '*=5', 'conv*=8', 'fc1=4', or "
        "'auto' (per layer, the width that makes the gap stream smallest) (default: auto "
        "with --coder best; with a named coder 5 for fully connected layers and 8 for "
        "convolutions, as in the paper)",
    )
    parser.add_argument(
        "--chunk",
        type=positive_int,
        default=DEFAULT_CHUNK,
        help=f"symbols per Huffman chunk (default {DEFAULT_CHUNK})",
    )


def encode_config_of(args: argparse.Namespace) -> EncodeConfig:
    """The :class:`~deep_compression.encode_config.EncodeConfig` that
    :func:`add_coding_args`' options give."""
    from deep_compression.encode_config import EncodeConfig

    return EncodeConfig(coder=args.coder, gap_bits=dict(args.gap_bits or {}), chunk=args.chunk)


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "encode",
        help="write a pruned/quantized checkpoint as a compressed .dcz file",
        description="Encode a checkpoint (.safetensors) into a .dcz file: relative-index "
        "sparse storage of pruned layers, cluster indices and gaps entropy-coded per layer "
        "(by default the smallest coding: --coder best, gap widths auto; --coder huffman is "
        "the paper's). "
        "The written file is decoded again and checked bit for bit against the model; its "
        "test accuracy is measured and stored in the file.",
    )
    e.add_argument(
        "checkpoint", metavar="CHECKPOINT", type=existing_file, help="checkpoint to encode"
    )
    add_out_arg(e, "compressed model (.dcz)")
    add_coding_args(e)
    e.add_argument(
        "--skip-eval",
        action="store_true",
        help="do not measure the test error (store the checkpoint's recorded figure instead)",
    )
    add_input_args(e)
    add_data_args(e)
    e.set_defaults(func=run_encode)

    d = sub.add_parser(
        "decode",
        help="decode a .dcz file into a plain safetensors checkpoint",
        description="Decode a .dcz file into dense tensors (numpy only, no torch needed) "
        "and save them as a plain .safetensors checkpoint that `evaluate` reads.",
    )
    d.add_argument("dcz", metavar="FILE.dcz", type=existing_file, help="compressed model")
    add_out_arg(d, "plain checkpoint (.safetensors)")
    d.set_defaults(func=run_decode)

    i = sub.add_parser(
        "info",
        help="per-layer sizes of a .dcz file in the paper's columns",
        description="Validate a .dcz file and print where its bytes go: per layer kept "
        "weights, bits per weight and per index at P+Q and P+Q+H, size as % of float32; "
        "the whole-file sizes of the P, P+Q and P+Q+H stages (P and P+Q re-encoded from "
        "this file's decoded symbols, P+Q+H the file itself: the definition the compress "
        "report uses); and bits/symbol against the empirical entropy of every stream.",
    )
    i.add_argument("dcz", metavar="FILE.dcz", type=existing_file, help="compressed model")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=run_info)


def run_encode(args: argparse.Namespace) -> int:
    from deep_compression.dcz.summary import format_summary, summarize
    from deep_compression.phases import PhaseContext, encode_phase, silent, test_error

    setup_threads(args.threads)
    check_out(args, ".dcz")
    config = encode_config_of(args)
    model, meta = load_input(args)
    data = None
    if not args.skip_eval:
        meta, data = load_input_data(args, meta)
    # The file carries what a deployer needs (model, dataset, preprocessing, error), not
    # the checkpoint's phase history: its header counts in the rate.
    from deep_compression.shrink import shrunk_marker

    kept = shrunk_marker(meta.details)  # a shrunk network's loader resizes its layers
    meta = replace(
        meta, details={**kept, "test_error_from": "checkpoint"} if args.skip_eval else kept
    )
    measure = None
    if data is not None:
        meta = replace(meta, test_error=test_error(model, data.test))
        measure = PhaseContext(None, data.test).errors  # the decoded model, on the same split
    outcome = encode_phase(model, args.out, config, meta, measure=measure, log=silent)
    report = outcome.report
    print(format_summary(summarize(outcome.file), title=f"{args.out}:"))
    print(
        f"\nwrote {args.out}: {report.file_bytes:,} bytes, compression rate {report.rate:.1f}x "
        f"over float32 ({report.original_bytes:,} bytes); encode + verify {report.seconds:.2f}s; "
        "decoded tensors are bit-identical to the model's"
    )
    if outcome.test_error is not None:
        print(
            f"test error {100 * outcome.test_error:.2f}% from the decoded file, equal to the "
            "model's before encoding"
        )
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from safetensors.numpy import save_file

    from deep_compression.checkpoint import METADATA_KEY
    from deep_compression.dcz import decode
    from deep_compression.fileio import atomic_path
    from deep_compression.records import CheckpointMeta

    check_out(args, ".safetensors")
    t0 = time.perf_counter()
    arrays, raw_meta = decode(args.dcz)
    seconds = time.perf_counter() - t0
    meta = CheckpointMeta.from_dict(raw_meta, str(args.dcz))
    meta = replace(meta, stage="decoded").with_details(decoded_from=args.dcz.name)
    # Same layout as checkpoint.save_checkpoint (JSON under the "deep_compression" key),
    # written with safetensors' numpy API so decoding never needs torch.
    with atomic_path(args.out) as tmp:
        save_file(
            arrays, str(tmp), metadata={METADATA_KEY: json.dumps(meta.to_dict(), sort_keys=True)}
        )
    n = sum(a.size for a in arrays.values())
    print(
        f"decoded {args.dcz} ({args.dcz.stat().st_size:,} bytes) in {seconds:.2f}s: "
        f"{len(arrays)} tensors, {n:,} values -> {args.out} ({args.out.stat().st_size:,} bytes)"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from deep_compression.dcz import open_dcz
    from deep_compression.dcz.summary import format_summary, summarize

    summary = summarize(open_dcz(args.dcz))
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(format_summary(summary, title=f"{args.dcz}: {summary['file_bytes']:,} bytes"))
    return 0
