"""``compress CKPT --no-retrain --max-error-increase P``: the smallest file within the budget
with no gradient step (:func:`deep_compression.no_retrain.compress_without_retraining`:
rate-distortion quantization, no pruning beyond what quantizing to zero does), chosen on
the same validation split as the retraining search; the test set is measured once, on the
decoded file, for the report."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from deep_compression import __version__
from deep_compression.budget.recipe_file import _pct
from deep_compression.data import carve_validation, load_data
from deep_compression.encode import EncodeConfig, encode_model
from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write, write_json
from deep_compression.loading import load_dcz, load_model
from deep_compression.no_retrain import compress_without_retraining
from deep_compression.phases import Log
from deep_compression.pipeline import base_meta, describe_source
from deep_compression.prune.schedule import calibration_batch
from deep_compression.recipe import Recipe
from deep_compression.table import format_table
from deep_compression.train import evaluate

__all__ = ["CALIBRATION_IMAGES", "compress_no_retrain"]

CALIBRATION_IMAGES = 512  # training images whose activations weight the quantization


def compress_no_retrain(
    recipe: Recipe,
    checkpoint: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    max_error_increase: float,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    allow_code: bool = False,
    calibration_images: int = CALIBRATION_IMAGES,
    log: Log = print,
) -> dict[str, Any]:
    """Write ``run_dir/model.dcz``, ``report.json``, ``report.md`` and ``search.json``.

    Args:
        recipe: model, dataset and validation split (:func:`~deep_compression.budget
            .starting_recipe`).
        checkpoint: the trained model.
        max_error_increase: budget in points of validation error above the dense model's.
        calibration_images: training images whose activations weight the quantization
            error (GPTQ-style); 0 for none (no data beyond the validation check).

    Returns:
        The report (``report.json``'s content).
    """
    run_dir, ckpt = Path(run_dir), Path(checkpoint)
    final = run_dir / "model.dcz"
    if final.exists() and not force:
        raise ConfigError(f"{run_dir} holds a run; pass --force to replace it or another --out-dir")
    _, ckpt_meta = describe_source(recipe, ckpt)
    data = carve_validation(load_data(recipe.dataset, data_dir, allow_code=allow_code),
                            recipe.validation)  # fmt: skip
    assert data.val is not None
    model, _ = load_model(ckpt, model=recipe.model, model_args=recipe.model_args,
                          allow_code=allow_code)  # fmt: skip
    meta = base_meta(recipe, ckpt_meta, data.info.preprocessing)
    # The file's metadata, given to the search too so that its sizes are the file's.
    file_meta = replace(meta, stage="quantized", details={}).to_dict()
    calibration = (
        calibration_batch(data.train, calibration_images, recipe.seed)
        if calibration_images
        else None
    )

    def val_error(m: Any) -> float:
        return 100.0 * (1.0 - evaluate(m, data.val)[1])

    log(f"[no-retrain] searching within {max_error_increase} points of the dense "
        "validation error")  # fmt: skip
    result = compress_without_retraining(model, val_error, max_error_increase,
                                         calibration=calibration, metadata=file_meta)  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    report = encode_model(result.model, final, EncodeConfig(coder="best"), metadata=file_meta)
    decoded, _ = load_dcz(final, allow_code=allow_code)
    doc = {
        "tool_version": __version__,
        "checkpoint": str(ckpt),
        "max_error_increase": max_error_increase,
        "dense": {"val_error": result.dense_val_error / 100,
                  "test_error": 1.0 - evaluate(model, data.test)[1]},
        "final": {"val_error": val_error(decoded) / 100,
                  "test_error": 1.0 - evaluate(decoded, data.test)[1]},
        "file_bytes": report.file_bytes,
        "original_bytes": report.original_bytes,
        "rate": report.rate,
        "lam": result.config.lam,
        "calibration_images": calibration_images,
        "seconds": round(result.seconds, 1),
    }  # fmt: skip
    write_json(run_dir / "report.json", doc)
    atomic_write(run_dir / "report.md", _markdown(doc).encode())
    write_json(run_dir / "search.json", {"trials": [t.__dict__ for t in result.trials]})
    return doc


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        ["dense", "-", _pct(doc["dense"]["val_error"]), _pct(doc["dense"]["test_error"])],
        ["model.dcz", f"{doc['file_bytes']:,} B ({doc['rate']:.1f}x)",
         _pct(doc["final"]["val_error"]), _pct(doc["final"]["test_error"])],
    ]  # fmt: skip
    table = format_table(["model", "file", "validation error", "test error"], rows)
    return (f"# Compressed without retraining (budget {doc['max_error_increase']} points)\n\n"
            f"{table}\n\nSearch: {doc['seconds']} s, lam {doc['lam']:.4g}.\n")  # fmt: skip
