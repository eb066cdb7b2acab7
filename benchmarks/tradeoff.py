"""Accuracy vs. compression rate: pruning only, quantization only, and both (paper Figure 6).

    DEEP_COMPRESSION_DATA=../shared/data .venv/bin/python benchmarks/tradeoff.py
    DEEP_COMPRESSION_DATA=../shared/data .venv/bin/python benchmarks/tradeoff.py --quick
    .venv/bin/python benchmarks/tradeoff.py --from-csv benchmarks/results/tradeoff_lenet-300-100.csv

Starting from one dense checkpoint (default ``runs/lenet-300-100/dense.safetensors``):

1. **pruning only**: for each overall kept fraction (``--kept``, % of the weights), a
   fresh copy of the dense model goes through ``--rounds`` rounds of magnitude pruning,
   each followed by retraining (``deep_compression.prune.run_schedule``). The per-layer
   fractions have the shape of the final round of ``--shape-recipe``: layer ``l`` keeps
   ``t ** e_l`` of its weights, with ``e_l = ln(keep_l) / ln(keep_total)`` taken from the
   recipe and ``t`` solved so that the whole model keeps the target fraction (at the
   recipe's own total this gives exactly the recipe's per-layer fractions; fc3 always
   keeps more than fc1). Round ``r`` of ``R`` keeps ``final_l ** (r / R)``: the same share
   of the survivors goes in every round.
2. **quantization only**: the dense model, every layer quantized at ``--q-bits`` bits
   (linear initialisation, Lloyd), then ``--finetune-epochs`` of centroid fine-tuning.
3. **pruning + quantization**: each pruned model of family 1, quantized at ``--pq-bits``
   bits and fine-tuned the same way.

Every point is a real ``.dcz`` file in ``--out-dir``: the rate is the float32 bytes of
all the dense model's parameters divided by the file's bytes, with the Huffman coder (the
paper's P+Q+H) and with fixed-width codes (P+Q: no entropy coding). Pruned-only models are
stored as sparse float32 records, quantized-only ones as quantized records with full
masks. The Huffman file of every point is decoded (``load_dcz``) and evaluated again; the
CSV holds both test errors. With ``--float16`` each quantized point gets a second row with
codebooks and biases rounded to float16 (``round_float16_``), re-evaluated.

Writes ``benchmarks/results/tradeoff_<model>.csv``, ``.png`` and ``.md`` (``--quick``: a
tiny smoke run writing to ``<out-dir>/results-quick`` instead). Same command, same CSV
(apart from the ``seconds`` column) for a fixed thread count. ``--threads 1`` by default
so the numbers do not depend on how busy the other core is. This is an experiment, not a
test.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

FAMILIES = ("pruning", "quantization", "pruning+quantization")
# The paper's Table 1 point for LeNet-300-100: 40x, test error 1.64% -> 1.58%.
PAPER_POINT = {"rate": 40.0, "error_before": 0.0164, "error_after": 0.0158}


# --------------------------------------------------------------------------- plan


def parse_numbers(text: str, kind: type = float) -> list[Any]:
    """``"50,25,12"`` -> ``[50, 25, 12]``; ``"2-6"`` -> ``[2, 3, 4, 5, 6]`` (ints only)."""
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if kind is int and "-" in part:
            lo, hi = (int(p) for p in part.split("-", 1))
            out.extend(range(lo, hi + 1))
        else:
            out.append(kind(part))
    return out


def shape_exponents(recipe: Path, sizes: Mapping[str, int]) -> dict[str, float]:
    """Per-layer exponents ``e_l = ln(keep_l) / ln(keep_total)`` of the recipe's last round.

    Args:
        recipe: a TOML recipe whose last ``[[prune.rounds]]`` gives every layer a
            ``fraction`` criterion.
        sizes: weights per prunable layer ``{name: numel}``.
    """
    from deep_compression.errors import ConfigError
    from deep_compression.layer_config import resolve
    from deep_compression.prune import KeepFraction, load_schedule

    last = load_schedule(recipe).rounds[-1].criteria
    keep = {}
    for name in sizes:
        try:
            crit = resolve(last, name, "pruning criterion")
        except ConfigError as e:
            raise ConfigError(f"{recipe}: last prune round: {e}") from None
        if not isinstance(crit, KeepFraction):
            raise ConfigError(
                f"{recipe}: the last prune round must give {name} a fraction criterion to "
                f"shape the per-layer fractions, got {crit!r}"
            )
        keep[name] = crit.keep
    total = sum(keep[n] * sizes[n] for n in sizes) / sum(sizes.values())
    if not 0 < total < 1:
        raise ConfigError(f"{recipe}: the last prune round keeps everything; nothing to shape")
    return {n: math.log(keep[n]) / math.log(total) for n in sizes}


def layer_fractions(
    target: float, exponents: Mapping[str, float], sizes: Mapping[str, int]
) -> dict[str, float]:
    """Per-layer kept fractions ``t ** e_l`` whose weighted mean is ``target`` (in (0, 1])."""
    n = sum(sizes.values())

    def total(t: float) -> float:
        return sum(sizes[k] * t ** exponents[k] for k in sizes) / n

    # total(t) rises monotonically from 0 to 1 on (0, 1]: bisection.
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) < target else (lo, mid)
    t = (lo + hi) / 2
    return {k: min(1.0, t ** exponents[k]) for k in sizes}


def prune_schedule(
    final: Mapping[str, float],
    rounds: int,
    round_epochs: int,
    final_epochs: int,
    retrain: Any,
) -> Any:
    """A :class:`PruneSchedule` reaching ``final`` per-layer fractions in ``rounds`` rounds."""
    from deep_compression.prune import KeepFraction, PruneRound, PruneSchedule

    out = []
    for r in range(1, rounds + 1):
        criteria = {name: KeepFraction(keep ** (r / rounds)) for name, keep in final.items()}
        epochs = final_epochs if r == rounds else round_epochs
        out.append(PruneRound(criteria, {"epochs": epochs}))
    return PruneSchedule(rounds=tuple(out), retrain=retrain)


# --------------------------------------------------------------------------- measuring


class Bench:
    """Shared state of a run: data, dense baseline, output directory, file metadata."""

    def __init__(self, args: argparse.Namespace) -> None:
        from deep_compression.data import load_dataset
        from deep_compression.loading import load_model
        from deep_compression.train import evaluate

        self.args = args
        self.dense_path: Path = args.checkpoint
        model, meta = load_model(self.dense_path)
        self.meta = meta
        self.model_name = meta.model.name
        self.train, self.test = load_dataset(meta.dataset or "mnist", args.data_dir)
        if args.quick:  # a smoke run: a slice of the training set, the whole test set
            self.train = type(self.train)(self.train.x[:6000], self.train.y[:6000])
        self.dense_error = 1 - evaluate(model, self.test)[1]
        self.original_bytes = 4 * sum(t.numel() for t in model.state_dict().values())
        self.out: Path = args.out_dir
        self.out.mkdir(parents=True, exist_ok=True)

    def file_meta(self, stage: str, accuracy: float) -> dict[str, Any]:
        return {
            "model": self.meta.model.to_dict(),
            "dataset": self.meta.dataset or "mnist",
            "preprocessing": dict(self.meta.preprocessing or {}),
            "seed": self.args.seed,
            "stage": "pruned" if stage == "pruned" else "quantized",
            "test_error": 1 - accuracy,
            "details": {"source": "benchmarks/tradeoff.py", "family": stage},
        }

    def measure(self, model: Any, stem: str, stage: str, accuracy: float) -> dict[str, Any]:
        """Write ``stem``.dcz (Huffman) and ``stem``-fixed.dcz; decode the first, evaluate.

        Returns the CSV columns of the files: bytes and rates under both coders and the
        test error of the model decoded from the Huffman file.
        """
        from deep_compression.encode import EncodeConfig, encode_model
        from deep_compression.loading import load_dcz
        from deep_compression.train import evaluate

        meta = self.file_meta(stage, accuracy)
        gaps = self.args.gap_bits
        huff = encode_model(
            model, self.out / f"{stem}.dcz", EncodeConfig("huffman", gaps or {}), metadata=meta
        )
        fixed = encode_model(
            model, self.out / f"{stem}-fixed.dcz", EncodeConfig("fixed", gaps or {}), metadata=meta
        )
        decoded, _ = load_dcz(huff.path)
        decoded_error = 1 - evaluate(decoded, self.test)[1]
        assert huff.original_bytes == self.original_bytes, (huff.original_bytes, stem)
        return {
            "file_bytes": huff.file_bytes,
            "rate": round(huff.rate, 3),
            "size_pct": round(100 / huff.rate, 4),
            "file_bytes_fixed": fixed.file_bytes,
            "rate_fixed": round(fixed.rate, 3),
            "test_error_decoded": round(decoded_error, 6),
        }


def row(
    bench: Bench,
    family: str,
    *,
    target: float | str,
    bits: int | str,
    float16: bool,
    epochs: int,
    model: Any,
    accuracy: float,
    files: Mapping[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """One CSV row (the columns are the same for every family)."""
    from deep_compression.prune import sparsity_report

    report = sparsity_report(model)
    error = 1 - accuracy
    out: dict[str, Any] = {
        "family": family,
        "target_kept_pct": target,
        "kept_pct": round(100 * report.kept_fraction, 4),
    }
    out.update({f"kept_pct_{r.name}": round(100 * r.kept_fraction, 4) for r in report.layers})
    out.update(
        {
            "bits": bits,
            "float16": int(float16),
            "train_epochs": epochs,
            **files,
            "test_error": round(error, 6),
            "accuracy_loss_pts": round(100 * (error - bench.dense_error), 4),
            "seconds": round(seconds, 1),
        }
    )
    return out


def quantize_and_measure(
    bench: Bench,
    source: Path,
    family: str,
    bits: int,
    target: float | str,
    prior_epochs: int,
    stem: str,
) -> list[dict[str, Any]]:
    """Quantize a fresh copy of ``source`` at ``bits``, fine-tune, measure (+ float16 row)."""
    import dataclasses

    from deep_compression.loading import load_model
    from deep_compression.quantize import (
        FINETUNE_DEFAULTS,
        QuantizeConfig,
        quantize_,
        round_float16_,
    )
    from deep_compression.train import evaluate, fit

    args = bench.args
    t0 = time.perf_counter()
    model, _ = load_model(source)  # fresh each time: no state leaks between points
    finetune = dataclasses.replace(
        FINETUNE_DEFAULTS, epochs=args.finetune_epochs, seed=args.seed, augment=args.augment
    )
    config = QuantizeConfig(bits={"*": bits}, init="linear", seed=args.seed, finetune=finetune)
    quantize_(model, config, progress=False)
    if finetune.epochs:
        fit(model, bench.train, bench.test, finetune, progress=args.verbose, desc=stem)
    accuracy = evaluate(model, bench.test)[1]
    files = bench.measure(model, stem, family, accuracy)
    epochs = prior_epochs + finetune.epochs
    common = {"target": target, "bits": bits, "epochs": epochs, "model": model}
    rows = [
        row(
            bench,
            family,
            float16=False,
            accuracy=accuracy,
            files=files,
            seconds=time.perf_counter() - t0,
            **common,
        )
    ]
    if args.float16:
        t1 = time.perf_counter()
        round_float16_(model)
        accuracy16 = evaluate(model, bench.test)[1]
        files16 = bench.measure(model, f"{stem}-f16", family, accuracy16)
        rows.append(
            row(
                bench,
                family,
                float16=True,
                accuracy=accuracy16,
                files=files16,
                seconds=time.perf_counter() - t1,
                **common,
            )
        )
    return rows


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every point of the three families; returns the CSV rows and the run's facts."""
    import torch
    from tqdm.auto import tqdm

    from deep_compression import __version__
    from deep_compression.checkpoint import save_checkpoint
    from deep_compression.loading import load_model
    from deep_compression.prune import prunable_layers, run_schedule, sparsity_report
    from deep_compression.train import TrainConfig, evaluate, seed_everything

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    bench = Bench(args)
    dense_model, _ = load_model(bench.dense_path)
    sizes = {n: m.weight.numel() for n, m in prunable_layers(dense_model).items()}
    exponents = shape_exponents(args.shape_recipe, sizes)
    retrain = TrainConfig(
        epochs=args.round_epochs,
        lr=args.retrain_lr,
        weight_decay=args.retrain_weight_decay,
        augment=args.augment,
        seed=args.seed,
    )
    n_jobs = len(args.kept) * (1 + len(args.pq_bits)) + len(args.q_bits)
    tqdm.write(
        f"{bench.dense_path}: {bench.model_name}, test error {100 * bench.dense_error:.2f}%, "
        f"{bench.original_bytes:,} float32 bytes; {n_jobs} points, {args.threads} thread(s)"
    )
    rows: list[dict[str, Any]] = [
        {
            "family": "dense",
            "target_kept_pct": 100,
            "kept_pct": 100.0,
            **{f"kept_pct_{n}": 100.0 for n in sizes},
            "bits": 32,
            "float16": 0,
            "train_epochs": 0,
            "file_bytes": bench.original_bytes,  # the float32 parameters, not a .dcz file
            "rate": 1.0,
            "size_pct": 100.0,
            "file_bytes_fixed": bench.original_bytes,
            "rate_fixed": 1.0,
            "test_error_decoded": round(bench.dense_error, 6),
            "test_error": round(bench.dense_error, 6),
            "accuracy_loss_pts": 0.0,
            "seconds": 0.0,
        }
    ]
    bar = tqdm(total=n_jobs, desc="tradeoff", unit="point")

    def report(r: dict[str, Any]) -> None:
        bar.update(1)
        what = {
            "pruning": f"kept {r['kept_pct']:.2f}%",
            "quantization": f"{r['bits']} bits",
            "pruning+quantization": f"kept {r['kept_pct']:.2f}%, {r['bits']} bits",
        }[r["family"]]
        f16 = " float16" if r["float16"] else ""
        tqdm.write(
            f"{r['family']:>20} {what}{f16}: {r['file_bytes']:,} B {r['rate']:.1f}x "
            f"(fixed {r['rate_fixed']:.1f}x), test error {100 * r['test_error']:.2f}% "
            f"(decoded {100 * r['test_error_decoded']:.2f}%) [{r['seconds']:.0f}s]"
        )

    # ---- 1. pruning only; keeps every pruned checkpoint for family 3
    pruned: list[tuple[float, Path, int]] = []
    for target in args.kept:
        t0 = time.perf_counter()
        final = layer_fractions(target / 100, exponents, sizes)
        schedule = prune_schedule(final, args.rounds, args.round_epochs, args.final_epochs, retrain)
        model, _ = load_model(bench.dense_path)
        run_schedule(model, schedule, bench.train, None, progress=args.verbose)
        accuracy = evaluate(model, bench.test)[1]
        stem = f"p-kept{target:g}"
        path = bench.out / f"{stem}.safetensors"
        save_checkpoint(
            path,
            model,
            {
                **bench.file_meta("pruned", accuracy),
                "details": {
                    "prune": schedule.to_dict(),
                    "kept_fraction": sparsity_report(model).kept_fraction,
                },
            },
        )
        pruned.append((target, path, schedule.total_epochs))
        files = bench.measure(model, stem, "pruned", accuracy)
        r = row(
            bench,
            "pruning",
            target=target,
            bits="",
            float16=False,
            epochs=schedule.total_epochs,
            model=model,
            accuracy=accuracy,
            files=files,
            seconds=time.perf_counter() - t0,
        )
        rows.append(r)
        report(r)

    # ---- 2. quantization only (no pruning: full masks)
    for bits in args.q_bits:
        for r in quantize_and_measure(
            bench, bench.dense_path, "quantization", bits, 100, 0, f"q-{bits}b"
        ):
            rows.append(r)
            if r["float16"]:
                tqdm.write(_line(r))
            else:
                report(r)

    # ---- 3. pruning + quantization
    for target, path, epochs in pruned:
        for bits in args.pq_bits:
            for r in quantize_and_measure(
                bench,
                path,
                "pruning+quantization",
                bits,
                target,
                epochs,
                f"pq-kept{target:g}-{bits}b",
            ):
                rows.append(r)
                if r["float16"]:
                    tqdm.write(_line(r))
                else:
                    report(r)
    bar.close()

    facts = {
        "command": shlex.join([_python(), *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tool_version": __version__,
        "threads": args.threads,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "checkpoint": str(_rel(bench.dense_path)),
        "model": bench.model_name,
        "dense_error": bench.dense_error,
        "original_bytes": bench.original_bytes,
        "shape_recipe": str(_rel(args.shape_recipe)),
        "exponents": {k: round(v, 4) for k, v in exponents.items()},
        "schedule": {
            "rounds": args.rounds,
            "round_epochs": args.round_epochs,
            "final_epochs": args.final_epochs,
            "retrain": retrain.to_dict(),
            "finetune_epochs": args.finetune_epochs,
        },
        "gap_bits": args.gap_bits if args.gap_bits is not None else "paper default (5 for fc)",
        "quick": args.quick,
    }
    return rows, facts


def _line(r: Mapping[str, Any]) -> str:
    return (
        f"{'':>20} float16 codebooks/biases: {r['file_bytes']:,} B {r['rate']:.1f}x "
        f"(fixed {r['rate_fixed']:.1f}x), test error {100 * r['test_error']:.2f}%"
    )


def _python() -> str:
    """The interpreter as the user would type it (``.venv/bin/python`` in the project)."""
    exe = Path(sys.executable)  # not resolved: the venv's link, not its target
    try:
        return str(exe.relative_to(ROOT))
    except ValueError:
        return exe.name


def _rel(path: Path) -> Path:
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


# --------------------------------------------------------------------------- outputs


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (rate, error) points not beaten by another with a higher rate and lower error.

    >>> pareto([(10, 0.02), (20, 0.03), (15, 0.04), (30, 0.03)])
    [(10, 0.02), (30, 0.03)]
    """
    best: list[tuple[float, float]] = []
    for rate, err in sorted(points, key=lambda p: (-p[0], p[1])):
        if not best or err < best[-1][1]:
            best.append((rate, err))
    return best[::-1]


def plot(
    rows: Sequence[Mapping[str, Any]],
    path: Path,
    facts: Mapping[str, Any],
    recipe_points: Sequence[tuple[float, float, str]],
) -> None:
    """Accuracy change vs. compression rate, one line per family (the paper's Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    dense = float(facts["dense_error"])
    colors = {"pruning": "tab:blue", "quantization": "tab:orange"}
    colors["pruning+quantization"] = "tab:green"
    labels = {
        "pruning": "pruning only",
        "quantization": "quantization only",
        "pruning+quantization": "pruning + quantization",
    }

    def change(err: float) -> float:  # the paper's y axis: accuracy change, loss below 0
        return 100 * (dense - err)

    fig, ax = plt.subplots(figsize=(9.5, 6.5))
    max_rate = max(float(r["rate"]) for r in rows)
    # The y axis spans the ordinary points; a collapse (1-bit quantization of the dense
    # model loses tens of points) is drawn at the bottom edge with its value written.
    changes = [change(float(r["test_error"])) for r in rows]
    ordinary = [c for c in changes if c > -3.0]
    floor = math.floor(2 * (min(ordinary, default=-1.0) - 0.2)) / 2
    clipped: list[tuple[float, float, str]] = []
    for family in FAMILIES:
        for coder, style, rate_key in (
            ("Huffman", "-", "rate"),
            ("fixed", "--", "rate_fixed"),
        ):
            sel = [r for r in rows if r["family"] == family and not int(r["float16"])]
            if not sel:
                continue
            pts = [(float(r[rate_key]), float(r["test_error"])) for r in sel]
            if family == "pruning+quantization":
                # Every (kept, bits) pair as a faint marker; the line joins the best ones.
                if coder == "Huffman":
                    ax.scatter(
                        [p[0] for p in pts],
                        [max(floor, change(p[1])) for p in pts],
                        s=12,
                        color=colors[family],
                        alpha=0.35,
                        zorder=2,
                        label="pruning + quantization, every (kept, bits) pair, Huffman",
                    )
                pts = pareto(pts)
            else:
                pts.sort()
            ys = [change(e) for _, e in pts]
            clipped += [
                (x, y, family) for (x, _), y in zip(pts, ys) if y < floor and coder != "fixed"
            ]
            ax.plot(
                [p[0] for p in pts],
                [max(floor, y) for y in ys],
                style,
                marker="o" if coder == "Huffman" else None,
                ms=4,
                color=colors[family],
                alpha=1.0 if coder == "Huffman" else 0.6,
                label=f"{labels[family]}, {coder} coder"
                + (" (best points)" if family == "pruning+quantization" else ""),
                zorder=3,
            )
    f16 = [r for r in rows if r["family"] == "pruning+quantization" and int(r["float16"])]
    if f16:
        pts = pareto([(float(r["rate"]), float(r["test_error"])) for r in f16])
        ax.plot(
            [p[0] for p in pts],
            [max(floor, change(e)) for _, e in pts],
            ":",
            marker="s",
            ms=3,
            color="tab:red",
            label="pruning + quantization, float16 codebooks and biases, Huffman (best points)",
            zorder=3,
        )
    for x, y, family in clipped:
        ax.annotate(
            f"{y:.1f} pts",
            (x, floor),
            textcoords="offset points",
            xytext=(-6, 8),
            ha="right",
            fontsize=7,
            color=colors[family],
        )
    paper = PAPER_POINT
    ax.scatter(
        [paper["rate"]],
        [100 * (paper["error_before"] - paper["error_after"])],
        marker="*",
        s=160,
        color="black",
        zorder=5,
        label=f"paper (Table 1): {paper['rate']:.0f}x, "
        f"{100 * paper['error_before']:.2f}% -> {100 * paper['error_after']:.2f}%",
    )
    for (rate, err, label), marker in zip(recipe_points, "PXhv^"):
        ax.scatter(
            [rate], [change(err)], marker=marker, s=90, color="purple", zorder=5, label=label
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(floor - 0.1, max(0.3, max(changes) + 0.15))
    ax.set_xlabel("compression rate (float32 bytes of all parameters / .dcz file bytes)")
    ax.set_ylabel(f"accuracy change vs. dense {100 * dense:.2f}% error (points)")
    ax.scatter([1.0], [0.0], marker="D", s=40, color="black", zorder=5, label="dense float32")

    def inverse(v: Any) -> Any:  # rate <-> size %, safe at the axis' own limits
        return 100 / np.maximum(v, 1e-9)

    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= 1.2 * max_rate]
    ax.set_xticks(ticks, [f"{t}x" for t in ticks])
    ax.set_xlim(0.8, 1.3 * max_rate)
    top = ax.secondary_xaxis("top", functions=(inverse, inverse))
    sizes = [s for s in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2) if s >= 100 / (1.3 * max_rate)]
    top.set_xticks(sizes, [f"{s:g}%" for s in sizes])
    top.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    top.set_xlabel("model size after compression (% of dense float32)")
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        f"{facts['model']} on MNIST: accuracy vs. compression rate, every point a real .dcz "
        "file\n(numbers at the bottom edge: the loss of points below the axis)",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def best_within(rows: Sequence[Mapping[str, Any]], family: str, loss: float, key: str) -> str:
    """The highest rate of ``family`` whose accuracy loss is at most ``loss`` points."""
    ok = [r for r in rows if r["family"] == family and float(r["accuracy_loss_pts"]) <= loss + 1e-9]
    if not ok:
        return "-"
    r = max(ok, key=lambda r: float(r[key]))
    what = f"{float(r['kept_pct']):.2f}% kept" if family != "quantization" else ""
    if family != "pruning":
        what += (", " if what else "") + f"{r['bits']} b"
    if int(r["float16"]):
        what += ", f16"
    return f"{float(r[key]):.1f}x ({what}; {100 * float(r['test_error']):.2f}%)"


def markdown(
    rows: Sequence[Mapping[str, Any]], facts: Mapping[str, Any], png: Path, csv_path: Path
) -> str:
    from deep_compression.table import format_table

    dense = float(facts["dense_error"])
    s = facts["schedule"]
    table = []
    for r in rows:
        if r["family"] == "dense":
            continue
        table.append(
            [
                r["family"],
                f"{float(r['kept_pct']):.2f}%",
                str(r["bits"]) if r["bits"] != "" else "32",
                "yes" if int(r["float16"]) else "",
                int(r["train_epochs"]),
                f"{int(r['file_bytes']):,}",
                f"{float(r['rate']):.1f}x",
                f"{int(r['file_bytes_fixed']):,}",
                f"{float(r['rate_fixed']):.1f}x",
                f"{100 * float(r['test_error']):.2f}%",
                f"{float(r['accuracy_loss_pts']):+.2f}",
                f"{float(r['seconds']):.0f}",
            ]
        )
    summary = []
    for family in FAMILIES:
        summary.append(
            [family] + [best_within(rows, family, loss, "rate") for loss in (0.0, 0.1, 0.5)]
        )
    mismatches = sum(
        1
        for r in rows
        if r["family"] != "dense" and float(r["test_error_decoded"]) != float(r["test_error"])
    )
    return "\n".join(
        [
            f"# Accuracy vs. compression rate, {facts['model']} (paper Figure 6)",
            "",
            f"- Command: `{facts['command']}`",
            f"- Date: {facts['date']}; {facts['cpus']} CPUs, {facts['threads']} torch thread(s), "
            f"torch {facts['torch']}, Python {facts['python']}, deep-compression "
            f"{facts['tool_version']}",
            f"- Machine load (1/5/15-min load average): {facts['load_before']} at the start, "
            f"{facts['load_after']} at the end (this run adds about 1; the rest is other jobs "
            f"sharing the {facts['cpus']} CPUs)",
            f"- Total wall time: {facts['total_seconds']:.0f} s",
            f"- Dense start: `{facts['checkpoint']}`, test error {100 * dense:.2f}%, "
            f"{facts['original_bytes']:,} bytes of float32 parameters (rate 1x)",
            f"- Pruning: per-layer fractions shaped like the last round of "
            f"`{facts['shape_recipe']}` (layer keeps t^e, e = {facts['exponents']}), "
            f"{s['rounds']} prune/retrain rounds ({s['round_epochs']} epochs each, "
            f"{s['final_epochs']} after the last), SGD lr {s['retrain']['lr']}, weight decay "
            f"{s['retrain']['weight_decay']}, augment {s['retrain']['augment']}",
            f"- Quantization: every layer at the same bits, linear initialisation, "
            f"{s['finetune_epochs']} epochs of centroid fine-tuning (Adam 1e-3)",
            "- Rate = dense float32 bytes / bytes of the real `.dcz` file; `Huffman` is the "
            "paper's P+Q+H, `fixed` the same file with fixed-width codes (P+Q); gap bits: "
            f"{facts.get('gap_bits', 'paper default (5 for fc)')}",
            f"- The Huffman file of every point was decoded and evaluated again: "
            f"{'all test errors identical' if mismatches == 0 else f'{mismatches} MISMATCHES'}",
            f"- Data: `{_rel(csv_path)}`; plot: `{_rel(png)}`",
            "",
            "## Highest rate (Huffman) with an accuracy loss of at most ... points",
            "",
            format_table(["family", "<= 0", "<= 0.1", "<= 0.5"], summary),
            "",
            "## Every point",
            "",
            "`epochs`: all training from the dense model (pruning retraining + fine-tuning); "
            "`s`: wall seconds of the point (pruning+quantization excludes the pruning it "
            "starts from).",
            "",
            format_table(
                [
                    "family",
                    "kept",
                    "bits",
                    "f16",
                    "epochs",
                    "bytes",
                    "rate",
                    "bytes fixed",
                    "rate fixed",
                    "test error",
                    "loss pts",
                    "s",
                ],
                table,
            ),
            "",
        ]
    )


def recipe_points(paths: Sequence[Path]) -> list[tuple[float, float, str]]:
    """(rate, error, label) of each pipeline run's final file whose report exists."""
    out = []
    for path in paths:
        if not path.is_file():
            print(f"{path}: no pipeline report, not marked on the plot")
            continue
        report = json.loads(path.read_text())
        final = [s for s in report["stages"] if s["stage"] == "P+Q+H"][0]
        out.append(
            (
                float(final["rate"]),
                float(final["test_error"]),
                f"pipeline run {_rel(path.parent)}: {final['rate']:.1f}x, "
                f"{100 * final['test_error']:.2f}%",
            )
        )
    return out


def write_outputs(
    rows: list[dict[str, Any]], facts: dict[str, Any], stem: Path, recipes: Sequence[Path]
) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = stem.with_suffix(".csv")
    fields = list(rows[0])
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    png = stem.with_suffix(".png")
    plot(rows, png, facts, recipe_points(recipes))
    text = markdown(rows, facts, png, csv_path)
    stem.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {csv_path}, {png} and {stem.with_suffix('.md')}")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=ROOT / "runs" / "lenet-300-100" / "dense.safetensors"
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--kept", default="50,25,12,8,5,3,2", help="overall kept %% of the weights")
    parser.add_argument("--q-bits", default="1-8", help="bits of the quantization-only points")
    parser.add_argument("--pq-bits", default="2-6", help="bits of each pruned model")
    parser.add_argument(
        "--shape-recipe", type=Path, default=ROOT / "recipes" / "lenet-300-100.toml"
    )
    parser.add_argument("--rounds", type=int, default=4, help="prune/retrain rounds per point")
    parser.add_argument("--round-epochs", type=int, default=3)
    parser.add_argument("--final-epochs", type=int, default=6, help="retraining after the last")
    parser.add_argument("--retrain-lr", type=float, default=0.01)
    parser.add_argument("--retrain-weight-decay", type=float, default=1e-4)
    parser.add_argument(
        "--augment",
        type=int,
        default=0,
        help="pixel shifts while retraining and fine-tuning (0: none, so the accuracy change "
        "measures compression alone)",
    )
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument(
        "--float16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure every quantized point with float16 codebooks and biases",
    )
    parser.add_argument(
        "--gap-bits",
        type=lambda v: v if v == "auto" else int(v),
        default=None,
        help="gap field width of every pruned layer: an integer or 'auto' (default: the "
        "paper's 5 bits for fully connected layers)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "tradeoff")
    parser.add_argument(
        "--recipe-report",
        type=Path,
        action="append",
        default=None,
        help="a pipeline run's report.json to mark on the plot (repeatable; skipped if "
        "missing; default: the runs of recipes/lenet-300-100.toml and -paper.toml)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="where the CSV, PNG and MD go"
    )
    parser.add_argument("--tag", default=None, help="file name suffix (default: the model)")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (about 1 min)")
    parser.add_argument("--verbose", action="store_true", help="a progress bar per epoch")
    parser.add_argument(
        "--from-csv",
        type=Path,
        default=None,
        help="redraw the PNG and rewrite the Markdown from a CSV this script wrote (its "
        "run facts are read from <out-dir>/<csv stem>.json); no training",
    )
    args = parser.parse_args()

    from deep_compression.errors import DeepCompressionError

    if args.recipe_report is None:
        args.recipe_report = [
            ROOT / "runs" / "compress" / "lenet-300-100" / "report.json",
            ROOT / "runs" / "p-lenet-300-100-paper" / "report.json",
        ]

    try:
        if args.from_csv is not None:
            with open(args.from_csv, newline="") as f:
                rows = list(csv.DictReader(f))
            facts_path = args.out_dir / f"{args.from_csv.stem}.json"
            facts = json.loads(facts_path.read_text())
            write_outputs(rows, facts, args.from_csv.with_suffix(""), args.recipe_report)
            return 0
        for name in ("rounds", "threads"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1")
        args.kept = parse_numbers(args.kept, float)
        args.q_bits = parse_numbers(args.q_bits, int)
        args.pq_bits = parse_numbers(args.pq_bits, int)
        if any(not 0 < k <= 100 for k in args.kept):
            parser.error("--kept: percentages in (0, 100]")
        results = args.results_dir
        if args.quick:
            args.kept, args.q_bits, args.pq_bits = [25.0, 5.0], [2, 4], [3]
            args.rounds, args.round_epochs, args.final_epochs = 2, 1, 1
            args.finetune_epochs = 1
            args.out_dir = args.out_dir / "quick"
            results = args.out_dir / "results"
        if not args.checkpoint.is_file():
            print(f"{args.checkpoint}: no such checkpoint (train one, or pass --checkpoint)")
            return 1
        rows, facts = run(args)
        stem = results / f"tradeoff_{args.tag or facts['model']}"
        # The run's facts, so --from-csv can redraw without retraining.
        (args.out_dir / f"{stem.name}.json").write_text(json.dumps(facts, indent=2) + "\n")
        write_outputs(rows, facts, stem, args.recipe_report)
    except DeepCompressionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
