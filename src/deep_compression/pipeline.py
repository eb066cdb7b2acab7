"""The whole pipeline, driven by one recipe: dense -> prune -> quantize -> encode -> report.

A recipe is a TOML file mapped one-to-one onto :class:`Recipe`::

    model = "lenet-300-100"      # a built-in model name
    dataset = "mnist"
    seed = 0
    [train]                      # dense training, used only when no checkpoint is given
    [prune]                      # deep_compression.prune.PruneSchedule
    [[prune.rounds]] ...
    [quantize]                   # deep_compression.quantize.QuantizeConfig
    [encode]                     # EncodeConfig: coder, gap bits

:func:`compress` runs it phase by phase in a run directory, writing one file per phase
(``dense.safetensors``, ``pruned.safetensors``, ``quantized.safetensors``, then the
``.dcz`` files) and a ``pipeline.json`` that records what each finished phase measured.
Run again on the same directory with the same recipe, it resumes after the last finished
phase; with a different recipe it refuses (unless told to restart) rather than mix runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from deep_compression import __version__
from deep_compression.errors import ConfigError
from deep_compression.recipe_io import load_config

__all__ = [
    "EncodeConfig",
    "Recipe",
    "load_recipe",
    "compress",
    "PHASES",
    "STAGE_FILES",
]

PHASES = ("dense", "pruned", "quantized", "encoded")
# The three real files the per-stage table measures, as the paper's P, P+Q, P+Q+H.
STAGE_FILES = {"P": "stage-p.dcz", "P+Q": "stage-pq.dcz", "P+Q+H": "model.dcz"}
_CODERS = ("huffman", "ans", "fixed", "best")


def _reject_unknown(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(d) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


@dataclass(frozen=True)
class EncodeConfig:
    """How the final file is written (the ``[encode]`` table).

    Attributes:
        coder: entropy coder of the gap and index streams: ``"huffman"`` (the paper),
            ``"ans"``, ``"best"`` (smallest per stream) or ``"fixed"`` (no entropy coding).
        gap_bits: gap field width per layer, ``{"fc*": 4, "conv2": "auto"}`` shape; a value
            may be ``"auto"`` (the width that makes that layer's gap stream smallest). Layers
            not matched keep the paper's default (5 for fully connected, 8 for convolutions);
            a key that matches no pruned layer is an error.
    """

    coder: str = "huffman"
    gap_bits: Mapping[str, int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.coder not in _CODERS:
            raise ConfigError(
                f"encode.coder must be one of {', '.join(_CODERS)}, got {self.coder!r}"
            )
        if not isinstance(self.gap_bits, Mapping):
            raise ConfigError(f"encode.gap_bits must be a table, got {self.gap_bits!r}")
        for key, value in self.gap_bits.items():
            ok = value == "auto" or (
                isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 16
            )
            if not ok:
                raise ConfigError(
                    f"encode.gap_bits[{key!r}] must be an integer in 1..16 or 'auto', got {value!r}"
                )
        object.__setattr__(self, "gap_bits", MappingProxyType(dict(self.gap_bits)))

    def to_dict(self) -> dict[str, Any]:
        return {"coder": self.coder, "gap_bits": dict(self.gap_bits)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "encode") -> EncodeConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a table, got {d!r}")
        _reject_unknown(d, {"coder", "gap_bits"}, where)
        return cls(**d)


@dataclass(frozen=True)
class Recipe:
    """Everything :func:`compress` needs; one-to-one with the recipe TOML file."""

    model: str
    prune: Any  # PruneSchedule (typed loosely so this module imports without torch)
    quantize: Any  # QuantizeConfig
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    train: Any = None  # TrainConfig of dense training, or None
    dataset: str = "mnist"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "recipe") -> Recipe:
        from deep_compression.data import get_spec
        from deep_compression.models import model_names
        from deep_compression.prune import PruneSchedule
        from deep_compression.quantize import QuantizeConfig
        from deep_compression.train import TrainConfig

        allowed = {f.name for f in dataclasses.fields(cls)}
        _reject_unknown(d, allowed, where)
        for key in ("model", "prune", "quantize"):
            if key not in d:
                raise ConfigError(f"{where}: missing {key!r}")
        if d["model"] not in model_names():
            raise ConfigError(
                f"{where}: unknown model {d['model']!r}; choose one of {', '.join(model_names())}"
            )
        get_spec(d.get("dataset", "mnist"))  # validates the name
        seed = d.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{where}: seed must be an integer >= 0, got {seed!r}")
        kwargs = d.get("model_kwargs", {})
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{where}: model_kwargs must be a table, got {kwargs!r}")
        train = d.get("train")
        return cls(
            model=d["model"],
            dataset=d.get("dataset", "mnist"),
            model_kwargs=dict(kwargs),
            seed=seed,
            train=TrainConfig.from_dict(train, "train") if train is not None else None,
            prune=PruneSchedule.from_dict(d["prune"]),
            quantize=QuantizeConfig.from_dict(d["quantize"]),
            encode=EncodeConfig.from_dict(d.get("encode", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "dataset": self.dataset,
            "seed": self.seed,
            "prune": self.prune.to_dict(),
            "quantize": self.quantize.to_dict(),
            "encode": self.encode.to_dict(),
        }
        if self.train is not None:
            d["train"] = self.train.to_dict()
        return d

    def digest(self) -> str:
        """A short hash of the recipe's content, to tell runs of different recipes apart."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read a recipe TOML file.

    Raises:
        ConfigError: unreadable, invalid TOML, or invalid content (the message names the
            file and the field).
    """
    return load_config(path, Recipe.from_dict)


# --------------------------------------------------------------------------- running


@dataclass
class RunState:
    """``pipeline.json``: what each finished phase measured, and the digest of the recipe
    parts it depends on (a phase is reused only while its digest still matches, so
    changing ``[encode]`` re-encodes without re-pruning)."""

    path: Path
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path, restart: bool) -> RunState:
        path = run_dir / "pipeline.json"
        if path.exists() and not restart:
            try:
                phases = dict(json.loads(path.read_text())["phases"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{path}: unreadable run state ({e}); use --restart") from None
            return cls(path, phases)
        return cls(path)

    def done(self, phase: str, digest: str) -> bool:
        info = self.phases.get(phase)
        if info is None or info.get("digest") != digest:
            return False
        return all((self.path.parent / f).exists() for f in info.get("files", []))

    def record(self, phase: str, digest: str, info: dict[str, Any]) -> None:
        self.phases[phase] = {**info, "digest": digest}
        # A redone phase invalidates everything after it.
        for later in PHASES[PHASES.index(phase) + 1 :]:
            self.phases.pop(later, None)
        doc = {"tool_version": __version__, "phases": self.phases}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def _digest(*parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def phase_digests(recipe: Recipe, source: str) -> dict[str, str]:
    """For each phase, a digest of everything its output depends on (chained)."""
    d = recipe.to_dict()
    dense = _digest(source, d["model"], d["model_kwargs"], d["dataset"], d["seed"], d.get("train"))
    pruned = _digest(dense, d["prune"])
    quantized = _digest(pruned, d["quantize"])
    return {
        "dense": dense,
        "pruned": pruned,
        "quantized": quantized,
        "encoded": _digest(quantized, d["encode"]),
    }


def _file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def compress(
    recipe: Recipe,
    run_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    restart: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``recipe`` from a dense checkpoint (or from scratch) to a ``.dcz`` file.

    Args:
        recipe: the recipe.
        run_dir: directory for every phase's output; resumed if it holds a finished phase
            of the same recipe and starting point.
        checkpoint: dense starting checkpoint; ``None`` trains one with ``recipe.train``.
        data_dir: where the dataset is (see :mod:`deep_compression.data`).
        restart: discard the run state in ``run_dir`` and start over.
        progress: tqdm bars through training phases.
        log: where progress lines go.

    Returns:
        The report (also written as ``report.json`` / ``report.md`` in ``run_dir``).
    """
    from deep_compression.checkpoint import load_model, save_checkpoint
    from deep_compression.data import get_spec, load_dataset
    from deep_compression.encode import encode_model, load_dcz
    from deep_compression.models import build_model, count_parameters
    from deep_compression.prune import run_schedule, sparsity_report
    from deep_compression.quantize import quantization_report, quantize_, round_float16_
    from deep_compression.train import evaluate, fit, seed_everything

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is None and recipe.train is None:
        raise ConfigError("no dense checkpoint given and the recipe has no [train] table")
    if checkpoint is not None:
        source = f"checkpoint {Path(checkpoint).resolve()} {_file_digest(checkpoint)}"
    else:
        source = "train from scratch"
    digests = phase_digests(recipe, source)
    state = RunState.open(run_dir, restart)
    (run_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2, sort_keys=True))
    train, test = load_dataset(recipe.dataset, data_dir)
    spec = get_spec(recipe.dataset)
    base_meta = {
        "model": {"name": recipe.model, "kwargs": dict(recipe.model_kwargs)},
        "dataset": recipe.dataset,
        "preprocessing": spec.preprocessing,
        "seed": recipe.seed,
        "recipe_digest": recipe.digest(),
    }
    files = {p: run_dir / f"{p}.safetensors" for p in ("dense", "pruned", "quantized")}

    # ---- dense
    if state.done("dense", digests["dense"]):
        log(f"[dense] resumed from {files['dense']}")
    else:
        t0 = time.perf_counter()
        if checkpoint is not None:
            model, meta = load_model(checkpoint)
            if meta["model"]["name"] != recipe.model:
                raise ConfigError(
                    f"{checkpoint} holds {meta['model']['name']}, the recipe is for {recipe.model}"
                )
            how = f"loaded {checkpoint}"
        else:
            seed_everything(recipe.seed)
            model = build_model(recipe.model, **recipe.model_kwargs)
            log(f"[dense] training {recipe.model} for {recipe.train.epochs} epochs")
            fit(model, train, test, recipe.train, progress=progress, desc="dense")
            how = f"trained {recipe.train.epochs} epochs"
        acc = evaluate(model, test)[1]
        save_checkpoint(
            files["dense"],
            model,
            {**base_meta, "stage": "dense", "test_accuracy": acc, "test_error": 1 - acc},
        )
        state.record(
            "dense",
            digests["dense"],
            {
                "files": [files["dense"].name],
                "test_error": 1 - acc,
                "parameters": count_parameters(model),
                "seconds": round(time.perf_counter() - t0, 1),
                "how": how,
            },
        )
        log(f"[dense] {how}: test error {_pct(1 - acc)}")

    # ---- pruned
    if state.done("pruned", digests["pruned"]):
        log(f"[prune] resumed from {files['pruned']}")
    else:
        t0 = time.perf_counter()
        model, _ = load_model(files["dense"])
        n_rounds = len(recipe.prune.rounds)
        log(f"[prune] {n_rounds} rounds, {recipe.prune.total_epochs} retraining epochs")
        # The pruning phase is the long one: every finished round is saved (one file,
        # replaced atomically), so an interrupted run resumes after its last round.
        partial = run_dir / "pruned-partial.safetensors"
        done_rounds: list[dict[str, Any]] = []
        reference = None
        if partial.is_file():
            resumed, pm = load_model(partial)
            if pm.get("digest") == digests["pruned"] and 0 < len(pm["rounds"]) <= n_rounds:
                reference, model = model, resumed
                done_rounds = list(pm["rounds"])
                log(f"[prune] resumed after round {len(done_rounds)}/{n_rounds} from {partial}")

        def on_round(r: Any) -> None:
            done_rounds.append(r.to_dict())
            tmp = partial.with_suffix(".tmp")
            save_checkpoint(
                tmp, model, {**base_meta, "digest": digests["pruned"], "rounds": done_rounds}
            )
            os.replace(tmp, partial)
            log(
                f"[prune] round {r.round}/{n_rounds}: kept {_pct(r.report.kept_fraction)}, "
                f"test error {_pct(1 - r.accuracy_pruned)} pruned -> "
                f"{_pct(1 - r.accuracy_retrained)} retrained ({r.seconds:.0f}s)"
            )

        run_schedule(
            model,
            recipe.prune,
            train,
            test,
            progress=progress,
            on_round=on_round,
            start=len(done_rounds),
            reference=reference,
        )
        acc = evaluate(model, test)[1]
        report = sparsity_report(model)
        save_checkpoint(
            files["pruned"],
            model,
            {
                **base_meta,
                "stage": "pruned",
                "test_accuracy": acc,
                "test_error": 1 - acc,
                "prune": recipe.prune.to_dict(),
                "rounds": done_rounds,
            },
        )
        partial.unlink(missing_ok=True)
        state.record(
            "pruned",
            digests["pruned"],
            {
                "files": [files["pruned"].name],
                "test_error": 1 - acc,
                "kept_fraction": report.kept_fraction,
                "layers": {row.name: row.kept_fraction for row in report.layers},
                "seconds": round(time.perf_counter() - t0, 1),
            },
        )

    # ---- quantized
    if state.done("quantized", digests["quantized"]):
        log(f"[quantize] resumed from {files['quantized']}")
    else:
        t0 = time.perf_counter()
        model, _ = load_model(files["pruned"])
        qreport = quantize_(model, recipe.quantize, progress=progress)
        acc_clustered = evaluate(model, test)[1]
        log(f"[quantize] k-means ({recipe.quantize.init}): test error {_pct(1 - acc_clustered)}")
        ft = recipe.quantize.finetune
        if ft.epochs:
            fit(model, train, test, ft, progress=progress, desc="centroid fine-tune")
        if recipe.quantize.float16:
            changed = round_float16_(model)
            log(f"[quantize] rounded {changed} codebook and bias values to float16")
        acc = evaluate(model, test)[1]
        qreport = quantization_report(model)
        save_checkpoint(
            files["quantized"],
            model,
            {
                **base_meta,
                "stage": "quantized",
                "test_accuracy": acc,
                "test_error": 1 - acc,
                "quantize": recipe.quantize.to_dict(),
                "quantization": qreport.to_dict(),
            },
        )
        state.record(
            "quantized",
            digests["quantized"],
            {
                "files": [files["quantized"].name],
                "test_error_clustered": 1 - acc_clustered,
                "test_error": 1 - acc,
                "seconds": round(time.perf_counter() - t0, 1),
            },
        )
        log(f"[quantize] after fine-tuning ({ft.epochs} epochs): test error {_pct(1 - acc)}")

    # ---- encoded: three real files, P, P+Q and P+Q+H
    if state.done("encoded", digests["encoded"]):
        log(f"[encode] resumed: {run_dir / STAGE_FILES['P+Q+H']}")
    else:
        t0 = time.perf_counter()
        pruned, pmeta = load_model(files["pruned"])
        quantized, qmeta = load_model(files["quantized"])
        gap_bits = dict(recipe.encode.gap_bits)
        stage_info: dict[str, Any] = {}
        for stage, model, meta, coder in (
            # P is the paper's pruning-only storage: float32 values and fixed-width gaps.
            ("P", pruned, pmeta, "fixed"),
            ("P+Q", quantized, qmeta, "fixed"),
            ("P+Q+H", quantized, qmeta, recipe.encode.coder),
        ):
            path = run_dir / STAGE_FILES[stage]
            file_meta = {**base_meta, "stage": stage, "test_accuracy": meta["test_accuracy"]}
            file_meta["test_error"] = 1 - meta["test_accuracy"]
            rep = encode_model(model, path, metadata=file_meta, gap_bits=gap_bits, coder=coder)
            decoded, _ = load_dcz(path)
            acc = evaluate(decoded, test)[1]
            if not math.isclose(acc, meta["test_accuracy"], abs_tol=0.0):
                raise AssertionError(f"{path}: decoded accuracy {acc} != {meta['test_accuracy']}")
            stage_info[stage] = {
                "file": path.name,
                "bytes": rep.file_bytes,
                "rate": rep.rate,
                "test_error": 1 - acc,
                "coder": coder,
            }
            log(f"[encode] {stage}: {path.name} {rep.file_bytes:,} bytes, {rep.rate:.1f}x")
        state.record(
            "encoded",
            digests["encoded"],
            {
                "files": [STAGE_FILES[s] for s in STAGE_FILES],
                "stages": stage_info,
                "original_bytes": rep.original_bytes,
                "seconds": round(time.perf_counter() - t0, 1),
            },
        )

    report = build_report(run_dir, state.phases, recipe)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (run_dir / "report.md").write_text(report_markdown(report))
    return report


