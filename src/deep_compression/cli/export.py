"""``deep-compression export``: a decoded model for other runtimes."""

from __future__ import annotations

import argparse

from deep_compression.cli._common import add_model_args, add_out_arg, check_out, existing_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export",
        help="write a .dcz (or checkpoint) as ONNX or a plain safetensors state dict",
        description="Decode a compressed model and write it for another runtime: ONNX "
        "(opset 17, dynamic batch, checked in onnxruntime against PyTorch) or a plain "
        "safetensors state dict; --fold-bn folds BatchNorm into the preceding layers.",
    )
    e.add_argument("model_file", metavar="FILE", type=existing_file, help="a .dcz or checkpoint")
    e.add_argument(
        "--format", choices=("onnx", "safetensors"), default="onnx", help="output format"
    )
    e.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold BatchNorm into the preceding conv/linear layer (for deployment)",
    )
    add_model_args(e)
    add_out_arg(e, "exported model (.onnx or .safetensors)")
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from deep_compression.cli._common import model_args_of, model_spec_of
    from deep_compression.export import export_model
    from deep_compression.loading import load_any
    from deep_compression.prune import strip_pruning_
    from deep_compression.quantize import strip_quantization_

    check_out(args, "." + args.format)
    model, meta = load_any(
        args.model_file,
        model=model_spec_of(args),
        model_args=model_args_of(args),
        allow_code=args.allow_code or args.model is not None,
    )
    strip_pruning_(strip_quantization_(model))  # a checkpoint's parametrizations
    report = export_model(model, args.out, args.format, meta, fold_bn=args.fold_bn)
    folded = f"; folded {len(report.folded)} BatchNorm layers" if args.fold_bn else ""
    check = (
        f"; onnxruntime output within {report.max_abs_diff:.2e} of PyTorch's"
        if report.max_abs_diff is not None
        else ""
    )
    print(f"wrote {args.out} ({report.bytes:,} bytes){folded}{check}")
    return 0
