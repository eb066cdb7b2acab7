"""Prune both LeNets with their shipped recipes and print kept %, error and wall time.

    DEEP_COMPRESSION_DATA=../shared/data .venv/bin/python benchmarks/prune_lenets.py

Needs the dense baselines ``runs/<model>/dense.safetensors`` (``deep-compression train``);
writes ``runs/prune/<model>.safetensors``. This is an experiment, not a test: LeNet-5
takes many minutes on a laptop CPU. ``--threads 1`` by default so that the numbers do
not depend on how busy the other core is (pass ``--threads 2`` to use both).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["lenet-300-100", "lenet-5"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from deep_compression.checkpoint import load_checkpoint
    from deep_compression.table import format_table

    rows = []
    for model in args.models:
        dense = ROOT / "runs" / model / "dense.safetensors"
        recipe = ROOT / "recipes" / "prune" / f"{model}.toml"
        out = ROOT / "runs" / "prune" / f"{model}.safetensors"
        cmd = [
            sys.executable, "-m", "deep_compression", "prune", str(dense),
            "--recipe", str(recipe), "--out", str(out), "--threads", str(args.threads),
        ]  # fmt: skip
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - t0
        _, meta = load_checkpoint(out)
        _, dense_meta = load_checkpoint(dense)
        rows.append(
            [
                model,
                f"{100 * dense_meta.test_error:.2f}%",
                f"{100 * meta.details['prune']['kept_fraction']:.2f}%",
                f"{1 / meta.details['prune']['kept_fraction']:.1f}x",
                f"{100 * meta.test_error:.2f}%",
                f"{seconds:.0f} s",
            ]
        )
    print(
        format_table(
            ["model", "dense error", "weights kept", "fewer weights", "pruned error", "wall"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
