"""Compressing to an accuracy budget: the search keeps every decision within the limit on
the validation split, and the recipe it writes replays the run byte for byte."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from deep_compression.budget import BudgetConfig, compress_to_budget, starting_recipe
from deep_compression.budget.config import Clock
from deep_compression.budget.prune_search import layer_exponents
from deep_compression.checkpoint import read_meta, save_checkpoint
from deep_compression.data import (
    DatasetConfig,
    Split,
    ValidationConfig,
    carve_validation,
    load_data,
)
from deep_compression.errors import ConfigError
from deep_compression.models import make_model
from deep_compression.pipeline import compress, split_data
from deep_compression.recipe import load_recipe
from deep_compression.records import CheckpointMeta, ModelSpec, RunReport
from deep_compression.train import TrainConfig, fit


@pytest.fixture(scope="module")
def tiny_npz(digits_npz: Path) -> Path:
    """3,000 training and 1,000 test MNIST images as an .npz dataset (fast to train)."""
    return digits_npz


@pytest.fixture(scope="module")
def dense_ckpt(tiny_npz: Path, tmp_path_factory) -> Path:
    """LeNet-300-100 trained 3 epochs on the npz's training images minus the validation
    split it records (as ``train --val-size`` does)."""
    config = DatasetConfig("npz", str(tiny_npz))
    split = ValidationConfig("auto", 0)
    data = carve_validation(load_data(config), split)
    torch.manual_seed(0)
    model = make_model("lenet-300-100")
    fit(model, data.train, None, TrainConfig(epochs=3, lr=0.05), progress=False)
    path = tmp_path_factory.mktemp("dense") / "dense.safetensors"
    meta = CheckpointMeta(model=ModelSpec("lenet-300-100", {}), stage="dense",
                          dataset=config.label, preprocessing=data.info.preprocessing,
                          details={"dataset_source": config.to_dict(),
                                   "validation": split.to_dict()})  # fmt: skip
    save_checkpoint(path, model, meta)
    return path


def v_images(search: dict) -> int:
    """The validation images of a budget run (the most any verdict compared)."""
    return max(t["verdict"]["n"] for t in search["trials"] if t.get("verdict"))


QUICK = dict(round_epochs=1, polish_epochs=1, finetune_epochs=1, max_rounds=3, bits=(5, 4),
             min_bits=3, first_keep=0.3, step=0.4)  # fmt: skip


@pytest.mark.mnist
def test_search_stays_within_the_limit_and_its_recipe_replays_byte_for_byte(
    dense_ckpt: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    recipe = starting_recipe(dense_ckpt, log=lines.append)
    assert recipe.validation == ValidationConfig("auto", 0)  # read from the checkpoint
    assert not any("does not record" in line for line in lines)
    config = BudgetConfig(3.0, **QUICK)  # 300 validation images resolve a few points
    report, chosen = compress_to_budget(recipe, dense_ckpt, tmp_path / "run", config,
                                        log=lines.append)  # fmt: skip
    search = json.loads((tmp_path / "run" / "search.json").read_text())
    limit = search["limit_val_error"]
    dense_val = report.phase("dense").val_error
    assert limit == pytest.approx(dense_val + 0.03)
    # Every decision was a paired comparison with the dense model on validation images:
    # kept exactly when the upper bound of the increase is within the budget.
    decided = [t for t in search["trials"] if t["stage"] in ("prune", "bits")]
    assert decided and search["config"]["confidence"] == 0.9
    for t in decided:
        v = t["verdict"]
        assert t["accepted"] == v["accepted"] == (v["high"] <= 3.0), t
        if v["n"] == v_images(search):  # evaluated on every image: the same error
            assert v["candidate"] == pytest.approx(100 * t["val_error"], abs=1e-4)
        assert v["low"] <= v["increase"] <= v["high"]
    assert report.phase("decoded").val_error <= limit
    assert report.phase("decoded").test_error is not None
    assert report.kept_fraction < 0.5 and report.final.rate > 10
    assert [r for r in chosen.prune.rounds][-1].retrain == {"epochs": 1}  # the polish
    # The recipe file loads back to the chosen recipe and replays the run exactly.
    written = load_recipe(tmp_path / "run" / "recipe.toml")
    assert written.to_dict() == chosen.to_dict()
    text = (tmp_path / "run" / "recipe.toml").read_text()
    assert text.startswith("# Chosen by deep-compression") and "limit" in text
    compress(written, tmp_path / "replay", checkpoint=dense_ckpt, progress=False,
             log=lambda _: None)  # fmt: skip
    first = (tmp_path / "run" / "model.dcz").read_bytes()
    assert (tmp_path / "replay" / "model.dcz").read_bytes() == first
    # The same search again resumes the run: every phase reused, the search too.
    lines.clear()
    again, same = compress_to_budget(recipe, dense_ckpt, tmp_path / "run", config,
                                     log=lines.append)  # fmt: skip
    assert same == chosen and again == report
    assert sum("reused" in line for line in lines) == 5, lines  # dense, plan, 3 more
    assert (tmp_path / "run" / "model.dcz").read_bytes() == first
    # Another budget is another run: not replaced without force.
    with pytest.raises(ConfigError, match="holds a run of another"):
        compress_to_budget(recipe, dense_ckpt, tmp_path / "run", replace(config, seed=1))


@pytest.mark.mnist
def test_a_checkpoint_without_a_recorded_split_is_flagged(tiny_npz: Path, tmp_path: Path) -> None:
    config = DatasetConfig("npz", str(tiny_npz))
    path = tmp_path / "plain.safetensors"
    save_checkpoint(path, make_model("lenet-300-100"),
                    CheckpointMeta(model=ModelSpec("lenet-300-100", {}), dataset=config.label,
                                   details={"dataset_source": config.to_dict()}))  # fmt: skip
    lines: list[str] = []
    recipe = starting_recipe(path, log=lines.append)
    assert recipe.validation.enabled and "does not record" in lines[0]
    with pytest.raises(ConfigError, match="validation split"):
        starting_recipe(path, validation=ValidationConfig(0))
    # The model may have seen every training image: decisions go to half the test set.
    meta = read_meta(path)
    data, resolved = split_data(recipe, meta, from_checkpoint=True, log=lines.append)
    assert resolved.validation == ValidationConfig("auto", 0, "test")
    assert (len(data.train), len(data.val), len(data.test)) == (3000, 500, 500)
    full = load_data(config).test
    both = torch.cat([data.val.y, data.test.y]).sort().values
    assert torch.equal(both, full.y.sort().values)  # the two parts make up the test set
    assert "one seeded part of the test images" in lines[-1]
    # Chosen explicitly, training images stay possible, with a warning.
    explicit = replace(recipe, validation=ValidationConfig(1000, 0, "train"))
    data, _ = split_data(explicit, meta, from_checkpoint=True, log=lines.append)
    assert (len(data.train), len(data.val), len(data.test)) == (2000, 1000, 1000)
    assert any("only honest if the model never saw them" in line for line in lines)


class _Three(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 256)
        self.b = nn.Linear(256, 32)
        self.c = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x.flatten(1))))))


def test_exponents_follow_the_size_prior_and_halve_fragile_layers() -> None:
    torch.manual_seed(0)
    model = _Three()
    x = torch.randn(200, 64)
    val = Split(x, model(x).argmax(1).detach())  # the model's own labels: 0% error
    sizes = {"a": 64 * 256, "b": 256 * 32, "c": 32 * 4}
    prior = {n: max(0.1, (math.log(s) / math.log(sizes["a"])) ** 2) for n, s in sizes.items()}
    got = layer_exponents(model, val, delta=1.0, trials=[], clock=Clock(None))
    assert got == pytest.approx(prior)  # nothing is fragile at a 100-point tolerance
    fragile = layer_exponents(model, val, delta=0.0, trials=[], clock=Clock(None))
    for n in sizes:  # halving a layer changes some labels: every layer is now fragile
        assert fragile[n] == pytest.approx(prior[n] / 2)


def test_the_time_budget_cuts_epochs() -> None:
    from deep_compression.budget import _plan

    config = BudgetConfig(0.5, max_minutes=1.0)
    assert _plan(BudgetConfig(0.5), 100.0, 4) == BudgetConfig(0.5)
    quick = _plan(config, 10.0, 4)  # 10 s epochs cannot fill 82 epochs in a minute
    assert quick.round_epochs == quick.finetune_epochs == 1 and quick.polish_epochs < 15
    assert _plan(config, 0.01, 4) == config
    with pytest.raises(ConfigError):
        BudgetConfig(-1)


@pytest.mark.mnist
def test_cli_budget_and_no_retrain_runs(
    dense_ckpt: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    from deep_compression.budget import no_retrain_run

    # Sizing each no-retrain candidate with every coder takes seconds: 6 of them here.
    search = functools.partial(no_retrain_run.compress_without_retraining, max_trials=6)
    monkeypatch.setattr(no_retrain_run, "compress_without_retraining", search)
    run = tmp_path / "run"
    common = (str(dense_ckpt), "--max-error-increase", "1", "--no-plots")
    # A time budget this small leaves one epoch per step and stops pruning early.
    proc = run_cli("compress", *common, "--max-minutes", "0.2", "--out-dir", str(run),
                   "-o", str(tmp_path / "small.dcz"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "chosen recipe:" in proc.stdout and "validation error" in proc.stdout
    assert (tmp_path / "small.dcz").read_bytes() == (run / "model.dcz").read_bytes()
    again = run_cli("compress", *common, "--out-dir", str(run))
    assert again.returncode == 1 and "holds a run" in again.stderr
    check_run_directory(run_cli, run, "budget")
    nr = tmp_path / "nr"
    nr_args = (*common, "--no-retrain", "--calibration", "0", "--out-dir", str(nr))
    proc = run_cli("compress", *nr_args)
    assert proc.returncode == 0, proc.stderr
    assert "chosen recipe:" in proc.stdout and "## Search" in proc.stdout
    report = check_run_directory(run_cli, nr, "no-retrain")
    assert "0 calibration images" in report.search.chosen  # data-free: only the check
    assert report.final.bytes == (nr / "model.dcz").stat().st_size
    assert report.phase("decoded").val_error <= report.phase("dense").val_error + 0.01 + 1e-9
    assert report.increase["val"]["high"] <= 1.0  # paired, within the budget
    # Run again, the run resumes (nothing searched or written again); --restart redoes it.
    first = (nr / "model.dcz").read_bytes()
    proc = run_cli("compress", *nr_args)
    assert proc.returncode == 0, proc.stderr
    assert "[plan] reused" in proc.stderr and "[encoded] reused" in proc.stderr
    proc = run_cli("compress", *nr_args, "--restart")
    assert proc.returncode == 0, proc.stderr
    assert (nr / "model.dcz").read_bytes() == first
    for bad, message in [
        (("--no-retrain",), "goes with --max-error-increase"),
        (("--max-minutes", "3"), "goes with --max-error-increase"),
        (("--calibration", "8", "--max-error-increase", "1"), "goes with --no-retrain"),
    ]:
        proc = run_cli("compress", str(dense_ckpt), *bad, "--out-dir", str(tmp_path / "x"))
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    proc = run_cli("compress", str(dense_ckpt), "--out-dir", str(tmp_path / "x"))
    assert proc.returncode == 1 and "--recipe" in proc.stderr


def check_run_directory(run_cli, run: Path, kind: str) -> RunReport:
    """``report`` and ``info`` on a finished run directory of any kind: the typed report,
    the final file's tables, and the state every phase recorded."""
    report = RunReport.from_dict(json.loads((run / "report.json").read_text()))
    assert report.search is not None and report.search.kind == kind
    assert set(report.increase) == {"val", "test"}
    state = json.loads((run / "pipeline.json").read_text())
    assert {"dense", "plan", "quantized", "encoded"} <= set(state["phases"])
    assert ("pruned" in state["phases"]) == (kind == "budget")
    proc = run_cli("report", str(run), "--no-sensitivity")
    assert proc.returncode == 0, proc.stderr
    assert "## Search" in proc.stdout and "Increase over dense on test" in proc.stdout
    assert (run / "plots" / "layers.png").is_file()
    proc = run_cli("info", str(run / "model.dcz"))
    assert proc.returncode == 0, proc.stderr
    assert f"{report.final.bytes:,}" in proc.stdout
    return report


