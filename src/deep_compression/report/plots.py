"""Plots of a finished pipeline run (PNG, matplotlib's Agg backend: files only).

- :func:`plot_weight_distribution`: one layer's weights before pruning, after pruning and
  retraining, and after quantization with the centroids marked (the paper's Figure 4/5
  in spirit).
- :func:`plot_layers`: per-layer kept % and bits per weight/index of the final file.
- :func:`write_run_plots`: all of the above, plus the sensitivity curves, for a run
  directory written by :func:`deep_compression.pipeline.compress`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deep_compression.prune import get_mask, prunable_layers
from deep_compression.prune.sensitivity import SensitivityResult
from deep_compression.quantize import quantized_weight
from deep_compression.records import RunReport
from deep_compression.report.sensitivity_plot import plot_sensitivity

__all__ = ["plot_weight_distribution", "plot_layers", "write_run_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_weight_distribution(
    dense: np.ndarray,
    pruned: np.ndarray,
    quantized: np.ndarray,
    codebook: np.ndarray,
    path: str | os.PathLike[str],
    title: str,
) -> Path:
    """Histograms of one layer's weights at three stages.

    Args:
        dense: the trained weights, any shape.
        pruned: the surviving (non-zero) weights after pruning and retraining, 1-D.
        quantized: the surviving weights after quantization (shared values), 1-D.
        codebook: the layer's centroids ``(k,)``, drawn as vertical lines.
    """
    plt = _pyplot()
    path = Path(path)
    dense = np.asarray(dense, dtype=np.float64).ravel()
    lo, hi = float(np.min(dense)), float(np.max(dense))
    lo = min(lo, float(np.min(pruned, initial=lo)), float(np.min(codebook, initial=lo)))
    hi = max(hi, float(np.max(pruned, initial=hi)), float(np.max(codebook, initial=hi)))
    bins = np.linspace(lo, hi, 121)
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), dpi=120, sharex=True)
    try:
        axes[0].hist(dense, bins=bins, color="tab:gray")
        axes[0].set_title(f"dense: {dense.size:,} weights")
        axes[1].hist(pruned, bins=bins, color="tab:blue")
        axes[1].set_title(
            f"after pruning and retraining: {pruned.size:,} kept "
            f"({100 * pruned.size / max(dense.size, 1):.1f}%)"
        )
        values, counts = np.unique(quantized, return_counts=True)
        width = (hi - lo) / 240
        axes[2].bar(values, counts, width=width, color="tab:orange")
        for c in codebook:
            axes[2].axvline(float(c), color="tab:red", linewidth=0.4, alpha=0.6)
        axes[2].set_title(f"after quantization: {len(codebook)} centroids (red), counts per value")
        axes[2].set_xlabel("weight value")
        for ax in axes:
            ax.set_ylabel("count")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def plot_layers(
    layers: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], title: str
) -> Path:
    """Bars of kept % per layer and, beside them, bits per weight and per index (P+Q+H)."""
    plt = _pyplot()
    path = Path(path)
    names = [row["name"].removesuffix(".weight") for row in layers]
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    try:
        kept = [row["kept_pct"] for row in layers]
        ax1.bar(x, kept, color="tab:blue")
        for xi, k in zip(x, kept):
            ax1.annotate(f"{k:.1f}%", (xi, k), ha="center", va="bottom", fontsize=8)
        ax1.set_xticks(x, names)
        ax1.set_ylabel("weights kept (%)")
        ax1.set_title("pruning")
        w = 0.2
        series = [
            ("weight bits P+Q", [r["weight_bits"]["P+Q"] for r in layers]),
            ("weight bits P+Q+H", [r["weight_bits"]["P+Q+H"] for r in layers]),
            ("index bits P+Q", [r["index_bits"]["P+Q"] for r in layers]),
            ("index bits P+Q+H", [r["index_bits"]["P+Q+H"] for r in layers]),
        ]
        for i, (label, values) in enumerate(series):
            ax2.bar(x + (i - 1.5) * w, values, width=w, label=label)
        ax2.set_xticks(x, names)
        ax2.set_ylabel("bits per kept weight")
        ax2.set_title("quantization and coding")
        ax2.legend(fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def write_run_plots(
    out: str | os.PathLike[str],
    report: RunReport,
    dense: nn.Module,
    pruned: nn.Module | None,
    quantized: nn.Module,
    sensitivity: SensitivityResult | None = None,
) -> list[Path]:
    """Write every plot of a finished run into the directory ``out``; return the paths.

    Per layer, the weight distribution dense / after pruning / after quantization with
    the centroids; the per-layer kept % and bits of ``report``; and, when given, the
    sensitivity curves of the dense model. Without a ``pruned`` model (compression
    without retraining prunes as it quantizes) the kept weights are the dense ones the
    quantizer kept. The caller loads the models (this module
    reads no files).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    d_layers, q_layers = prunable_layers(dense), prunable_layers(quantized)
    p_layers = prunable_layers(pruned) if pruned is not None else {}
    with torch.no_grad():
        for name in d_layers:
            q = quantized_weight(q_layers[name])
            if q is None:
                continue
            if name in p_layers:
                mask = get_mask(p_layers[name])
                pw = p_layers[name].weight
                kept = pw[mask] if mask is not None else pw[pw != 0]
            else:
                kept = d_layers[name].weight[q.mask]
            qvalues = q.codebook[q.indices[q.mask].long()]
            paths.append(
                plot_weight_distribution(
                    d_layers[name].weight.numpy(),
                    kept.numpy(),
                    qvalues.numpy(),
                    q.codebook.detach().numpy(),
                    out / f"weights-{name}.png",
                    f"{report.model} {name}",
                )
            )
    paths.append(plot_layers(list(report.layers), out / "layers.png", report.model))
    if sensitivity is not None:
        paths.append(
            plot_sensitivity(
                sensitivity, out / "sensitivity.png", f"{report.model}: prune one layer at a time"
            )
        )
    return paths
