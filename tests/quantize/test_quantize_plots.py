"""The error-vs-bits plot writes a real PNG (report/quantize_plots.py)."""

from __future__ import annotations

from pathlib import Path

from deep_compression.report.quantize_plots import plot_error_vs_bits


def test_writes_png(tmp_path: Path) -> None:
    panels = {
        "k-means": {
            "linear": [(3, 0.019), (2, 0.026), (2, 0.024)],
            "optimal": [(2, 0.025), (3, 0.018)],
        },
        "fine-tuned": {"linear": [(2, 0.021), (3, 0.018)], "optimal": [(2, 0.020), (3, 0.017)]},
    }
    path = plot_error_vs_bits(panels, tmp_path / "p.png", baseline=0.0168, legend_title="init")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
