"""The run report as Markdown (``report.md``, and what ``compress`` prints)."""

from __future__ import annotations

from deep_compression.records import RunReport
from deep_compression.table import format_table

__all__ = ["report_markdown"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def report_markdown(report: RunReport) -> str:
    """Per-phase errors, per-stage sizes, per-layer table in the paper's columns, and
    where the bytes of the final file go."""
    # With a validation split, its error (what every decision saw) stands next to the
    # test error (measured for this report only).
    has_val = any(p.val_error is not None for p in report.phases)
    phase_rows = [
        [
            p.phase,
            *([_pct(p.val_error)] if has_val else []),
            _pct(p.test_error),
            f"{p.seconds:.0f} s" if p.seconds else "-",
            p.note,
        ]
        for p in report.phases
    ]
    stage_rows = [[s.stage, s.file or "-", f"{s.bytes:,}", f"{s.rate:.1f}x"] for s in report.stages]
    layer_rows = [
        [
            row["name"],
            f"{row['weights']:,}",
            f"{row['kept_pct']:.2f}%",
            f"{row['weight_bits']['P+Q']:.2f}",
            f"{row['weight_bits']['P+Q+H']:.2f}",
            f"{row['index_bits']['P+Q']:.2f}",
            f"{row['index_bits']['P+Q+H']:.2f}",
            f"{row['size_pct']['P+Q']:.2f}%",
            f"{row['size_pct']['P+Q+H']:.2f}%",
        ]
        for row in report.layers
    ]
    breakdown = [[k, f"{v:,}"] for k, v in report.breakdown.items()]
    parts = [
        f"# {report.model} on {report.dataset}",
        "",
        "## Phases (error of the model each phase left)",
        "",
        *([f"{report.splits[:1].upper()}{report.splits[1:]}.", ""] if report.splits else []),
        format_table(
            ["phase", *(["validation error"] if has_val else []), "test error", "time", ""],
            phase_rows,
        ),
        "",
        "## Stages (each a real file decoding to the final model; see `dcz/stages.py`)",
        "",
        "Rate = float32 bytes of the original floating-point tensors / file bytes. "
        "P: kept weights as float32 with fixed-width relative indices; P+Q: plus "
        "fixed-width cluster indices; P+Q+H: plus entropy coding (the final file).",
        "",
        format_table(["stage", "file", "bytes", "rate"], stage_rows),
        "",
        "## Layers (the paper's Table 2/3 columns)",
        "",
        format_table(
            [
                "layer",
                "weights",
                "kept",
                "weight bits P+Q",
                "weight bits P+Q+H",
                "index bits P+Q",
                "index bits P+Q+H",
                "size P+Q",
                "size P+Q+H",
            ],
            layer_rows,
        ),
        "",
        "## Where the bytes of the final file go",
        "",
        format_table(["part", "bytes"], breakdown),
        "",
        *_search_lines(report),
        f"Wall time: {report.total_seconds:.0f} s.",
        "",
    ]
    return "\n".join(parts)


def _search_lines(report: RunReport) -> list[str]:
    """How a searched run chose its recipe, and the final file's paired increase over
    the dense model on each split."""
    lines = []
    s = report.search
    if s is not None:
        lines += [
            "## Search",
            "",
            f"{s.kind}: the smallest file within {s.max_error_increase:g} points of the "
            f"dense validation error, with {100 * s.confidence:g}% confidence, paired "
            f"image by image; {s.candidates} candidates in {s.seconds:.0f} s (every one in "
            f"search.json). Chosen: {s.chosen} (recipe.toml replays it).",
            "",
        ]
    for split, inc in report.increase.items():
        name = "validation" if split == "val" else "test"
        interval = 100 * (2 * float(inc["confidence"]) - 1)
        lines.append(
            f"Increase over dense on {name} ({int(inc['n']):,} images, paired): "
            f"{inc['increase']:+.2f} points, {interval:g}% interval "
            f"[{inc['low']:+.2f}, {inc['high']:+.2f}]."
        )
    return [*lines, ""] if report.increase else lines
