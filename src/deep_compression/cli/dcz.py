"""``deep-compression encode``, ``decode`` and ``info``: the compressed ``.dcz`` file."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from deep_compression.cli._common import add_data_args, existing_file, positive_int, setup_threads
from deep_compression.errors import ConfigError


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


def add_parser(sub: argparse._SubParsersAction) -> None:
    from deep_compression.dcz import CODER_CHOICES, DEFAULT_CHUNK

    e = sub.add_parser(
        "encode",
        help="write a pruned/quantized checkpoint as a compressed .dcz file",
        description="Encode a checkpoint (.safetensors) into a .dcz file: relative-index "
        "sparse storage of pruned layers, cluster indices and gaps entropy-coded per layer. "
        "The written file is decoded again and checked bit for bit against the model; its "
        "test accuracy is measured and stored in the file.",
    )
    e.add_argument("checkpoint", metavar="CHECKPOINT", type=existing_file)
    e.add_argument("-o", "--out", required=True, type=Path, help="the .dcz file to write")
    e.add_argument(
        "--coder",
        choices=CODER_CHOICES,
        default="huffman",
        help="entropy coder of both streams: huffman (the paper, default), ans (closer to "
        "the entropy), fixed (no entropy coding: the P+Q file), best (smallest per stream, "
        "including ctx: context-adaptive coding of positions and indices; ctx = best)",
    )
    e.add_argument(
        "--gap-bits",
        type=_gap_bits,
        action="append",
        metavar="[PATTERN=]BITS",
        help="gap field width per layer, repeatable: '5', '*=5', 'conv*=8', 'fc1=4', or "
        "'auto' (per layer, the width that makes the gap stream smallest) "
        "(default: 5 for fully connected, 8 for convolutions, as in the paper)",
    )
    e.add_argument(
        "--chunk",
        type=positive_int,
        default=DEFAULT_CHUNK,
        help=f"symbols per Huffman chunk (default {DEFAULT_CHUNK})",
    )
    e.add_argument(
        "--skip-eval",
        action="store_true",
        help="do not measure test accuracy (store the checkpoint's recorded figure instead)",
    )
    add_data_args(e)
    e.set_defaults(func=run_encode)

    d = sub.add_parser(
        "decode",
        help="decode a .dcz file into a plain safetensors checkpoint",
        description="Decode a .dcz file into dense tensors (numpy only, no torch needed) "
        "and save them as a plain .safetensors checkpoint that `evaluate` reads.",
    )
    d.add_argument("dcz", metavar="FILE.dcz", type=existing_file)
    d.add_argument("-o", "--out", required=True, type=Path, help="the .safetensors to write")
    d.set_defaults(func=run_decode)

    i = sub.add_parser(
        "info",
        help="per-layer sizes of a .dcz file in the paper's columns",
        description="Validate a .dcz file and print where its bytes go: per layer kept "
        "weights, bits per weight and per index at P+Q and P+Q+H, size as % of float32; "
        "the whole-file sizes of the P, P+Q and P+Q+H stages (re-encoded from this file's "
        "decoded symbols, so all three are real files); and bits/symbol against the "
        "empirical entropy of every stream.",
    )
    i.add_argument("dcz", metavar="FILE.dcz", type=existing_file)
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=run_info)


def run_encode(args: argparse.Namespace) -> int:
    from deep_compression.checkpoint import load_model
    from deep_compression.data import get_spec, load_dataset
    from deep_compression.dcz import open_dcz
    from deep_compression.dcz.summary import format_summary, summarize
    from deep_compression.encode import encode_model, load_dcz
    from deep_compression.train import evaluate

    setup_threads(args.threads)
    if args.out.suffix != ".dcz":
        raise ConfigError(f"--out {args.out}: compressed models are .dcz files")
    model, meta = load_model(args.checkpoint)
    gap_bits = dict(args.gap_bits) if args.gap_bits else None
    dataset = meta.get("dataset", "mnist")
    out_meta = {
        "model": meta["model"],
        "dataset": dataset,
        "preprocessing": meta.get("preprocessing", get_spec(dataset).preprocessing),
        "stage": meta.get("stage", "unknown"),
    }
    test = None
    if args.skip_eval:
        for key in ("test_accuracy", "test_error"):
            if key in meta:
                out_meta[key] = meta[key]
        out_meta["accuracy_from"] = "checkpoint"
    else:
        _, test = load_dataset(dataset, args.data_dir)
        _, acc = evaluate(model, test)
        out_meta["test_accuracy"] = acc
        out_meta["test_error"] = 1.0 - acc
    t0 = time.perf_counter()
    report = encode_model(
        model, args.out, metadata=out_meta, gap_bits=gap_bits, coder=args.coder, chunk=args.chunk
    )
    seconds = time.perf_counter() - t0
    print(format_summary(summarize(open_dcz(args.out)), title=f"{args.out}:"))
    print(
        f"\nwrote {args.out}: {report.file_bytes:,} bytes, compression rate {report.rate:.1f}x "
        f"over float32 ({report.original_bytes:,} bytes); encode + verify {seconds:.2f}s; "
        "decoded tensors are bit-identical to the model's"
    )
    if test is not None:
        decoded, _ = load_dcz(args.out)
        _, acc2 = evaluate(decoded, test)
        same = "equal to" if acc2 == out_meta["test_accuracy"] else "DIFFERENT FROM"
        print(
            f"test error {100 * (1 - acc2):.2f}% from the decoded file, {same} "
            f"{100 * out_meta['test_error']:.2f}% before encoding"
        )
        if acc2 != out_meta["test_accuracy"]:
            return 1
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from safetensors.numpy import save_file

    from deep_compression.dcz import decode

    if args.out.suffix != ".safetensors":
        raise ConfigError(f"--out {args.out}: decoded checkpoints are .safetensors files")
    t0 = time.perf_counter()
    arrays, meta = decode(args.dcz)
    seconds = time.perf_counter() - t0
    meta = {**meta, "stage": "decoded", "decoded_from": args.dcz.name}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    # Same layout as checkpoint.save_checkpoint (JSON under the "deep_compression" key),
    # written with safetensors' numpy API so decoding never needs torch.
    save_file(arrays, str(tmp), metadata={"deep_compression": json.dumps(meta, sort_keys=True)})
    os.replace(tmp, args.out)
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
