"""One LeNet-5 retraining epoch on 2 processes x 1 thread, 1 x 1 and 1 x 2 (MNIST, CPU).

The retraining is the pruning phase's: LeNet-5 pruned to the first round of
``recipes/lenet-5.toml`` (conv1 83.5%, conv2 69.6%, fc1 67.5%, fc2 70.3% kept, masks as
parametrizations), trained one epoch with that recipe's ``[prune.retrain]`` settings
(global batch 128, lr 0.01, weight decay 1e-4, one-pixel shifts). Each configuration runs in
fresh processes (two ranks through ``torchrun --standalone``, as a user would launch them);
the time is fit's own epoch time (the 60,000 training images, no evaluation), then a
separate timing of the sharded evaluation of the 10,000 test images. Configurations are
interleaved over ``--repeats`` rounds and the fastest time of each is reported, because the
machine is shared: the 1/5/15-minute load averages before and after every run are saved
next to the figures.

    python benchmarks/distributed_speed.py              # about 5 minutes on a quiet machine
    python benchmarks/distributed_speed.py --quick      # 6,000 images, a smoke run

Writes benchmarks/results/distributed_speed.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# (processes, threads per process), in the order they run within a round.
CONFIGS = ((1, 1), (1, 2), (2, 1))
# Round 1 of recipes/lenet-5.toml, and its [prune.retrain] table.
KEEP = {"conv1": 0.835, "conv2": 0.6963, "fc1": 0.6749, "fc2": 0.7029}
RETRAIN = {"epochs": 1, "lr": 0.01, "weight_decay": 0.0001, "augment": 1, "seed": 0}


def worker(args: argparse.Namespace) -> int:
    """One configuration: every rank trains its share; rank 0 writes the timings."""
    import torch

    torch.set_num_threads(args.threads)
    from deep_compression import distributed
    from deep_compression.data import Split, load_dataset
    from deep_compression.models import build_model
    from deep_compression.prune import KeepFraction, prune_
    from deep_compression.train import TrainConfig, evaluate, fit

    with distributed.session():
        train, test = load_dataset("mnist", args.data_dir)
        if args.limit:
            train = Split(train.x[: args.limit], train.y[: args.limit])
        torch.manual_seed(0)
        model = build_model("lenet-5")
        prune_(model, {name: KeepFraction(k) for name, k in KEEP.items()})
        cpu0 = time.process_time()  # this process, all its threads (gloo's included)
        result = fit(model, train, None, TrainConfig(**RETRAIN), progress=False)
        (cpu_seconds,) = distributed.all_reduce_sum(time.process_time() - cpu0)
        t0 = time.perf_counter()
        _, accuracy = evaluate(model, test)
        eval_seconds = time.perf_counter() - t0
        row = {
            "processes": distributed.world_size(),
            "threads": args.threads,
            "train_images": len(train),
            "epoch_seconds": result.history[0].seconds,
            "cpu_seconds": cpu_seconds,
            "train_loss": result.history[0].train_loss,
            "eval_seconds": eval_seconds,
            "test_error": 1 - accuracy,
        }
        if distributed.is_main():
            Path(args.result).write_text(json.dumps(row))
    return 0


def run_config(processes: int, threads: int, limit: int, data_dir: str | None) -> dict:
    """Launch one configuration in fresh processes and return rank 0's timings."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        args = [str(Path(__file__).resolve()), "--worker", "--threads", str(threads)]
        args += ["--result", str(result), "--limit", str(limit)]
        if data_dir:
            args += ["--data-dir", data_dir]
        if processes == 1:
            cmd = [sys.executable, *args]
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            cmd = [*launcher, "--nproc-per-node", str(processes), *args]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        load_before = machine.load_average()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        row = json.loads(result.read_text())
    row["load_before"], row["load_after"] = load_before, machine.load_average()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the 3 configurations")
    parser.add_argument("--quick", action="store_true", help="6,000 training images, 1 round")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch

    limit = 6000 if args.quick else 0
    repeats = 1 if args.quick else args.repeats
    rows = []
    for rep in range(1, repeats + 1):
        for processes, threads in CONFIGS:
            row = {"repeat": rep, **run_config(processes, threads, limit, args.data_dir)}
            row["images_per_s"] = row["train_images"] / row["epoch_seconds"]
            rows.append(row)
            print(
                f"round {rep}: {processes} process(es) x {threads} thread(s): "
                f"{row['epoch_seconds']:.1f} s/epoch ({row['images_per_s']:.0f} images/s, "
                f"{row['cpu_seconds']:.1f} CPU s), "
                f"evaluation {row['eval_seconds']:.2f} s, load {row['load_before']} -> "
                f"{row['load_after']}",
                flush=True,
            )
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"distributed_speed{suffix}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    best = {
        c: min(
            (r for r in rows if (r["processes"], r["threads"]) == c),
            key=lambda r: r["epoch_seconds"],
        )
        for c in CONFIGS
    }
    base = best[(1, 1)]
    lines = [
        "# One LeNet-5 retraining epoch: processes x threads",
        "",
        f"`python benchmarks/distributed_speed.py{' --quick' if args.quick else ''}`, "
        f"{datetime.date.today()}, {machine.cpu_name()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, gloo. LeNet-5 pruned to round 1 of recipes/lenet-5.toml, one "
        f"epoch over {base['train_images']:,} MNIST images with its retraining settings "
        "(global batch 128, lr 0.01, one-pixel shifts); fastest of "
        f"{repeats} interleaved round(s). Load averages (1/5/15 min) before and after each run "
        "are in the CSV; the machine is shared with other jobs.",
        "",
        "| processes x threads | s / epoch | images / s | vs 1 x 1 | CPU s (all ranks) "
        "| evaluation, 10,000 images | test error | load before -> after |",
        "|:--|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for (processes, threads), r in best.items():
        lines.append(
            f"| {processes} x {threads} | {r['epoch_seconds']:.1f} | {r['images_per_s']:,.0f} | "
            f"{base['epoch_seconds'] / r['epoch_seconds']:.2f}x | {r['cpu_seconds']:.1f} | "
            f"{r['eval_seconds']:.2f} s | {100 * r['test_error']:.2f}% | "
            f"{r['load_before']} -> {r['load_after']} |"
        )
    lines += [
        "",
        "All runs:",
        "",
        "| round | processes x threads | s / epoch | CPU s | train loss | load before -> after |",
        "|--:|:--|--:|--:|--:|:--|",
    ]
    for r in rows:
        lines.append(
            f"| {r['repeat']} | {r['processes']} x {r['threads']} | {r['epoch_seconds']:.1f} | "
            f"{r['cpu_seconds']:.1f} | {r['train_loss']:.4f} | "
            f"{r['load_before']} -> {r['load_after']} |"
        )
    (RESULTS / f"distributed_speed{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


sys.path.insert(0, str(HERE))
import machine  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
