"""The sensitivity plot: test accuracy vs. fraction of weights kept, one line per layer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deep_compression.prune.sensitivity import SensitivityResult

__all__ = ["plot_sensitivity"]


def plot_sensitivity(
    result: SensitivityResult, path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Write a PNG of ``result`` to ``path`` and return the path.

    The x axis is the fraction of the layer's weights kept (log scale, falling to the
    right as ``s`` rises, as in the paper's figure); the dashed line is the unpruned
    model's accuracy.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for layer in result.layers():
            curve = result.curve(layer)
            ax.plot(
                [100 * p.kept_fraction for p in curve],
                [100 * p.accuracy for p in curve],
                marker="o",
                markersize=3,
                label=layer,
            )
        ax.axhline(
            100 * result.baseline, color="grey", linestyle="--", linewidth=1, label="unpruned"
        )
        ax.set_xscale("log")
        # Plain percentages (100, 50, 20, 10...) read better than powers of ten.
        ax.xaxis.set_major_locator(FixedLocator([100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("weights kept in the layer (%)")
        ax.set_ylabel("test accuracy (%)")
        low = min([100 * p.accuracy for p in result.points] + [100 * result.baseline])
        ax.set_ylim(max(low - 1, 100 * result.baseline - 20), 100 * result.baseline + 0.5)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="layer pruned alone")
        ax.set_title(title or "pruning sensitivity (no retraining)", fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
