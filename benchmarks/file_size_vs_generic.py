"""The .dcz file against what a user would do instead: gzip, xz or zstd the weights.

For each pruned and quantized LeNet checkpoint, bytes of

  (a) our ``.dcz`` (Huffman, the paper's P+Q+H; also ANS, per-stream "best", and the
      fixed-width P+Q file),
  (b) a dense safetensors file of the same decoded weights (what ``decode`` writes),
  (c) that safetensors file compressed with gzip -9, xz -9 (lzma preset 9 | extreme) and
      zstd -19 (the ``zstandard`` package),

and the ratio of the best generic file to the ``.dcz``. Every figure is the length of a
real byte string; the decoded weights are checked bit-identical to the checkpoint's.

Checkpoints: the arguments, or by default the quantized checkpoints that ``deep-compression
compress --recipe recipes/<model>.toml`` leaves in ``runs/compress/<model>/quantized.safetensors``
(else ``runs/quantize/<model>.safetensors``). When a default
is missing, a STAND-IN is made from the dense baseline ``runs/<model>/dense.safetensors``
and clearly labelled: magnitude pruning to the paper's kept fractions, masked retraining,
1-D k-means (kmeans1d) to the paper's bits, centroid fine-tuning. It is cached under
``runs/dcz/``. Results: ``benchmarks/results/file_size_vs_generic.{md,csv}``.

    .venv/bin/python benchmarks/file_size_vs_generic.py [CHECKPOINT ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import lzma
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import zstandard
from safetensors.numpy import save as save_numpy
from torch.nn.utils import parametrize

from deep_compression.checkpoint import save_checkpoint
from deep_compression.data import load_dataset
from deep_compression.dcz import decode
from deep_compression.encode import EncodeConfig, encode_model, plain_state_dict
from deep_compression.loading import load_model
from deep_compression.table import format_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# Paper (Han et al. 2016, Tables 2-3): kept fraction and quantization bits per layer.
PAPER = {
    "lenet-300-100": {"fc1": (0.08, 6), "fc2": (0.09, 6), "fc3": (0.26, 6)},
    "lenet-5": {"conv1": (0.66, 8), "conv2": (0.12, 8), "fc1": (0.08, 5), "fc2": (0.19, 5)},
}


def make_standin(name: str, out: Path, data_dir: str | None) -> Path:
    """Prune, retrain, quantize and fine-tune a dense baseline (a stand-in, see above)."""
    import kmeans1d

    from deep_compression.prune import PruningMask
    from deep_compression.quantize import QuantizedWeight
    from deep_compression.train import TrainConfig, evaluate, fit, seed_everything

    dense = ROOT / "runs" / name / "dense.safetensors"
    if not dense.is_file():
        sys.exit(f"{dense} missing: train it first (deep-compression train --model {name} ...)")
    seed_everything(0)
    model, meta = load_model(dense)
    train, test = load_dataset(meta.dataset or "mnist", data_dir)
    layers = PAPER[name]
    for lname, (keep, _) in layers.items():
        layer = getattr(model, lname)
        w = layer.weight.detach()
        threshold = w.abs().flatten().kthvalue(int(w.numel() * (1 - keep))).values
        mask = w.abs() > threshold
        with torch.no_grad():
            layer.weight.mul_(mask)
        parametrize.register_parametrization(layer, "weight", PruningMask(mask))
    fit(model, train, test, TrainConfig(epochs=8, lr=0.005, weight_decay=1e-4, seed=0),
        progress=False)  # fmt: skip
    for lname, (_, bits) in layers.items():
        layer = getattr(model, lname)
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        w = layer.weight.detach()
        mask = w != 0
        labels, centroids = kmeans1d.cluster(w[mask].double().numpy(), 1 << bits)
        idx = torch.zeros(w.shape, dtype=torch.int32)
        idx[mask] = torch.tensor(labels, dtype=torch.int32)
        qw = QuantizedWeight(torch.tensor(centroids, dtype=torch.float32), idx, mask)
        parametrize.register_parametrization(layer, "weight", qw, unsafe=True)
    fit(model, train, test, TrainConfig(epochs=3, lr=0.001, weight_decay=0.0, seed=0),
        progress=False)  # fmt: skip
    _, acc = evaluate(model, test)
    meta = {**meta, "stage": "quantized-standin", "test_accuracy": acc, "test_error": 1 - acc}
    save_checkpoint(out, model, meta)
    print(f"stand-in {out}: test error {100 * (1 - acc):.2f}%", flush=True)
    return out


def sizes_for(path: Path, label: str) -> list[dict[str, object]]:
    model, meta = load_model(path)
    variants = {  # label: (coder, gap bits)
        ".dcz huffman (P+Q+H, paper gap bits)": ("huffman", None),
        ".dcz huffman, auto gap bits": ("huffman", "auto"),
        ".dcz ans, auto gap bits": ("ans", "auto"),
        ".dcz best coder per stream, auto gap bits": ("best", "auto"),
        ".dcz fixed (P+Q, paper gap bits)": ("fixed", None),
    }
    with tempfile.TemporaryDirectory() as tmp:
        dcz_bytes = {}
        for what, (coder, gap_bits) in variants.items():
            out = Path(tmp) / "m.dcz"
            report = encode_model(
                model,
                out,
                EncodeConfig(coder, gap_bits or {}),
                metadata={"model": meta.model.to_dict()},
            )
            dcz_bytes[what] = report.file_bytes
        arrays, _ = decode(out)
    expected = plain_state_dict(model)
    assert all(np.array_equal(arrays[k], v.numpy()) for k, v in expected.items())
    dense = save_numpy(arrays)  # the decoded weights as a plain safetensors file
    generic = {
        "gzip -9": gzip.compress(dense, compresslevel=9, mtime=0),
        "xz -9e": lzma.compress(dense, preset=9 | lzma.PRESET_EXTREME),
        "zstd -19": zstandard.ZstdCompressor(level=19).compress(dense),
    }
    original = 4 * sum(a.size for a in arrays.values())
    best_generic = min(len(b) for b in generic.values())

    def row(what: str, size: int) -> dict[str, object]:
        return {
            "checkpoint": label,
            "file": what,
            "bytes": size,
            "rate": round(original / size, 1),
            "best generic / this": round(best_generic / size, 2),
        }

    rows = [row(what, size) for what, size in dcz_bytes.items()]
    rows.append(row("dense safetensors (decoded weights)", len(dense)))
    rows += [row(f"safetensors + {name}", len(blob)) for name, blob in generic.items()]
    headline = (".dcz huffman (P+Q+H, paper gap bits)", ".dcz best coder per stream, auto gap bits")
    for what in headline:
        print(
            f"{label}: {what} {dcz_bytes[what]:,} bytes; best generic {best_generic:,} bytes "
            f"= {best_generic / dcz_bytes[what]:.2f}x (target >= 1.5x)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    todo: list[tuple[Path, str]] = [(p, p.name) for p in args.checkpoints]
    if not todo:
        for name in PAPER:
            found = [
                p
                for p in (
                    ROOT / "runs" / "compress" / name / "quantized.safetensors",
                    ROOT / "runs" / "quantize" / f"{name}.safetensors",
                )
                if p.is_file()
            ]
            if found:
                todo.append((found[0], f"{name} ({found[0].relative_to(ROOT)})"))
                continue
            cached = ROOT / "runs" / "dcz" / f"{name}-standin.safetensors"
            if not cached.is_file():
                make_standin(name, cached, args.data_dir)
            todo.append((cached, f"{name} (STAND-IN: prune, retrain, kmeans1d, fine-tune)"))
    rows = [r for path, label in todo for r in sizes_for(path, label)]
    headers = list(rows[0])
    table = format_table(headers, [[r[h] for h in headers] for r in rows])
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "file_size_vs_generic.md").write_text(table + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=headers)
    w.writeheader()
    w.writerows(rows)
    (RESULTS / "file_size_vs_generic.csv").write_text(buf.getvalue())


if __name__ == "__main__":
    main()
