"""Compression with no training step, from the CLI: ``compress CKPT --no-retrain
--max-error-increase P`` or ``compress --recipe NR.toml CKPT`` (a recipe with a
``[no_retrain]`` table, :class:`~deep_compression.recipe.NoRetrainRecipe`).

With a budget, :func:`deep_compression.no_retrain.compress_without_retraining` finds the
smallest file within it (rate-distortion quantization, no pruning beyond what quantizing
to zero does) on the same validation split as the retraining search; without one, the
recipe's ``lam`` is applied once. The test set is measured once, on the decoded file, for
the report. The run leaves ``recipe.toml``: the chosen setting as a recipe that quantizes
once and gives the same file byte for byte.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from deep_compression import __version__
from deep_compression.budget.recipe_file import _pct, write_commented_toml
from deep_compression.encode import encode_model
from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write, write_json
from deep_compression.loading import load_dcz, load_model
from deep_compression.no_retrain import compress_without_retraining, rd_quantize_
from deep_compression.no_retrain.config import CALIBRATION_IMAGES, NoRetrainPlan
from deep_compression.phases import Log
from deep_compression.pipeline import base_meta, describe_source, split_data
from deep_compression.prune.schedule import calibration_batch
from deep_compression.recipe import NoRetrainRecipe
from deep_compression.selection import PairedJudge
from deep_compression.table import format_table

# A bisection of lam stops when its two ends' files differ by less than 1%: each step costs
# a full evaluation (ResNet-44: about a minute on the shared machine), and the last steps
# of 5 moved the file by 0.5% (291,836 -> 290,502 B).
MIN_GAIN = 0.01

__all__ = ["CALIBRATION_IMAGES", "compress_no_retrain", "write_no_retrain_recipe"]


def compress_no_retrain(
    recipe: NoRetrainRecipe,
    checkpoint: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    allow_code: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Write ``run_dir/model.dcz``, ``report.json``, ``report.md``, ``recipe.toml`` and
    (with a budget) ``search.json``.

    Args:
        recipe: model, dataset, validation split, the ``[no_retrain]`` plan (a budget
            ``max_error_increase`` in points of validation error, or a fixed ``lam``;
            ``calibration`` training images, 0 for none) and the ``[encode]`` settings.
        checkpoint: the trained model.

    Returns:
        The report (``report.json``'s content).
    """
    t0 = time.perf_counter()
    run_dir, ckpt = Path(run_dir), Path(checkpoint)
    final = run_dir / "model.dcz"
    if final.exists() and not force:
        raise ConfigError(f"{run_dir} holds a run; pass --force to replace it or another --out-dir")
    plan = recipe.no_retrain
    _, ckpt_meta = describe_source(recipe, ckpt)
    data, resolved = split_data(recipe, ckpt_meta, from_checkpoint=True, data_dir=data_dir,
                                allow_code=allow_code, log=log)  # fmt: skip
    assert isinstance(resolved, NoRetrainRecipe) and data.val is not None
    recipe = resolved
    model, _ = load_model(ckpt, model=recipe.model, model_args=recipe.model_args,
                          allow_code=allow_code)  # fmt: skip
    meta = base_meta(recipe, ckpt_meta, data.info.preprocessing)
    # The file's metadata, given to the search too so that its sizes are the file's.
    file_meta = replace(meta, stage="quantized", details={}).to_dict()
    calibration = (
        calibration_batch(data.train, plan.calibration, recipe.seed) if plan.calibration else None
    )
    # Decoded once: every candidate is compared with the dense model on these tensors.
    judge = PairedJudge(model, data.val, plan.max_error_increase or 0.0, plan.confidence,
                        seed=recipe.validation.seed)  # fmt: skip

    t_search = time.perf_counter()
    chosen, config, rd, trials = _choose(recipe, model, judge, calibration, file_meta, log)
    t_search = time.perf_counter() - t_search
    run_dir.mkdir(parents=True, exist_ok=True)
    report = encode_model(chosen, final, recipe.encode, metadata=file_meta)
    decoded, _ = load_dcz(final, allow_code=allow_code)
    doc = {
        "tool_version": __version__,
        "checkpoint": str(ckpt),
        "max_error_increase": plan.max_error_increase,
        "confidence": plan.confidence,
        **_measurements(model, decoded, judge, data, recipe),
        "search": {"candidates": len(trials), "seconds": round(t_search, 1),
                   "seconds_per_candidate": round(t_search / max(1, len(trials)), 2),
                   "dense_evaluation_seconds": round(judge.reference_seconds, 2)},
        "file_bytes": report.file_bytes,
        "original_bytes": report.original_bytes,
        "rate": report.rate,
        "importance": config.importance,
        "lam": config.lam,
        "calibration_images": plan.calibration,
        "seconds": round(time.perf_counter() - t0, 1),
        "layers": [dict(r.__dict__) for r in rd.layers],
    }  # fmt: skip
    write_json(run_dir / "report.json", doc)
    atomic_write(run_dir / "report.md", _markdown(doc).encode())
    if plan.max_error_increase is not None:
        write_json(run_dir / "search.json", {"trials": trials})
    fixed = replace(recipe, no_retrain=NoRetrainPlan(config, None, plan.calibration, True))
    write_no_retrain_recipe(run_dir / "recipe.toml", fixed, doc, checkpoint=ckpt)
    return doc


