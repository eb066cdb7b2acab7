"""The structured-pruning criteria side by side on the LeNets: error right after removing
channels (no retraining) and after one epoch of retraining.

    DEEP_COMPRESSION_DATA=../shared/data .venv/bin/python benchmarks/shrink_criteria.py \\
        --lenet5 DENSE_LENET5.safetensors --lenet300 DENSE_LENET300.safetensors

For each network, every prunable group keeps the same fraction (``--keeps``) of its
channels, chosen by ``l1``, ``l2``, ``reduce`` (on 256 training images) and ``lasso``
(after ``--lasso-epochs`` of training with the group-lasso penalty ``--lasso``, from the
same dense weights). Retraining is one epoch (SGD, lr 0.01, one-pixel shifts) on the
training set without its 5,000-image validation split. Errors are on the 10,000 test
images: this table informs, it decides nothing (the dense checkpoints may have seen the
validation images). Writes ``benchmarks/results/shrink_criteria.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))


def run(name: str, path: Path, args: argparse.Namespace, data) -> list[dict]:  # type: ignore[no-untyped-def]
    from deep_compression.loading import load_model
    from deep_compression.shrink import (
        ShrinkConfig,
        group_lasso,
        prunable_groups,
        shrink_,
        trace_groups,
    )
    from deep_compression.shrink.phase import calibration_inputs
    from deep_compression.train import TrainConfig, evaluate, fit

    dense, _ = load_model(path)
    example = calibration_inputs(data.train, 2)
    inputs = calibration_inputs(data.train, 256)
    lassoed = copy.deepcopy(dense)
    t0 = time.perf_counter()
    with group_lasso(lassoed, prunable_groups(trace_groups(lassoed, example)), args.lasso):
        penalty = TrainConfig(epochs=args.lasso_epochs, lr=0.01, weight_decay=0.0)
        fit(lassoed, data.train, None, penalty, progress=False)
    lasso_seconds = time.perf_counter() - t0
    rows = []
    dense_error = 1 - evaluate(dense, data.test)[1]
    lassoed_error = 1 - evaluate(lassoed, data.test)[1]
    for keep in args.keeps:
        for criterion in ("l1", "l2", "reduce", "lasso"):
            net = copy.deepcopy(lassoed if criterion == "lasso" else dense)
            config = ShrinkConfig(criterion=criterion, keep={"*": keep})
            report = shrink_(net, config, example, inputs)
            shrunk = 1 - evaluate(net, data.test)[1]
            retrain = TrainConfig(epochs=1, lr=0.01, weight_decay=1e-4, augment=1)
            fit(net, data.train, None, retrain, progress=False)
            rows.append(
                {
                    "model": name,
                    "keep": keep,
                    "criterion": criterion,
                    "params": report.params[1],
                    "dense_error": round(dense_error, 4),
                    "before_error": round(
                        lassoed_error if criterion == "lasso" else dense_error, 4
                    ),
                    "shrunk_error": round(shrunk, 4),
                    "retrained_error": round(1 - evaluate(net, data.test)[1], 4),
                    "lasso_seconds": round(lasso_seconds, 1) if criterion == "lasso" else 0.0,
                }
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lenet5", type=Path, required=True)
    p.add_argument("--lenet300", type=Path, required=True)
    p.add_argument("--keeps", type=float, nargs="+", default=[0.5, 0.2])
    p.add_argument("--lasso", type=float, default=0.02)
    p.add_argument("--lasso-epochs", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from deep_compression.data import DatasetConfig, ValidationConfig, carve_validation, load_data

    torch.set_num_threads(1)
    data = carve_validation(load_data(DatasetConfig.from_value("mnist")), ValidationConfig(5000))
    rows = run("lenet-300-100", args.lenet300, args, data) + run("lenet-5", args.lenet5, args, data)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "shrink_criteria.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "| model | keep | criterion | parameters | test error before | shrunk | after 1 epoch |",
        "|:--|--:|:--|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['keep']:g} | {r['criterion']} | {r['params']:,} | "
            f"{100 * r['before_error']:.2f}% | {100 * r['shrunk_error']:.2f}% | "
            f"{100 * r['retrained_error']:.2f}% |"
        )
    cmd = "python benchmarks/shrink_criteria.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (RESULTS / "shrink_criteria.md").write_text(
        "# Structured-pruning criteria on the LeNets\n\n"
        f"`{cmd}`\n\nOne torch thread. 'before' is the dense network (for lasso: after "
        f"{args.lasso_epochs} epoch(s) with the group-lasso penalty {args.lasso}).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
