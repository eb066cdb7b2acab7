"""Pipe tables that read well in a terminal and render as Markdown unchanged."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown pipe table; numbers are right-aligned, text left-aligned.

    Pre-format a cell as a string to control its precision (``f"{x:.2f}%"``); a string
    that parses as a number (after stripping ``%``, ``x`` and thousands separators) is
    right-aligned too.

    >>> print(format_table(["layer", "kept"], [["fc1", 1234], ["fc2", 5]]))
    | layer |  kept |
    |:------|------:|
    | fc1   | 1,234 |
    | fc2   |     5 |
    """
    cells = [[_cell(v) for v in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row {row} has {len(row)} cells, expected {len(headers)}")

    def numeric(text: str) -> bool:
        t = text.replace(",", "").rstrip("%x").strip()
        try:
            float(t)
        except ValueError:
            return False
        return True

    right = [
        bool(cells) and all(numeric(r[i]) or r[i] in ("", "-") for r in cells)
        for i in range(len(headers))
    ]
    widths = [max([len(h), 3] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1)) for w, r in zip(widths, right)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])
