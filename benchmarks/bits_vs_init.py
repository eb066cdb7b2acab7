"""Test error vs. bits per weight: the four centroid initialisations, and each layer alone.

    DEEP_COMPRESSION_DATA=../shared/data .venv/bin/python benchmarks/bits_vs_init.py
    DEEP_COMPRESSION_DATA=../shared/data .venv/bin/python benchmarks/bits_vs_init.py \\
        --sweep layer --checkpoint runs/prune/lenet-5.safetensors

``--sweep init`` (default): every layer at the same bits (2..8), for ``linear``,
``density``, ``forgy`` and ``optimal`` initialisation; test error right after k-means and
after ``--finetune-epochs`` of centroid fine-tuning. Tests the paper's finding that linear
initialisation is best (Han et al. 2016, figure 10).

``--sweep layer``: one layer at a time at 1..8 bits, every other layer at 16 bits (which
keeps every distinct value of a LeNet layer: exact), fine-tuned: how few bits each layer
tolerates.

Writes ``benchmarks/results/<sweep>_<model>.csv`` and ``.png`` and prints a table. The
input is a pruned checkpoint (default ``runs/prune/lenet-300-100.safetensors``, from the
pruning stage). This is an experiment, not a test. ``--threads 1`` by default so the
numbers do not depend on how busy the other core is.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run_one(
    path: Path, bits: dict[str, int], init: str, lloyd: int, epochs: int, train, test, seed: int
):
    """Quantize a fresh copy of the checkpoint; test error after k-means and fine-tuning."""
    import dataclasses

    import torch

    from deep_compression.loading import load_model
    from deep_compression.quantize import QuantizeConfig, quantize_
    from deep_compression.train import evaluate, fit

    model, _ = load_model(path)  # fresh each time: no state leaks between runs
    config = QuantizeConfig(bits=bits, init=init, lloyd_iterations=lloyd, seed=seed)
    config = dataclasses.replace(
        config, finetune=dataclasses.replace(config.finetune, epochs=epochs, seed=seed)
    )
    t0 = time.perf_counter()
    report = quantize_(model, config)
    cluster_seconds = time.perf_counter() - t0
    clustered = 1 - evaluate(model, test)[1]
    # Relative weight error over all kept weights of the model (not a mean of layers):
    # ||w_q - w|| / ||w|| with w the weights before quantization.
    sq_err = sq_norm = 0.0
    for q in report.layers:
        layer = model.get_submodule(q.name)
        with torch.no_grad():
            mask = layer.parametrizations.weight[0].mask
            before = layer.parametrizations.weight.original[mask].double()
            sq_err += float((layer.weight[mask].double() - before).pow(2).sum())
            sq_norm += float(before.pow(2).sum())
    rel = (sq_err / sq_norm) ** 0.5 if sq_norm > 0 else 0.0
    tuned = clustered
    if epochs:
        tuned = fit(model, train, test, config.finetune, progress=False).test_error
    return clustered, tuned, rel, cluster_seconds, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=ROOT / "runs" / "prune" / "lenet-300-100.safetensors"
    )
    parser.add_argument("--sweep", choices=("init", "layer"), default="init")
    parser.add_argument("--bits", default=None, help="bits to try, e.g. 2-8 (default per sweep)")
    parser.add_argument("--inits", default="linear,density,forgy,optimal")
    parser.add_argument("--init", default="linear", help="initialisation of --sweep layer")
    parser.add_argument(
        "--lloyd-iterations",
        type=int,
        default=20_000,
        help="0 keeps the initial centroids (then only fine-tuning moves them)",
    )
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds (forgy draw and fine-tuning); each run is repeated per "
        "seed and the table and plot show the mean (plot: error bars from min to max)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default=None, help="file name suffix (default: the model)")
    parser.add_argument(
        "--from-csv",
        type=Path,
        default=None,
        help="redraw the PNG and reprint the table from a CSV this script wrote; no runs",
    )
    args = parser.parse_args()

    if args.from_csv is not None:
        with open(args.from_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        summarize(
            rows,
            "layer" if "layer" in rows[0] else "init",
            args.from_csv.with_suffix(""),
        )
        return 0

    import torch

    from deep_compression.checkpoint import load_checkpoint
    from deep_compression.data import load_dataset
    from deep_compression.loading import load_model
    from deep_compression.prune import prunable_layers
    from deep_compression.train import evaluate

    torch.set_num_threads(args.threads)
    if not args.checkpoint.is_file():
        print(f"{args.checkpoint}: no such checkpoint (prune one first, or pass --checkpoint)")
        return 1
    _, meta = load_checkpoint(args.checkpoint)
    model_name = meta.model.name
    train, test = load_dataset(meta.dataset or "mnist")
    base_model, _ = load_model(args.checkpoint)
    baseline = 1 - evaluate(base_model, test)[1]
    layers = list(prunable_layers(base_model))
    lo, hi = (2, 8) if args.sweep == "init" else (1, 8)
    if args.bits:
        lo, _, hi_text = args.bits.partition("-")
        lo, hi = int(lo), int(hi_text or lo)
    bit_range = range(lo, hi + 1)

    seeds = [int(t) for t in args.seeds.split(",")]
    if args.sweep == "init":
        jobs = [
            (init, b, {"*": b}, init, seed)
            for init in args.inits.split(",")
            for b in bit_range
            for seed in seeds
        ]
        label = "init"
    else:
        jobs = [
            (layer, b, {"*": 16, layer: b}, args.init, seed)
            for layer in layers
            for b in bit_range
            for seed in seeds
        ]
        label = "layer"
    print(
        f"{args.checkpoint}: {model_name}, test error {100 * baseline:.2f}% before "
        f"quantization; {len(jobs)} runs, {args.finetune_epochs} fine-tuning epochs each",
        flush=True,
    )
    rows = []
    t_start = time.perf_counter()
    for key, b, bits, init, seed in jobs:
        clustered, tuned, rel, kmeans_s, total_s = run_one(
            args.checkpoint,
            bits,
            init,
            args.lloyd_iterations,
            args.finetune_epochs,
            train,
            test,
            seed,
        )
        rows.append(
            {
                "model": model_name,
                "checkpoint": args.checkpoint.name,
                "test_error_before": round(baseline, 6),
                label: key,
                "bits": b,
                "init": init,
                "seed": seed,
                "lloyd_iterations": args.lloyd_iterations,
                "rel_weight_error": round(rel, 6),
                "test_error_kmeans": round(clustered, 6),
                "test_error_finetuned": round(tuned, 6),
                "finetune_epochs": args.finetune_epochs,
                "kmeans_seconds": round(kmeans_s, 3),
                "seconds": round(total_s, 1),
            }
        )
        print(
            f"{label} {key} {b} bits seed {seed}: rel. weight error {100 * rel:.2f}%, test error "
            f"{100 * clustered:.2f}% after k-means, {100 * tuned:.2f}% fine-tuned "
            f"({total_s:.0f}s)",
            flush=True,
        )
    wall = time.perf_counter() - t_start
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"bits_vs_{label}_{args.tag or model_name}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summarize(rows, label, stem)
    print(f"{len(rows)} runs in {wall:.0f}s")
    return 0


def summarize(rows: list[dict], label: str, stem: Path) -> None:
    """Write ``stem``.png from the runs and print the table (means over seeds)."""
    from deep_compression.report.quantize_plots import plot_error_vs_bits
    from deep_compression.table import format_table

    model_name, checkpoint = rows[0]["model"], rows[0]["checkpoint"]
    baseline = float(rows[0]["test_error_before"])
    epochs = int(rows[0]["finetune_epochs"])
    bit_range = sorted({int(r["bits"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    keys = list(dict.fromkeys(r[label] for r in rows))
    kmeans_panel = "after k-means only"
    tuned_panel = f"after centroid fine-tuning ({epochs} epochs)"
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {kmeans_panel: {k: [] for k in keys}}
    if epochs:
        panels[tuned_panel] = {k: [] for k in keys}
    for r in rows:
        panels[kmeans_panel][r[label]].append((int(r["bits"]), float(r["test_error_kmeans"])))
        if epochs:
            panels[tuned_panel][r[label]].append((int(r["bits"]), float(r["test_error_finetuned"])))
    what = "all layers at the same bits" if label == "init" else "one layer, others at 16 bits"
    over = f", mean of {len(seeds)} seeds (bars: min to max)" if len(seeds) > 1 else ""
    plot_error_vs_bits(
        panels,
        stem.with_suffix(".png"),
        baseline=baseline,
        title=f"{model_name} ({checkpoint}): test error vs. bits, {what}{over}",
        legend_title=label,
    )

    # One table: a row per key, a column per bits value, "k-means / fine-tuned" errors
    # (means over the seeds).
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    table = []
    for k in keys:
        cells = []
        for b in bit_range:
            runs = [r for r in rows if r[label] == k and int(r["bits"]) == b]
            km = mean([float(r["test_error_kmeans"]) for r in runs])
            ft = mean([float(r["test_error_finetuned"]) for r in runs])
            cells.append(f"{100 * km:.2f} / {100 * ft:.2f}")
        table.append([k, *cells])
    print(
        f"\ntest error (%) after k-means / after {epochs} fine-tuning epochs; {what}"
        f"{over}; before quantization {100 * baseline:.2f}%"
    )
    print(format_table([label] + [f"{b} bits" for b in bit_range], table))
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(main())
