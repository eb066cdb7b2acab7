"""Compression to an accuracy budget across models, datasets, budgets and seeds.

For each (model, dataset) a dense checkpoint is trained with 5,000 training images held
out (``deep-compression train --val-size auto``; reused if present in ``--checkpoints``),
then ``compress CKPT --max-error-increase P --seed S`` runs for every budget and seed. Each
finished run appends a row to ``benchmarks/results/budget.csv`` (a rerun skips the rows
already there), and ``budget.md`` aggregates them: mean and spread (min..max) over seeds
of the rate, the validation and test error increase, and the wall time of the search.

    python benchmarks/budget.py                                   # the whole grid
    python benchmarks/budget.py --models lenet-300-100 --datasets mnist --budgets 0.5 --seeds 0

Run it on an otherwise idle machine for the times to mean anything; ``--threads 1``
processes are used throughout (torch's default threads collapse on shared cores).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FIELDS = ["model", "dataset", "budget", "seed", "dense_val", "dense_test", "val", "test",
          "bytes", "rate", "kept", "bits", "seconds"]  # fmt: skip
# Dense training, as the recipes train them (LeNet-5 at 0.02: 0.05 diverged once).
TRAIN = {
    "lenet-300-100": ["--epochs", "30", "--lr", "0.05", "--weight-decay", "0.0005"],
    "lenet-5": ["--epochs", "20", "--lr", "0.02", "--weight-decay", "0.0005"],
}


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "deep_compression", *args, "--threads", "1"]
    print("$ deep-compression " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def dense_checkpoint(model: str, dataset: str, directory: Path) -> Path:
    path = directory / f"{model}-{dataset}.safetensors"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        _cli("train", "--model", model, "--dataset", dataset, *TRAIN[model], "-o", str(path))
    return path


def run_one(ckpt: Path, budget: float, seed: int, runs: Path, max_minutes: float | None) -> dict:
    import json

    run_dir = runs / f"{ckpt.stem}-budget{budget:g}-seed{seed}"
    extra = ["--max-minutes", str(max_minutes)] if max_minutes else []
    t0 = time.perf_counter()
    _cli("compress", str(ckpt), "--max-error-increase", str(budget), "--seed", str(seed),
         "--out-dir", str(run_dir), "--force", "--no-plots", *extra)  # fmt: skip
    seconds = time.perf_counter() - t0
    report = json.loads((run_dir / "report.json").read_text())
    phases = {p["phase"]: p for p in report["phases"]}
    final = report["stages"][-1]
    bits = json.loads((run_dir / "recipe.json").read_text())["quantize"]["bits"]
    return {
        "dense_val": phases["dense"]["val_error"],
        "dense_test": phases["dense"]["test_error"],
        "val": phases["decoded"]["val_error"],
        "test": phases["decoded"]["test_error"],
        "bytes": final["bytes"],
        "rate": round(final["rate"], 2),
        "kept": round(report["kept_fraction"], 5),
        "bits": " ".join(f"{k}:{v}" for k, v in bits.items()),
        "seconds": round(seconds, 1),
    }


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _spread(values: list[float], fmt: str) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ({format(min(values), fmt)}..{format(max(values), fmt)})"


def write_markdown(rows: list[dict], path: Path) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["dataset"], float(r["budget"])), []).append(r)
    lines = [
        "# Compression to an accuracy budget (`benchmarks/budget.py`)",
        "",
        "Mean (min..max) over seeds. Errors in %, increases in points over the dense model "
        "on the same split; the budget bounds the validation increase; the test set was "
        "measured once per run, for this table. Time: the whole `compress` command.",
        "",
        "| model | dataset | budget | seeds | rate | val increase | test increase | test error "
        "| minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, dataset, budget), rs in sorted(groups.items()):

        def f(k: str, rs: list[dict] = rs) -> list[float]:
            return [float(r[k]) for r in rs]

        val_inc = [100 * (v - d) for v, d in zip(f("val"), f("dense_val"), strict=True)]
        test_inc = [100 * (t - d) for t, d in zip(f("test"), f("dense_test"), strict=True)]
        lines.append(
            f"| {model} | {dataset} | {budget:g} | {len(rs)} | {_spread(f('rate'), '.1f')}x | "
            f"{_spread(val_inc, '+.2f')} | {_spread(test_inc, '+.2f')} | "
            f"{_spread([100 * t for t in f('test')], '.2f')} | "
            f"{_spread([s / 60 for s in f('seconds')], '.1f')} |"
        )
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["lenet-300-100", "lenet-5"])
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--budgets", nargs="+", type=float, default=[0.1, 0.5, 1.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--checkpoints", type=Path, default=ROOT / "runs" / "budget" / "dense")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "budget")
    p.add_argument("--max-minutes", type=float, default=None, help="passed to compress")
    p.add_argument("--csv", type=Path, default=RESULTS / "budget.csv")
    p.add_argument("--report", action="store_true", help="only rewrite budget.md from the CSV")
    args = p.parse_args()
    rows = _read(args.csv)
    if args.report:
        write_markdown(rows, args.csv.with_suffix(".md"))
        return
    done = {(r["model"], r["dataset"], float(r["budget"]), int(r["seed"])) for r in rows}
    for model in args.models:
        for dataset in args.datasets:
            ckpt = dense_checkpoint(model, dataset, args.checkpoints)
            for budget in args.budgets:
                for seed in args.seeds:
                    if (model, dataset, budget, seed) in done:
                        continue
                    row = {"model": model, "dataset": dataset, "budget": budget, "seed": seed,
                           **run_one(ckpt, budget, seed, args.runs, args.max_minutes)}  # fmt: skip
                    rows.append(row)
                    args.csv.parent.mkdir(parents=True, exist_ok=True)
                    new = not args.csv.exists()
                    with args.csv.open("a", newline="") as f:
                        w = csv.DictWriter(f, FIELDS)
                        if new:
                            w.writeheader()
                        w.writerow(row)
    write_markdown(rows, args.csv.with_suffix(".md"))


if __name__ == "__main__":
    main()