def build_report(run_dir: Path, phases: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The per-stage and per-layer figures of a finished run (JSON-able)."""
    from deep_compression.dcz import open_dcz
    from deep_compression.dcz.summary import summarize

    enc = phases["encoded"]
    summary = summarize(open_dcz(run_dir / STAGE_FILES["P+Q+H"]))
    original = enc["original_bytes"]
    stages = [
        {
            "stage": "dense (float32)",
            "bytes": original,
            "rate": 1.0,
            "test_error": phases["dense"]["test_error"],
        }
    ]
    for stage in STAGE_FILES:
        s = enc["stages"][stage]
        stages.append(
            {
                "stage": stage,
                "file": s["file"],
                "bytes": s["bytes"],
                "rate": s["rate"],
                "test_error": s["test_error"],
            }
        )
    seconds = sum(float(phases[p].get("seconds", 0.0)) for p in PHASES if p in phases)
    return {
        "model": recipe.model,
        "dataset": recipe.dataset,
        "recipe_digest": recipe.digest(),
        "tool_version": __version__,
        "stages": stages,
        "kept_fraction": phases["pruned"]["kept_fraction"],
        "test_error_pruned": phases["pruned"]["test_error"],
        "test_error_clustered": phases["quantized"]["test_error_clustered"],
        "layers": summary["layers"],
        "breakdown": summary["breakdown"],
        "streams": summary["streams"],
        "phase_seconds": {p: phases[p].get("seconds") for p in PHASES if p in phases},
        "total_seconds": round(seconds, 1),
    }


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: per-stage table, then per-layer table in the paper's columns."""
    from deep_compression.report import format_table

    stage_rows = [
        [
            s["stage"],
            s.get("file", "-"),
            f"{s['bytes']:,}",
            f"{s['rate']:.1f}x",
            f"{100 * s['test_error']:.2f}%",
        ]
        for s in report["stages"]
    ]
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
        for row in report["layers"]
    ]
    breakdown = [[k, f"{v:,}"] for k, v in report["breakdown"].items()]
    parts = [
        f"# {report['model']} on {report['dataset']}",
        "",
        "## Stages (each a real file; rate = float32 bytes of all parameters / file bytes)",
        "",
        format_table(["stage", "file", "bytes", "rate", "test error"], stage_rows),
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
        f"Wall time: {report['total_seconds']:.0f} s "
        + "("
        + ", ".join(f"{k} {v:.0f} s" for k, v in report["phase_seconds"].items() if v)
        + ").",
        "",
    ]
    return "\n".join(parts)


def copy_final(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Copy the run's final ``.dcz`` to ``out`` (e.g. ``models/lenet-5.dcz``), with its
    report next to it (``lenet-5.report.json`` and ``lenet-5.report.md``), so a shipped
    file travels with the measurements that describe it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(run_dir) / STAGE_FILES["P+Q+H"], out)
    for suffix in (".json", ".md"):
        report = Path(run_dir) / f"report{suffix}"
        if report.is_file():
            shutil.copyfile(report, out.with_name(f"{out.stem}.report{suffix}"))
    return out
