"""``deep-compression import``: other projects' compressed files -> ``.dcz``, losslessly.

Today one format: Song Han's ``.net`` layout (:mod:`deep_compression.han_net`) of his
released Deep-Compressed SqueezeNet v1.0 and AlexNet. The weights are read exactly as his
``decode.py`` gives them, turned into sparse / quantized records bit for bit by the same
code as ``encode`` of a plain state dict (:func:`deep_compression.encode.model_tensors`),
written with ``encode``'s coding options (default the smallest coding: ``--coder best``,
gap widths ``auto``), and checked by decoding the written file again.
"""

from __future__ import annotations

import argparse
import hashlib
import time

from deep_compression.cli._common import add_out_arg, check_out, existing_file
from deep_compression.cli.dcz import add_coding_args, encode_config_of
from deep_compression.errors import FormatError
from deep_compression.records import CheckpointMeta, ModelSpec

FORMATS = ("han-net",)
MAX_INPUT_BYTES = 1 << 30  # his AlexNet file is 6.9 MB; anything near this is not his


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="convert another compressed-model file (Han's .net) into a .dcz, losslessly",
        description="Read a compressed model in another layout and write the same weights, "
        "bit for bit, as a .dcz file (checked by decoding it again).",
    )
    p.add_argument("file", metavar="FILE", type=existing_file, help="the file to import")
    p.add_argument("--format", required=True, choices=FORMATS, help="layout of FILE")
    p.add_argument(
        "--model",
        required=True,
        choices=("squeezenet-1.0", "alexnet"),
        help="the network FILE holds (its layers give the tensor shapes)",
    )
    add_out_arg(p, "compressed model (.dcz)")
    add_coding_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from deep_compression.caffe_models import caffe_layers
    from deep_compression.dcz import decode, write_dcz
    from deep_compression.encode import model_tensors
    from deep_compression.han_net import read_han_net
    from deep_compression.models import build_model

    check_out(args, ".dcz")
    config = encode_config_of(args)
    size = args.file.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise FormatError(f"{args.file}: {size} bytes is too large for a {args.format} file")
    blob = args.file.read_bytes()
    t0 = time.perf_counter()
    model = build_model(args.model)
    layers = caffe_layers(model)
    weights = read_han_net(blob, [(c, shape, bias) for c, _, shape, bias in layers], str(args.file))
    arrays: dict[str, np.ndarray] = {}
    for caffe, path, _, _ in layers:
        w, b = weights[caffe]
        arrays[f"{path}.weight"] = w
        arrays[f"{path}.bias"] = b
    missing = set(model.state_dict()) - set(arrays)
    if missing:  # every built-in Caffe model has only conv/linear parameters
        raise AssertionError(f"{args.model}: tensors without a source: {sorted(missing)}")
    # Into the model (bit for bit) so that the records, gap widths and the check of the
    # --gap-bits keys are encode's own.
    model.load_state_dict({name: torch.from_numpy(a) for name, a in arrays.items()})
    records = model_tensors(model, dict(config.gap_bits) or None, config.coder)
    source = {
        "format": args.format,
        "file": args.file.name,
        "bytes": size,
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    meta = CheckpointMeta(
        model=ModelSpec(args.model),
        stage="quantized",
        dataset="imagenet",
        details={"source": source},
    ).to_dict()
    written = write_dcz(args.out, records, meta, coder=config.coder, chunk=config.chunk)
    decoded, _ = decode(args.out)
    for name, a in arrays.items():
        if not np.array_equal(decoded[name].view(np.uint32), a.view(np.uint32)):
            args.out.unlink()
            raise AssertionError(f"{args.out}: {name} does not decode bit for bit; removed")
    print(
        f"wrote {args.out}: {written:,} bytes from {size:,} bytes of {args.file.name} "
        f"({written / size:.3f}x; {time.perf_counter() - t0:.1f} s); every tensor decodes "
        "bit for bit to what the .net file holds"
    )
    return 0