def _measurements(
    model: Any, decoded: Any, judge: PairedJudge, data: Any, recipe: NoRetrainRecipe
) -> dict[str, Any]:
    """The splits, and the dense and final errors on both with the final file's paired
    increase: on the test images (the part no decision saw) measured once, for the
    report."""
    test = PairedJudge(model, data.test, judge.budget, judge.confidence, early=False)
    on_test, on_val = test(decoded).estimate, judge(decoded).estimate
    return {
        "validation": recipe.validation.to_dict(),
        "splits": {"decisions": recipe.validation.describe(len(data.val), len(data.test)),
                   "validation_images": len(data.val), "test_images": len(data.test)},
        "dense": {"val_error": judge.reference_error / 100,
                  "test_error": test.reference_error / 100},
        "final": {"val_error": on_val.candidate / 100, "test_error": on_test.candidate / 100,
                  "val_increase": on_val.to_dict(), "test_increase": on_test.to_dict()},
    }  # fmt: skip


def _choose(
    recipe: NoRetrainRecipe,
    model: Any,
    judge: PairedJudge,
    calibration: Any,
    file_meta: dict[str, Any],
    log: Log,
) -> tuple[Any, Any, Any, list[dict[str, Any]]]:
    """The quantized model, its config, its per-layer report and the search's trials: by
    the search within the budget (each candidate judged against the dense model on the
    same images), or the recipe's ``lam`` applied once."""
    plan = recipe.no_retrain
    if plan.max_error_increase is None:
        chosen = copy.deepcopy(model)
        rd = rd_quantize_(chosen, plan.config, calibration)
        return chosen, plan.config, rd, []
    log(f"[no-retrain] dense validation error {judge.reference_error:.2f}% on "
        f"{judge.images:,} images; a candidate is kept when its increase is within "
        f"{plan.max_error_increase} points with {100 * plan.confidence:g}% confidence "
        "(paired with the dense model, image by image)")  # fmt: skip

    def progress(t: Any) -> None:
        log(f"[no-retrain] {t.importance:<11} lam {t.lam:<9.3g} {t.file_bytes:>9,} B  "
            f"{t.increase:+.2f} points (bound {t.high:+.2f}) on {t.images:,} images: "
            f"{'within' if t.accepted else 'over' if t.broken else 'not clearly within'}")

    result = compress_without_retraining(
        model, lambda m: judge(m).error, plan.max_error_increase, config=plan.config,
        calibration=calibration, coder=recipe.encode.coder,
        gap_bits=dict(recipe.encode.gap_bits), metadata=file_meta,
        lam_start=plan.config.lam if plan.lam_given else None, progress=progress,
        dense_error=judge.reference_error, judge=judge, min_gain=MIN_GAIN,
    )  # fmt: skip
    judge.warn_if_underpowered([(t.images, t.increase, t.high) for t in result.trials
                                if t.high is not None], log)  # fmt: skip
    return result.model, result.config, result.report, [t.__dict__ for t in result.trials]


