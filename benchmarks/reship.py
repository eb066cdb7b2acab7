"""Move a shipped model (``models/X.dcz`` with ``models/X.report.json``) to the current
file format and metadata schema without retraining: every tensor is kept bit for bit,
only its storage changes. The report is rebuilt from the new file (stages, per-layer
table, byte breakdown) and from the phases the old report recorded (errors, times).

    python benchmarks/reship.py models/lenet-300-100.dcz --recipe recipes/lenet-300-100.toml

The file is re-encoded with the recipe's ``[encode]`` settings, decoded, evaluated on the
test set (its error must equal the old report's) and only then written, with its report.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from deep_compression.data import DatasetConfig, load_data
from deep_compression.dcz import decode, open_dcz, to_bytes
from deep_compression.dcz.stages import STAGE_NAMES, stage_blobs
from deep_compression.dcz.summary import summarize
from deep_compression.fileio import atomic_write, write_json
from deep_compression.loading import load_dcz
from deep_compression.recipe import load_recipe
from deep_compression.records import CheckpointMeta, PhaseRow, RunReport, StageRow
from deep_compression.report.markdown import report_markdown
from deep_compression.train import evaluate


def _phases(old: dict) -> tuple[PhaseRow, ...]:
    """The old report's phase figures (written before the typed RunReport)."""
    if "phases" in old:
        return tuple(PhaseRow(**p) for p in old["phases"])
    stages = {s["stage"]: s for s in old["stages"]}
    secs = old.get("phase_seconds", {})
    return (
        PhaseRow("dense", stages["dense (float32)"]["test_error"], secs.get("dense", 0.0)),
        PhaseRow(
            "pruned",
            old["test_error_pruned"],
            secs.get("pruned", 0.0),
            f"{100 * old['kept_fraction']:.2f}% of weights kept",
        ),  # fmt: skip
        PhaseRow("clustered", old["test_error_clustered"], 0.0, "k-means, before fine-tuning"),
        PhaseRow(
            "quantized",
            stages["P+Q+H"]["test_error"],
            secs.get("quantized", 0.0),
            "after centroid fine-tuning",
        ),  # fmt: skip
        PhaseRow(
            "decoded", stages["P+Q+H"]["test_error"], secs.get("encoded", 0.0), "model.dcz decoded"
        ),  # fmt: skip
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dcz", type=Path)
    p.add_argument("--recipe", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    old_report = json.loads(args.dcz.with_name(f"{args.dcz.stem}.report.json").read_text())
    f = open_dcz(args.dcz)
    old_meta = CheckpointMeta.from_dict(f.metadata, str(args.dcz))
    data = load_data(DatasetConfig.from_value(old_meta.dataset or "mnist"))
    meta = replace(
        old_meta,
        stage="quantized",
        preprocessing=data.info.preprocessing,
        details={"recipe_digest": recipe.digest()},
    )
    enc = recipe.encode
    blob = to_bytes(f.records(), meta.to_dict(), coder=enc.coder, chunk=enc.chunk)
    new, old = decode(blob)[0], f.decode()
    assert list(new) == list(old) and all(np.array_equal(new[k], old[k]) for k in old)
    tmp = args.dcz.with_name(f".{args.dcz.name}.new")
    atomic_write(tmp, blob)
    model, _ = load_dcz(tmp)
    error = 1 - evaluate(model, data.test)[1]
    phases = _phases(old_report)
    assert error == phases[-1].test_error, (error, phases[-1].test_error)
    g = open_dcz(blob)
    blobs = stage_blobs(g)
    original = g.original_bytes
    stages = [StageRow("dense (float32)", original, 1.0)] + [
        StageRow(s, len(blobs[s]), original / len(blobs[s]), name)
        for s, name in zip(STAGE_NAMES, ("stage-p.dcz", "stage-pq.dcz", "model.dcz"))
    ]
    summary = summarize(g)
    report = RunReport(
        model=recipe.model,
        dataset=recipe.dataset.label,
        recipe_digest=recipe.digest(),
        original_bytes=original,
        stages=tuple(stages),
        phases=phases,
        kept_fraction=old_report["kept_fraction"],
        layers=tuple(summary["layers"]),
        breakdown=summary["breakdown"],
        streams=tuple(summary["streams"]),
        total_seconds=round(sum(r.seconds for r in phases), 1),
    )
    tmp.replace(args.dcz)
    write_json(args.dcz.with_name(f"{args.dcz.stem}.report.json"), report.to_dict())
    atomic_write(args.dcz.with_name(f"{args.dcz.stem}.report.md"), report_markdown(report))
    print(
        f"{args.dcz}: {f.size:,} -> {len(blob):,} bytes ({original / len(blob):.1f}x), "
        f"weights bit-identical, test error {100 * error:.2f}% as before"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
