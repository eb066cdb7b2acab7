"""Quantization plots: test error vs. bits per weight, one line per initialisation or layer."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_error_vs_bits"]

_TICKS = [
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1,
    1.2,
    1.4,
    1.6,
    1.8,
    2,
    2.5,
    3,
    4,
    5,
    7,
    10,
    15,
    20,
    30,
    50,
    70,
    90,
]


def plot_error_vs_bits(
    panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    path: str | os.PathLike[str],
    *,
    baseline: float | None = None,
    baseline_label: str = "before quantization",
    title: str | None = None,
    legend_title: str | None = None,
) -> Path:
    """Write a PNG with one panel per entry of ``panels`` and return its path.

    Args:
        panels: ``{panel title: {line label: [(bits, test error as a fraction), ...]}}``,
            e.g. ``{"k-means only": {"linear": [(2, 0.031), (3, 0.019), ...], ...},
            "fine-tuned": {...}}``. Several points at the same bits (repeated seeds) are
            drawn as their mean with an error bar from the smallest to the largest.
        path: the PNG to write.
        baseline: the unquantized model's test error, drawn as a dashed line.
        title: the figure's title.
        legend_title: title of the legend (``"init"``, ``"layer"``...).

    The error axis is logarithmic: errors of 1.6% and 60% both stay readable.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    path = Path(path)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), dpi=120, sharey=True, squeeze=False)
    try:
        for ax, (panel, lines) in zip(axes[0], panels.items()):
            for label, points in lines.items():
                by_bits: dict[int, list[float]] = {}
                for b, e in points:
                    by_bits.setdefault(b, []).append(100 * e)
                xs = sorted(by_bits)
                means = [sum(by_bits[b]) / len(by_bits[b]) for b in xs]
                # max(0, ...): equal values give a mean a rounding error above the min.
                low = [max(0.0, m - min(by_bits[b])) for m, b in zip(means, xs)]
                high = [max(0.0, max(by_bits[b]) - m) for m, b in zip(means, xs)]
                spread = any(len(v) > 1 for v in by_bits.values())
                ax.errorbar(
                    xs,
                    means,
                    yerr=[low, high] if spread else None,
                    marker="o",
                    markersize=3,
                    capsize=2,
                    label=label,
                )
            if baseline is not None:
                ax.axhline(
                    100 * baseline, color="grey", linestyle="--", linewidth=1, label=baseline_label
                )
            ax.set_yscale("log")
            # Plain percentages at readable steps; a log axis alone may show no label at
            # all when every error lies within one decade.
            ax.yaxis.set_major_locator(FixedLocator(_TICKS))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("bits per weight (k = 2^bits shared values)")
            ax.set_title(panel, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[0][0].set_ylabel("test error (%)")
        axes[0][-1].legend(title=legend_title, fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