def write_no_retrain_recipe(
    path: str | os.PathLike[str],
    recipe: NoRetrainRecipe,
    doc: dict[str, Any],
    *,
    checkpoint: Path,
) -> Path:
    """``recipe`` as TOML with a header saying what it gave; it loads back with
    :func:`~deep_compression.recipe.load_any_recipe` to the same recipe."""
    how = (
        f"compress --no-retrain --max-error-increase {doc['max_error_increase']}"
        if doc["max_error_increase"] is not None
        else "compress --recipe (a fixed lam)"
    )
    header = [
        f"# Chosen by deep-compression {__version__} ({how}) for",
        f"# {checkpoint}",
        f"#   dense      validation error {_pct(doc['dense']['val_error'])}",
        f"#   model.dcz  {doc['file_bytes']:,} bytes, validation error "
        f"{_pct(doc['final']['val_error'])}",
        f"#   {doc['splits']['decisions']}",
        "# Repeat the run exactly (same checkpoint, same file byte for byte):",
        f"#   deep-compression compress --recipe {path} {checkpoint}",
    ]
    return write_commented_toml(path, header, recipe.to_dict())


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        ["dense", "-", _pct(doc["dense"]["val_error"]), _pct(doc["dense"]["test_error"])],
        ["model.dcz", f"{doc['file_bytes']:,} B ({doc['rate']:.1f}x)",
         _pct(doc["final"]["val_error"]), _pct(doc["final"]["test_error"])],
    ]  # fmt: skip
    table = format_table(["model", "file", "validation error", "test error"], rows)
    final = doc["final"]
    decisions = doc["splits"]["decisions"]
    lines = [f"{decisions[0].upper()}{decisions[1:]}."]
    for split in ("val", "test"):
        inc = final[f"{split}_increase"]
        name = "validation" if split == "val" else "test"
        lines.append(f"Increase over dense on {name} ({inc['n']:,} images, paired): "
                     f"{inc['increase']:+.2f} points, {100 * (2 * inc['confidence'] - 1):g}% "
                     f"interval [{inc['low']:+.2f}, {inc['high']:+.2f}].")  # fmt: skip
    search = doc["search"]
    if doc["max_error_increase"] is not None:
        lines.append(f"Search: {search['candidates']} candidates in {search['seconds']} s "
                     f"({search['seconds_per_candidate']} s each).")  # fmt: skip
    table += "\n\n" + "\n".join(lines)
    layers = format_table(
        ["layer", "weights", "kept", "codewords", "relative error", "model bytes",
         "bias corrected"],
        [[r["name"], f"{r['weights']:,}", f"{100 * r['kept'] / max(r['weights'], 1):.2f}%",
          str(r["codebook_size"]), f"{r['relative_error']:.4f}",
          f"{r['model_bits'] / 8:,.0f}", "yes" if r["bias_corrected"] else "no"]
         for r in doc["layers"]],
    )  # fmt: skip
    title = (
        f"budget {doc['max_error_increase']} points"
        if doc["max_error_increase"] is not None
        else f"lam {doc['lam']:.4g}"
    )
    return (f"# Compressed without retraining ({title})\n\n{table}\n\n"
            f"{doc['seconds']} s; importance {doc['importance']}, lam {doc['lam']:.4g}, "
            f"{doc['calibration_images']} calibration images.\n\n"
            f"Per layer (model bytes: the quantizer's rate model of positions, indices and "
            f"codebook):\n\n{layers}\n")  # fmt: skip
