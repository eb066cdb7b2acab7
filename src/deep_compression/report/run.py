"""The report of a ``compress`` run, assembled from its phases' records."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deep_compression.dcz import open_dcz
from deep_compression.dcz.stages import STAGE_NAMES
from deep_compression.dcz.summary import summarize
from deep_compression.recipe import Recipe
from deep_compression.records import PhaseRow, RunReport, StageRow

__all__ = ["build_report"]


def build_report(
    final: Path, phases: Mapping[str, Any], recipe: Recipe, splits: str = ""
) -> RunReport:
    """The report of a finished run from what each phase recorded in ``pipeline.json``
    (``phases``) and the final file ``final`` (its per-layer table and byte breakdown);
    ``splits`` names where the validation and test images came from."""
    enc = phases["encoded"]
    summary = summarize(open_dcz(final))
    # A shrunk network's rate is against the dense network it came from.
    original = phases.get("shrunk", {}).get("dense_bytes", enc["original_bytes"])
    stages = [StageRow("dense (float32)", original, 1.0)]
    stages += [
        StageRow(s, enc["bytes"][s], original / enc["bytes"][s], enc["files"][i])
        for i, s in enumerate(STAGE_NAMES)
    ]
    q = phases["quantized"]

    def row(name: str, p: Mapping[str, Any], note: str, suffix: str = "") -> PhaseRow:
        # A run with a validation split measured the clustered model on it only.
        return PhaseRow(name, p.get(f"test_error{suffix}"), float(p.get("seconds", 0.0)) if
                        not suffix else 0.0, note, p.get(f"val_error{suffix}"))  # fmt: skip

    rows = [
        row("dense", phases["dense"], phases["dense"].get("how", "")),
        *(
            [row("shrunk", phases["shrunk"], f"{phases['shrunk']['params']:,} parameters left")]
            if "shrunk" in phases
            else []
        ),
        row(
            "pruned",
            phases["pruned"],
            f"{100 * phases['pruned']['kept_fraction']:.2f}% of weights kept",
        ),  # fmt: skip
        row("clustered", q, "k-means, before fine-tuning", "_clustered"),
        row("quantized", q, "after centroid fine-tuning"),
        row("decoded", enc, "model.dcz decoded"),
    ]
    return RunReport(
        model=recipe.model,
        dataset=recipe.dataset.label,
        recipe_digest=recipe.digest(),
        original_bytes=original,
        stages=tuple(stages),
        phases=tuple(rows),
        kept_fraction=phases["pruned"]["kept_fraction"],
        layers=tuple(summary["layers"]),
        breakdown=summary["breakdown"],
        streams=tuple(summary["streams"]),
        total_seconds=round(sum(float(r.seconds) for r in rows), 1),
        splits=splits,
    )