@pytest.mark.mnist
def test_no_retrain_search_writes_a_recipe_that_replays_byte_for_byte(
    dense_ckpt: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With calibration images the search tries both weightings; the recipe.toml it
    leaves quantizes once with the chosen setting and gives the same file."""
    import functools

    from deep_compression.budget import no_retrain_run
    from deep_compression.recipe import NoRetrainRecipe, load_any_recipe

    search = functools.partial(no_retrain_run.compress_without_retraining, max_trials=4)
    monkeypatch.setattr(no_retrain_run, "compress_without_retraining", search)
    nr = tmp_path / "nr"
    proc = run_cli("compress", str(dense_ckpt), "--max-error-increase", "1", "--no-retrain",
                   "--calibration", "64", "--out-dir", str(nr))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "[no-retrain] gptq-fisher" in proc.stderr and "[no-retrain] weights" in proc.stderr
    report = RunReport.from_dict(json.loads((nr / "report.json").read_text()))
    trials = json.loads((nr / "search.json").read_text())["trials"]
    ok = [t for t in trials if t["accepted"]]  # paired: the bound within the budget
    assert ok and all(t["high"] <= 1.0 for t in ok)
    best = min(ok, key=lambda t: t["file_bytes"])
    written = load_any_recipe(nr / "recipe.toml")
    assert isinstance(written, NoRetrainRecipe)
    assert written.no_retrain.max_error_increase is None  # quantize once, no search
    config = written.no_retrain.config
    assert (config.importance, config.lam) == (best["importance"], best["lam"])
    assert written.no_retrain.calibration == 64
    # The search sized the file it chose exactly.
    assert report.final.bytes == best["file_bytes"] == (nr / "model.dcz").stat().st_size
    # The checkpoint's recorded split, its source made explicit.
    assert written.validation == replace(starting_recipe(dense_ckpt).validation, source="train")
    again = tmp_path / "again"
    proc = run_cli("compress", "--recipe", str(nr / "recipe.toml"), str(dense_ckpt),
                   "--out-dir", str(again))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (again / "model.dcz").read_bytes() == (nr / "model.dcz").read_bytes()
    # The recipe is no pipeline recipe, and it needs a checkpoint.
    with pytest.raises(ConfigError, match="no_retrain"):
        load_recipe(nr / "recipe.toml")
    proc = run_cli("compress", "--recipe", str(nr / "recipe.toml"), "--train",
                   "--out-dir", str(tmp_path / "x"))  # fmt: skip
    assert proc.returncode == 1 and "CHECKPOINT" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"model": "lenet-5", "no_retrain": {"lam": 1e-6}, "prune": {}}, r"has no \[prune\]"),
        ({"model": "lenet-5", "no_retrain": {}}, "give max_error_increase"),
        ({"model": "lenet-5", "no_retrain": {"lam": 1e-6, "bogus": 1}}, "unknown keys"),
        ({"model": "lenet-5", "no_retrain": {"lam": 1e-6, "importance": "gptq",
                                             "calibration": 0}}, "needs calibration"),
        ({"no_retrain": {"lam": 1e-6}}, "missing 'model'"),
    ],
)  # fmt: skip
def test_no_retrain_recipe_errors(table: dict, message: str) -> None:
    from deep_compression.recipe import NoRetrainRecipe

    with pytest.raises(ConfigError, match=message):
        NoRetrainRecipe.from_dict(table)
