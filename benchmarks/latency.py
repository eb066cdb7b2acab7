"""Latency of decoded models: a dense original against its shrunk (structured-pruned)
versions, at batch 1 and batch 64, on one CPU thread.

    DEEP_COMPRESSION_DATA=../shared/data .venv/bin/python benchmarks/latency.py \\
        DENSE_FILE SHRUNK.dcz [MORE.dcz ...] [--name lenet-5]

Every file is loaded as a deployer would (``load_any``: a ``.dcz`` is decoded, a
checkpoint rebuilt; weights dense in memory), then timed with
``torch.set_num_threads(1)`` under ``torch.inference_mode``: per batch size, a warm-up,
then ``--repeats`` timings of ``--iterations`` forward passes each; the median time per
forward pass is reported (and the spread, min..max). The speed-up is the dense model's
median over the shrunk model's. Multiply-accumulates per image (Conv2d and Linear) and
parameter counts are listed too, so the measured speed-up can be read against the
arithmetic one.

Writes ``benchmarks/results/latency_<name>.csv`` and ``.md`` and prints the table.
Numbers depend on the machine and on what else runs on it: ``benchmarks/machine.py``
describes this one.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def time_forward(model, x, iterations: int, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Seconds per forward pass of ``model`` on ``x``, one value per repeat."""
    import torch

    with torch.inference_mode():
        for _ in range(max(3, iterations // 4)):  # warm-up: allocator, caches
            model(x)
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(iterations):
                model(x)
            out.append((time.perf_counter() - t0) / iterations)
    return out


def onnx_forward(model, x):  # type: ignore[no-untyped-def]
    """``x -> logits`` through onnxruntime (one intra-op thread) for ``model`` exported as
    ``deep-compression export`` does: the same network, a runtime without PyTorch's
    per-operator dispatch cost, which dominates tiny networks at batch 1."""
    import onnxruntime

    from deep_compression.export import onnx_bytes

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        onnx_bytes(model, x[:1]), opts, providers=["CPUExecutionProvider"]
    )
    return lambda inputs: session.run(None, {"input": inputs.numpy()})[0]


def measure(path: Path, batches: list[int], iterations: int, repeats: int, allow_code: bool,
            runtime: str = "torch"):  # type: ignore[no-untyped-def]  # fmt: skip
    import torch

    from deep_compression.loading import load_any
    from deep_compression.models import count_parameters
    from deep_compression.shrink import count_macs

    model, meta = load_any(path, allow_code=allow_code)
    model.eval()
    shape = (1, 1, 28, 28) if meta.dataset in ("mnist", "fashion-mnist", None) else None
    if shape is None:
        raise SystemExit(f"{path}: unknown input shape for dataset {meta.dataset!r}")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for b in batches:
        x = torch.randn((b, *shape[1:]), generator=gen)
        run = model if runtime == "torch" else onnx_forward(model, x)
        times = time_forward(run, x, iterations if b == 1 else max(5, iterations // 8), repeats)
        rows.append(
            {
                "file": path.name,
                "runtime": runtime,
                "model": f"{meta.model.name} {dict(meta.model.kwargs)}",
                "params": count_parameters(model),
                "macs": count_macs(model, x),
                "batch": b,
                "median_ms": 1000 * statistics.median(times),
                "min_ms": 1000 * min(times),
                "max_ms": 1000 * max(times),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dense", type=Path, help="the dense original (.dcz or checkpoint)")
    p.add_argument("shrunk", type=Path, nargs="+", help="shrunk models (.dcz or checkpoint)")
    p.add_argument("--name", default="lenet-5", help="results file suffix")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--iterations", type=int, default=400, help="forward passes per timing")
    p.add_argument("--repeats", type=int, default=15, help="timings per batch size")
    p.add_argument("--allow-code", action="store_true")
    p.add_argument(
        "--runtime",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="run the models in PyTorch, or exported to ONNX in onnxruntime (1 thread)",
    )
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(1)
    rows = []
    for path in [args.dense, *args.shrunk]:
        rows += measure(path, args.batches, args.iterations, args.repeats, args.allow_code,
                        args.runtime)  # fmt: skip
    dense = {r["batch"]: r["median_ms"] for r in rows[: len(args.batches)]}
    for r in rows:
        r["speedup"] = dense[r["batch"]] / r["median_ms"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.runtime == "torch" else f"_{args.runtime}"
    csv_path = RESULTS / f"latency_{args.name}{suffix}.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = "| file | model | parameters | MACs/image | batch | median ms | min..max ms | speed-up |"
    lines = [head, "|:--|:--|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['model']} | {r['params']:,} | {r['macs']:,} | {r['batch']} | "
            f"{r['median_ms']:.3f} | {r['min_ms']:.3f}..{r['max_ms']:.3f} | "
            f"{r['speedup']:.2f}x |"
        )
    table = "\n".join(lines)
    cmd = "python benchmarks/latency.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = (
        f"# Latency: dense vs shrunk ({args.name}, {args.runtime})\n\nOne thread, "
        f"torch {torch.__version__}; median of {args.repeats} timings.\n\n`{cmd}`\n\n{table}\n"
    )
    csv_path.with_suffix(".md").write_text(md)
    print(table)
    print(f"wrote {csv_path} and {csv_path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
