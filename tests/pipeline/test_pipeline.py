"""The whole pipeline on a tiny recipe: files, tables, resume, recipe validation."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from deep_compression.dcz import decode, open_dcz
from deep_compression.dcz.summary import summarize
from deep_compression.errors import ConfigError, DeepCompressionError
from deep_compression.phases import test_error as error_of  # not collected as a test
from deep_compression.pipeline import STAGE_FILES, compress, copy_final
from deep_compression.recipe import NoRetrainRecipe, Recipe, load_any_recipe, load_recipe
from deep_compression.records import RunReport

TINY = """
model = "lenet-300-100"
seed = 3
[train]
epochs = 1
[prune.retrain]
epochs = 1
lr = 0.01
[[prune.rounds]]
criteria."*" = { method = "fraction", keep = 0.2 }
[[prune.rounds]]
criteria."*" = { method = "fraction", keep = 0.1 }
criteria.fc3 = { method = "none" }
retrain = { epochs = 0 }
[quantize]
bits = { "*" = 4, "fc3" = 6 }
[quantize.finetune]
epochs = 1
[encode]
coder = "huffman"
"""


def tiny() -> Recipe:
    return Recipe.from_dict(tomllib.loads(TINY))


@pytest.mark.mnist
def test_compress_end_to_end_and_resume(mnist, tmp_path: Path) -> None:
    lines: list[str] = []
    report = compress(tiny(), tmp_path, progress=False, log=lines.append)
    for name in ("dense", "pruned", "quantized"):
        assert (tmp_path / f"{name}.safetensors").is_file()
    stages = {s.stage: s for s in report.stages}
    sizes = [(tmp_path / STAGE_FILES[s]).stat().st_size for s in ("P", "P+Q", "P+Q+H")]
    # The table reports the real file sizes, and each stage shrinks the file.
    assert [stages[s].bytes for s in ("P", "P+Q", "P+Q+H")] == sizes
    assert sizes[0] > sizes[1] > sizes[2]
    original = stages["dense (float32)"].bytes
    assert original == 4 * 266_610
    assert stages["P+Q+H"].rate == pytest.approx(original / sizes[2])
    # The stage files are info's stages, byte for byte: one definition.
    summary = summarize(open_dcz(tmp_path / "model.dcz"))
    assert {s: v["bytes"] for s, v in summary["stages"].items()} == {
        s: stages[s].bytes for s in ("P", "P+Q", "P+Q+H")
    }
    # Every stage file decodes to the same model (storage differs, not the weights).
    arrays = [decode(tmp_path / STAGE_FILES[s])[0] for s in ("P", "P+Q", "P+Q+H")]
    for name in arrays[2]:
        assert np.array_equal(arrays[0][name], arrays[2][name])
        assert np.array_equal(arrays[1][name], arrays[2][name])
    errors = {p.phase: p.test_error for p in report.phases}
    assert errors["decoded"] == errors["quantized"] < 0.2
    # The recipe holds out the default 5,000 training images: every phase was measured
    # on them (the decisions' split) and, for the report, on the test set.
    val = {p.phase: p.val_error for p in report.phases}
    assert all(v is not None and 0 <= v < 0.2 for v in val.values())
    assert val["decoded"] == val["quantized"] and val["dense"] != errors["dense"]
    assert lines[0].startswith("[data] decisions on 5,000 images (held out of the training images")
    assert "validation error" in (tmp_path / "report.md").read_text()
    layers = {row["name"]: row for row in report.layers}
    assert layers["fc3.weight"]["kept_pct"] == pytest.approx(20.0)
    assert layers["fc1.weight"]["kept_pct"] == pytest.approx(10.0)
    saved = RunReport.from_dict(json.loads((tmp_path / "report.json").read_text()))
    assert saved == RunReport.from_dict(report.to_dict())
    assert "| fc1.weight |" in (tmp_path / "report.md").read_text()

    # A second run resumes every phase; changing only [encode] re-encodes only.
    lines.clear()
    compress(tiny(), tmp_path, progress=False, log=lines.append)
    assert all("reused" in line for line in lines[1:]), lines
    ans = Recipe.from_dict({**tomllib.loads(TINY), "encode": {"coder": "ans"}})
    with pytest.raises(ConfigError, match="holds a run of another recipe.*--force"):
        compress(ans, tmp_path, progress=False, log=lines.append)  # nothing replaced
    lines.clear()
    compress(ans, tmp_path, progress=False, log=lines.append, force=True)
    assert sum("reused" in line for line in lines) == 3
    assert any(line.startswith("[encode] model.dcz") for line in lines), lines

    # -o: the final file, with its report next to it.
    out = copy_final(tmp_path, tmp_path / "ship" / "tiny.dcz")
    assert out.read_bytes() == (tmp_path / STAGE_FILES["P+Q+H"]).read_bytes()
    shipped = json.loads((tmp_path / "ship" / "tiny.report.json").read_text())
    assert shipped["stages"][-1]["bytes"] == out.stat().st_size
    assert (tmp_path / "ship" / "tiny.report.md").read_text().startswith("# lenet-300-100")


class _Interrupt(Exception):
    pass


@pytest.mark.mnist
def test_pruning_resumes_after_its_last_finished_round(mnist, tmp_path: Path) -> None:
    """Killed after pruning round 1 of 2, a run resumes at round 2 and ends with the same
    file, byte for byte, as a run that was never interrupted."""
    whole = compress(tiny(), tmp_path / "whole", progress=False, log=lambda _: None)
    assert whole.stages

    def log(line: str) -> None:
        if line.startswith("[prune] round 1/2"):
            raise _Interrupt  # after the round was saved, as a kill would be
        lines.append(line)

    lines: list[str] = []
    with pytest.raises(_Interrupt):
        compress(tiny(), tmp_path / "cut", progress=False, log=log)
    assert (tmp_path / "cut" / "pruned-partial.safetensors").is_file()
    lines.clear()
    compress(tiny(), tmp_path / "cut", progress=False, log=lines.append)
    assert any("resuming after round 1/2" in line for line in lines), lines
    assert not any(line.startswith("[prune] round 1/2") for line in lines)
    assert not (tmp_path / "cut" / "pruned-partial.safetensors").exists()
    for name in STAGE_FILES.values():
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modle": "x"}, "unknown keys \\['modle'\\]"),
        ({"model": "resnet"}, "unknown model 'resnet'"),
        ({"encode": {"coder": "zip"}}, "encode.coder must be one of"),
        ({"encode": {"gap_bits": {"*": 0}}}, "gap_bits\\['\\*'\\] must be an integer in 1..16"),
        ({"quantize": {"bits": {"*": 17}}}, "quantize.bits"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
    ],
)
def test_bad_recipes(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict({**tomllib.loads(TINY), **change})


def test_missing_table_and_bad_toml(tmp_path: Path) -> None:
    doc = tomllib.loads(TINY)
    del doc["prune"]
    with pytest.raises(ConfigError, match="missing 'prune'"):
        Recipe.from_dict(doc)
    bad = tmp_path / "bad.toml"
    bad.write_text("model = ")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_recipe(bad)


def test_shipped_recipes_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "recipes"
    for name in ("lenet-300-100.toml", "lenet-5.toml"):
        recipe = load_recipe(root / name)
        assert recipe.model == name.removesuffix(".toml")
        assert recipe.train is not None and recipe.train.epochs > 0
    # Every shipped whole recipe on a built-in dataset, of either kind, parses
    # (recipes/prune/ holds [prune] tables for the prune command; recipes/examples/ name
    # image folders that a fresh checkout does not have).
    skip = {"prune", "examples"}
    for path in sorted(p for p in root.rglob("*.toml") if p.parent.name not in skip):
        recipe = load_any_recipe(path)
        if path.parent.name == "no-retrain":
            assert isinstance(recipe, NoRetrainRecipe), path
            assert recipe.no_retrain.max_error_increase == 0.1


def test_phase_context_says_the_splits_once() -> None:
    from deep_compression.data import Split
    from deep_compression.models import make_model
    from deep_compression.phases import PhaseContext

    torch.manual_seed(0)
    val = Split(torch.randn(30, 1, 28, 28), torch.randint(0, 10, (30,)))
    test = Split(torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,)))
    model = make_model("lenet-300-100")
    lines: list[str] = []
    ctx = PhaseContext(None, val, test, log=lines.append)
    assert ctx.label == "validation" and PhaseContext(None, test).label == "test"
    errors = ctx.errors(model)
    assert list(errors) == ["val_error", "test_error"]  # decisions, then the report's
    assert errors == {"val_error": error_of(model, val), "test_error": error_of(model, test)}
    assert PhaseContext(None, test).errors(model, 0.25) == {"test_error": 0.25}
    ctx.quiet().log("dropped")
    assert lines == [] and not ctx.quiet().progress
    with pytest.raises(ConfigError, match="needs a training split"):
        _ = ctx.training
    with pytest.raises(ConfigError, match="task must be one of classification"):
        PhaseContext(None, val, task="language-model")


def test_the_final_file_is_checked_and_measured_from_the_bytes_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """encode_phase never reads the file it wrote: the writer's check, the decoded model
    and the stage files all come from the bytes in memory."""
    from deep_compression import loading
    from deep_compression.data import Split
    from deep_compression.dcz.stages import stage_blobs
    from deep_compression.encode import EncodeConfig
    from deep_compression.models import make_model
    from deep_compression.phases import PhaseContext, encode_phase
    from deep_compression.phases import encode as encode_module
    from deep_compression.prune import KeepFraction, prune_
    from deep_compression.records import CheckpointMeta, ModelSpec

    def no_reading(*_: object, **__: object) -> None:
        raise AssertionError("the file was read again")

    torch.manual_seed(0)
    model = make_model("lenet-300-100")
    prune_(model, {"*": KeepFraction(0.2)})
    test = Split(torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,)))
    meta = CheckpointMeta(ModelSpec("lenet-300-100", {}), test_error=error_of(model, test))
    monkeypatch.setattr(loading, "open_dcz", no_reading)
    monkeypatch.setattr(encode_module, "open_dcz", no_reading)
    path = tmp_path / "m.dcz"
    ctx = PhaseContext(None, test)
    outcome = encode_phase(model, path, EncodeConfig(), meta, measure=ctx.errors)
    assert outcome.test_error == meta.test_error  # the decoded model, measured
    assert outcome.file.to_bytes() == path.read_bytes()
    assert outcome.report.file_bytes == path.stat().st_size
    assert len(stage_blobs(outcome.file)["P+Q+H"]) == path.stat().st_size
    # A decoded model that disagrees with the model's error is an error.
    wrong = CheckpointMeta(ModelSpec("lenet-300-100", {}), test_error=meta.test_error + 0.5)
    with pytest.raises(DeepCompressionError, match="differs from the model's"):
        encode_phase(model, tmp_path / "w.dcz", EncodeConfig(), wrong, measure=ctx.errors)
