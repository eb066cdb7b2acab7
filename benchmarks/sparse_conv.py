"""Does a sparse convolution pay on this CPU? Dense ``F.conv2d`` against the sparse
formulation (im2col with ``F.unfold``, then a CSR weight times the patch matrix), on
convolution shapes of LeNet-5, a CIFAR ResNet and VGG-16 at pruned densities.

    python benchmarks/sparse_conv.py [--repeats 21] [--threads 1]

Writes benchmarks/results/sparse_conv.{csv,md}. The sparse path is exact (checked against
the dense output before timing); the question is only speed.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
import warnings
from functools import partial
from pathlib import Path

import machine
import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"

# (name, C_out, C_in, k, H=W of the input, stride, padding)
LAYERS = [
    ("LeNet-5 conv2", 50, 20, 5, 12, 1, 0),
    ("ResNet-20 layer3 conv (CIFAR)", 64, 64, 3, 8, 1, 1),
    ("ResNet-20 layer1 conv (CIFAR)", 16, 16, 3, 32, 1, 1),
    ("VGG-16 conv4_2", 512, 512, 3, 28, 1, 1),
    ("VGG-16 conv5_3", 512, 512, 3, 14, 1, 1),
]
DENSITIES = (0.05, 0.1, 0.3)
BATCHES = (1, 16)


def _median_us(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


def _sparse_conv(x: torch.Tensor, w_csr: torch.Tensor, k: int, stride: int, pad: int, c_out: int):
    n, _, h, w = x.shape
    cols = F.unfold(x, k, padding=pad, stride=stride)  # (N, C_in*k*k, L)
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    out = torch.stack([torch.sparse.mm(w_csr, cols[i]) for i in range(n)])  # (N, C_out, L)
    return out.view(n, c_out, oh, ow)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, c_out, c_in, k, hw, stride, pad in LAYERS:
        weight = torch.randn(c_out, c_in, k, k, generator=gen)
        for density in DENSITIES:
            keep = torch.rand(weight.shape, generator=gen) < density
            w = weight * keep
            w_csr = w.reshape(c_out, -1).to_sparse_csr()
            # VGG-16's layers at batch 16 take minutes per call in the sparse path.
            for batch in BATCHES if c_out < 512 else BATCHES[:1]:
                x = torch.randn(batch, c_in, hw, hw, generator=gen)
                with torch.no_grad():
                    dense_out = F.conv2d(x, w, stride=stride, padding=pad)
                    sparse_out = _sparse_conv(x, w_csr, k, stride, pad, c_out)
                    assert torch.allclose(dense_out, sparse_out, atol=1e-3, rtol=1e-4)
                    dense = partial(F.conv2d, x, w, stride=stride, padding=pad)
                    sparse = partial(_sparse_conv, x, w_csr, k, stride, pad, c_out)
                    d = _median_us(dense, args.repeats)
                    s = _median_us(sparse, args.repeats)
                rows.append([name, density, batch, round(d, 1), round(s, 1), round(d / s, 2)])
                print(f"{name:32s} {density:4.0%} batch {batch:3d}: dense {d:9.1f} us, "
                      f"sparse {s:9.1f} us, speedup {d / s:.2f}x", flush=True)  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    header = ["layer", "kept", "batch", "dense_us", "sparse_us", "speedup"]
    with open(RESULTS / "sparse_conv.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    lines = [
        f"# Sparse convolution (im2col + CSR) vs dense conv2d, {args.threads} thread(s)",
        "",
        f"CPU: {machine.cpu_name()}; load average {machine.load_average()}; median of "
        f"{args.repeats} runs, microseconds.",
        "",
        "| layer | kept | batch | dense us | sparse us | dense / sparse |",
        "|:--|--:|--:|--:|--:|--:|",
        *[
            f"| {r[0]} | {100 * r[1]:.0f}% | {r[2]} | {r[3]:,} | {r[4]:,} | {r[5]:.2f}x |"
            for r in rows
        ],
        "",
    ]
    (RESULTS / "sparse_conv.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
