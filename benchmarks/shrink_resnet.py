"""Structured pruning of a ResNet with BatchNorm: accuracy against FLOPs and latency.

    DEEP_COMPRESSION_DATA=../shared/data .venv/bin/python benchmarks/shrink_resnet.py \\
        [--depth 8] [--epochs 3] [--retrain 1] [--keeps 0.75 0.5 0.25] [--criteria bn l1]

The network is ``examples/models.py:resnet`` (CIFAR-style, BatchNorm, residual additions,
option-A shortcuts) with one input channel, trained on Fashion-MNIST with a seeded
5,000-image validation split carved from the training set. Its channel groups are traced
(:func:`deep_compression.shrink.trace_groups`): the option-A shortcut pads channels, an
operation the tracer does not follow, so the residual streams are pinned and the channels
inside each block (conv1 -> bn1 -> conv2) are what is pruned. For every criterion and kept
fraction, a copy of the dense network is shrunk, retrained ``--retrain`` epochs, and
measured: validation and test error, parameters, multiply-accumulates per image, and the
latency of a forward pass at batch 1 and 64 on one thread (median of ``--repeats``).

Writes ``benchmarks/results/shrink_resnet.csv`` and ``.md`` and prints the table. An
experiment, not a test: minutes per epoch on one thread.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def latency_ms(model, batch: int, repeats: int) -> float:  # type: ignore[no-untyped-def]
    import torch
    from latency import time_forward

    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return 1000 * statistics.median(time_forward(model, x, 100 if batch == 1 else 10, repeats))


def row(name: str, model, data, seconds: float, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    import torch

    from deep_compression.shrink import count_macs
    from deep_compression.train import evaluate

    x = data.train[0][0][None]
    return {
        "variant": name,
        "val_error": round(1 - evaluate(model, data.val)[1], 4),
        "test_error": round(1 - evaluate(model, data.test)[1], 4),
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, x),
        "ms_batch1": round(latency_ms(model.eval(), 1, repeats), 3),
        "ms_batch64": round(latency_ms(model.eval(), 64, repeats), 3),
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3, help="dense training epochs")
    p.add_argument("--retrain", type=int, default=1, help="retraining epochs after shrinking")
    p.add_argument("--keeps", type=float, nargs="+", default=[0.75, 0.5, 0.25])
    p.add_argument("--criteria", nargs="+", default=["bn", "l1"])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from deep_compression.data import DatasetConfig, load_data
    from deep_compression.data.split import ValidationConfig, carve_validation
    from deep_compression.models import make_model
    from deep_compression.shrink import ShrinkConfig, shrink_
    from deep_compression.train import TrainConfig, fit, seed_everything

    torch.set_num_threads(1)
    data = carve_validation(
        load_data(DatasetConfig.from_value("fashion-mnist")), ValidationConfig.from_value(5000)
    )
    seed_everything(args.seed)
    spec = f"{ROOT / 'examples' / 'models.py'}:resnet"
    model = make_model(spec, {"depth": args.depth, "in_channels": 1}, allow_code=True)
    train = TrainConfig(epochs=args.epochs, lr=0.1, weight_decay=5e-4, augment=1, seed=args.seed)
    t0 = time.perf_counter()
    fit(model, data.train, data.val, train, progress=False)
    rows = [row(f"dense resnet-{args.depth}", model, data, time.perf_counter() - t0, args.repeats)]
    print(rows[-1], flush=True)
    retrain = TrainConfig(epochs=args.retrain, lr=0.02, weight_decay=5e-4, augment=1)
    example = data.train[0][0][None]
    for criterion in args.criteria:
        for keep in args.keeps:
            net = copy.deepcopy(model)
            shrink_(net, ShrinkConfig(criterion=criterion, keep={"*": keep}), example)
            t0 = time.perf_counter()
            if args.retrain:
                fit(net, data.train, data.val, retrain, progress=False)
            name = f"{criterion}, keep {keep:g} of block channels"
            rows.append(row(name, net, data, time.perf_counter() - t0, args.repeats))
            print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "shrink_resnet.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dense = rows[0]
    lines = [
        "| variant | val error | test error | parameters | MACs/image | ms batch 1 | "
        "ms batch 64 | speed-up 1 / 64 |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {100 * r['val_error']:.2f}% | {100 * r['test_error']:.2f}% | "
            f"{r['params']:,} | {r['macs']:,} | {r['ms_batch1']:.2f} | {r['ms_batch64']:.1f} | "
            f"{dense['ms_batch1'] / r['ms_batch1']:.2f}x / "
            f"{dense['ms_batch64'] / r['ms_batch64']:.2f}x |"
        )
    cmd = "python benchmarks/shrink_resnet.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (RESULTS / "shrink_resnet.md").write_text(
        f"# Structured pruning of a ResNet-{args.depth} on Fashion-MNIST\n\n`{cmd}`\n\n"
        f"Dense: {args.epochs} epochs; each shrunk variant retrained {args.retrain} epoch(s). "
        "One torch thread.\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
