"""The report of a ``compress`` run, assembled from its phases' records: one typed
:class:`~deep_compression.records.RunReport` for every kind of run (a recipe, a search to
a budget, compression without retraining)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deep_compression.dcz import DczFile
from deep_compression.dcz.stages import STAGE_NAMES
from deep_compression.dcz.summary import summarize
from deep_compression.recipe import NoRetrainRecipe, Recipe
from deep_compression.records import PhaseRow, RunReport, SearchSummary, StageRow

__all__ = ["build_report"]


def _row(name: str, p: Mapping[str, Any], note: str, suffix: str = "") -> PhaseRow:
    """A phase's row; ``suffix`` ``"_clustered"`` reads the errors before fine-tuning (a
    run with a validation split measured the clustered model on it only)."""
    seconds = float(p.get("seconds", 0.0)) if not suffix else 0.0
    test, val = p.get(f"test_error{suffix}"), p.get(f"val_error{suffix}")
    return PhaseRow(name, test, seconds, note, val)


def _phase_rows(phases: Mapping[str, Any]) -> list[PhaseRow]:
    """dense, [shrunk], [pruned], [clustered], quantized, decoded."""
    rows = [_row("dense", phases["dense"], phases["dense"].get("how", ""))]
    if "shrunk" in phases:
        rows.append(
            _row("shrunk", phases["shrunk"], f"{phases['shrunk']['params']:,} parameters left")
        )
    if "plan" in phases:
        rows.append(
            _row("search", phases["plan"], "candidates in search.json, the choice in recipe.toml")
        )
    if "pruned" in phases:
        kept = phases["pruned"]["kept_fraction"]
        rows.append(_row("pruned", phases["pruned"], f"{100 * kept:.2f}% of weights kept"))
    q = phases["quantized"]
    if "test_error_clustered" in q or "val_error_clustered" in q:
        rows.append(_row("clustered", q, "k-means, before fine-tuning", "_clustered"))
        rows.append(_row("quantized", q, "after centroid fine-tuning"))
    else:  # without retraining: not measured before encoding (the decoded row is it)
        rows.append(_row("quantized", q, q.get("how", "")))
    rows.append(_row("decoded", phases["encoded"], "model.dcz decoded"))
    return rows


def build_report(
    final: DczFile,
    phases: Mapping[str, Any],
    recipe: Recipe | NoRetrainRecipe,
    splits: str = "",
    search: SearchSummary | None = None,
) -> RunReport:
    """The report of a finished run from what each phase recorded in ``pipeline.json``
    (``phases``) and the final file ``final`` (its per-layer table and byte breakdown);
    ``splits`` names where the validation and test images came from; ``search`` is how
    a searched run chose its recipe."""
    enc = phases["encoded"]
    summary = summarize(final)
    # A shrunk network's rate is against the dense network it came from.
    original = phases.get("shrunk", {}).get("dense_bytes", enc["original_bytes"])
    stages = [StageRow("dense (float32)", original, 1.0)]
    stages += [
        StageRow(s, enc["bytes"][s], original / enc["bytes"][s], enc["files"][i])
        for i, s in enumerate(STAGE_NAMES)
    ]
    rows = _phase_rows(phases)
    kept = phases["pruned" if "pruned" in phases else "quantized"]["kept_fraction"]
    return RunReport(
        model=recipe.model,
        dataset=recipe.dataset.label,
        recipe_digest=recipe.digest(),
        original_bytes=original,
        stages=tuple(stages),
        phases=tuple(rows),
        kept_fraction=kept,
        layers=tuple(summary["layers"]),
        breakdown=summary["breakdown"],
        streams=tuple(summary["streams"]),
        total_seconds=round(sum(float(r.seconds) for r in rows), 1),
        splits=splits,
        search=search,
        increase=enc.get("increase", {}),
    )
