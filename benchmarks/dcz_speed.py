"""Encode/decode speed and memory of the .dcz codec at VGG-16 scale.

Synthetic data shaped like the paper's largest case: VGG-16's fc6 (25088 x 4096 = 102.8M
weights) pruned to 4% density with 5-bit (32-centroid) cluster indices and 5-bit gaps,
and optionally (``--vgg``) every layer of VGG-16 at the paper's kept fractions (Han et
al. 2015, Table 5) with the paper's bits (conv 8, fc 5). Kept positions are a Bernoulli
pattern (geometric gaps); cluster indices follow a discretised normal, the bell shape
trained quantization produces. Nothing here is a trained network: the point is time and
memory, which depend on the counts, not on the values.

Measures, per coder: ``to_bytes`` (encode), ``decode`` (bytes -> dense float32 arrays),
file size, and the peak of numpy allocations (tracemalloc) relative to the dense float32
size. Wall and CPU seconds are both given: the machine is shared, and the CPU time is the
less noisy figure (numpy runs single-threaded here). Results go to
``benchmarks/results/dcz_speed[_vgg].{md,csv}``.

    .venv/bin/python benchmarks/dcz_speed.py [--vgg] [--coders huffman ans fixed]
"""

from __future__ import annotations

import argparse
import csv
import time
import tracemalloc
from pathlib import Path

import numpy as np

from deep_compression.dcz import DenseTensor, QuantizedTensor, decode, to_bytes
from deep_compression.table import format_table

RESULTS = Path(__file__).resolve().parent / "results"

# VGG-16 layers: (name, weight shape, kept fraction from Han et al. 2015 Table 5).
VGG16 = [
    ("conv1_1", (64, 3, 3, 3), 0.58), ("conv1_2", (64, 64, 3, 3), 0.22),
    ("conv2_1", (128, 64, 3, 3), 0.34), ("conv2_2", (128, 128, 3, 3), 0.36),
    ("conv3_1", (256, 128, 3, 3), 0.53), ("conv3_2", (256, 256, 3, 3), 0.24),
    ("conv3_3", (256, 256, 3, 3), 0.42), ("conv4_1", (512, 256, 3, 3), 0.32),
    ("conv4_2", (512, 512, 3, 3), 0.27), ("conv4_3", (512, 512, 3, 3), 0.34),
    ("conv5_1", (512, 512, 3, 3), 0.35), ("conv5_2", (512, 512, 3, 3), 0.29),
    ("conv5_3", (512, 512, 3, 3), 0.36), ("fc6", (4096, 25088), 0.04),
    ("fc7", (4096, 4096), 0.04), ("fc8", (1000, 4096), 0.23),
]  # fmt: skip


def synthetic_layer(
    name: str, shape: tuple[int, ...], density: float, bits: int, gap_bits: int, seed: int
) -> QuantizedTensor:
    rng = np.random.default_rng(seed)
    numel = int(np.prod(shape))
    # Bernoulli(density) positions via geometric gaps, without a numel-sized temporary.
    gaps = rng.geometric(density, size=int(numel * density * 1.1) + 100)
    positions = np.cumsum(gaps) - 1
    positions = positions[positions < numel]
    k = 1 << bits
    indices = np.clip(np.round(rng.normal(k / 2 - 0.5, k / 6, positions.size)), 0, k - 1)
    codebook = np.sort(rng.normal(0, 0.02, k)).astype(np.float32)
    return QuantizedTensor(f"{name}.weight", shape, positions, indices.astype(np.int32),
                           codebook, gap_bits)  # fmt: skip


def measure(records, coder: str, dense_bytes: int) -> dict[str, object]:
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    blob = to_bytes(records, {}, coder=coder)
    encode_s, encode_cpu = time.perf_counter() - t0, time.process_time() - c0
    _, encode_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    arrays, _ = decode(blob)
    decode_s, decode_cpu = time.perf_counter() - t0, time.process_time() - c0
    _, decode_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kept = sum(r.positions.size for r in records if isinstance(r, QuantizedTensor))
    del arrays
    return {
        "coder": coder,
        "kept": kept,
        "file_bytes": len(blob),
        "encode_s": round(encode_s, 2),
        "encode_cpu_s": round(encode_cpu, 2),
        "decode_s": round(decode_s, 2),
        "decode_cpu_s": round(decode_cpu, 2),
        "encode_peak_x_dense": round(encode_peak / dense_bytes, 2),
        "decode_peak_x_dense": round(decode_peak / dense_bytes, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vgg", action="store_true", help="also the whole VGG-16 (slow)")
    parser.add_argument("--coders", nargs="+", default=["huffman", "ans", "fixed"])
    args = parser.parse_args()

    fc6 = synthetic_layer("fc6", (4096, 25088), 0.04, bits=5, gap_bits=5, seed=0)
    cases = {"fc6 25088x4096, 4% kept, 5-bit": [fc6]}
    if args.vgg:
        recs = []
        for i, (name, shape, density) in enumerate(VGG16):
            bits = 8 if len(shape) == 4 else 5  # the paper's: conv 8, fc 5 (indices and gaps)
            recs.append(synthetic_layer(name, shape, density, bits, bits, i))
            bias = np.zeros(shape[0], dtype=np.float32)
            recs.append(DenseTensor(f"{name}.bias", bias))
        cases["VGG-16 (paper's densities, conv 8 / fc 5 bits)"] = recs
    rows = []
    for case, records in cases.items():
        numel = sum(
            int(np.prod(r.shape)) if isinstance(r, QuantizedTensor) else r.array.size
            for r in records
        )
        for coder in args.coders:
            row = {"case": case, "weights": numel, **measure(records, coder, 4 * numel)}
            rows.append(row)
            print(row, flush=True)
    headers = list(rows[0])
    table = format_table(headers, [[r[h] for h in headers] for r in rows])
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "dcz_speed_vgg" if args.vgg else "dcz_speed"
    (RESULTS / f"{stem}.md").write_text(table + "\n")
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=headers)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
