"""Does the budget hold on images no decision saw? Seeded runs of ``compress --no-retrain``
on a checkpoint that records no split.

    .venv/bin/python benchmarks/budget_holds.py CKPT --budget 0.5 --seeds 10 --tag lenet300 \\
        [-- any other compress options: --model ... --dataset ... --allow-code --calibration 0]

Each run is the command a user types, with ``--val-from test --val-seed S``: the test set
cut in two seeded halves, every decision on the first (each candidate paired with the
dense model, kept when the budget holds with 90% confidence), the report on the second.
The budget *holds* in a run when the final file's error increase over the dense model on
the report half (the same images for both) is at most the budget.

Writes ``benchmarks/results/budget_holds_<tag>.{csv,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CLI = [sys.executable, "-m", "deep_compression"]
COLUMNS = ["seed", "val_images", "test_images", "dense_val", "dense_test", "final_val",
           "final_test", "val_increase", "val_high", "test_increase", "test_low", "test_high",
           "holds", "file_bytes", "rate", "candidates", "search_s", "s_per_candidate"]  # fmt: skip


def run_one(ckpt: str, budget: float, seed: int, out: Path, extra: list[str]) -> dict:
    """One seeded run through the CLI; its report's figures."""
    cmd = [*CLI, "compress", ckpt, "--no-retrain", "--max-error-increase", str(budget),
           "--val-from", "test", "--val-seed", str(seed), "--out-dir", str(out), "--force",
           "--threads", "1", *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{proc.stderr[-2000:]}")
    doc = json.loads((out / "report.json").read_text())  # a RunReport
    phases = {p["phase"]: p for p in doc["phases"]}
    dense, final = phases["dense"], phases["decoded"]
    val, test = doc["increase"]["val"], doc["increase"]["test"]
    search = doc["search"]
    return {
        "seed": seed,
        "val_images": val["n"],
        "test_images": test["n"],
        "dense_val": round(100 * dense["val_error"], 2),
        "dense_test": round(100 * dense["test_error"], 2),
        "final_val": round(100 * final["val_error"], 2),
        "final_test": round(100 * final["test_error"], 2),
        "val_increase": round(val["increase"], 2),
        "val_high": round(val["high"], 2),
        "test_increase": round(test["increase"], 2),
        "test_low": round(test["low"], 2),
        "test_high": round(test["high"], 2),
        "holds": test["increase"] <= budget + 1e-9,
        "file_bytes": doc["stages"][-1]["bytes"],
        "rate": round(doc["stages"][-1]["rate"], 1),
        "candidates": search["candidates"],
        "search_s": search["seconds"],
        "s_per_candidate": round(search["seconds"] / max(1, search["candidates"]), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--tag", default="run")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    extra = argv[cut + 1 :]  # after --: more compress options
    rows = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        row = run_one(args.checkpoint, args.budget, seed, ROOT / "runs" / "holds" / f"s{seed}",
                      extra)  # fmt: skip
        rows.append(row)
        print(", ".join(f"{k} {row[k]}" for k in COLUMNS), flush=True)
    held = sum(r["holds"] for r in rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"budget_holds_{args.tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    lines = [
        f"# Budget held on the unseen test half: {held} of {len(rows)} seeded runs",
        "",
        f"`compress {args.checkpoint} --no-retrain --max-error-increase {args.budget} "
        f"--val-from test --val-seed S {' '.join(extra)}` for S = 0..{args.seeds - 1}; "
        f"{time.perf_counter() - t0:.0f} s in all. Errors in %, increases in points "
        "(paired, the final file against the dense model on the same images; high/low: "
        "the one-sided 90% bounds).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(str(r[k]) for k in COLUMNS) + " |" for r in rows),
    ]
    (RESULTS / f"budget_holds_{args.tag}.md").write_text("\n".join(lines) + "\n")
    print(lines[0])


if __name__ == "__main__":
    main()
