"""A checkpoint trained elsewhere, as such checkpoints are published (a pickled
``{"state_dict": ..., "best_prec1": ...}``, every key behind DataParallel's ``module.``,
BatchNorm without ``num_batches_tracked``), the user's own model file and an image folder,
through every command: ``evaluate``, ``compress`` with a recipe, to a budget with and
without retraining, and ``shrink``. It records no split, so every decision is made on one
seeded half of the test images and the report on the other."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deep_compression.data import DatasetConfig, load_data
from deep_compression.models import make_model
from deep_compression.train import TrainConfig, fit

MODEL = str(Path(__file__).resolve().parents[1] / "examples" / "models.py") + ":resnet"
ARGS = {"depth": 8, "width": 4, "num_classes": 3}
MODEL_FLAGS = ("--model", MODEL, *(f for k, v in ARGS.items() for f in ("--model-arg", f"{k}={v}")))


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint.th, image folder)``: a small CIFAR-style ResNet trained on 8x8 RGB
    images of 3 classes (told apart by colour), saved as old PyTorch releases were."""
    root = tmp_path_factory.mktemp("published")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 40)):
        for c, colour in enumerate(((200, 60, 60), (60, 200, 60), (60, 60, 200))):
            folder = root / "data" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                px = np.clip(rng.normal(colour, 50, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(folder / f"{i}.png")
    data = load_data(DatasetConfig("imagefolder", str(root / "data")))
    torch.manual_seed(0)
    model = make_model(MODEL, ARGS, allow_code=True)
    fit(model, data.train, None, TrainConfig(epochs=3, lr=0.05, batch_size=16), progress=False)
    state = {f"module.{k}": v for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # fmt: skip
    ckpt = root / "resnet8-0123abcd.th"
    torch.save({"state_dict": state, "best_prec1": 91.5}, ckpt)
    return ckpt, root / "data"


def test_evaluate_and_a_recipe(published: tuple[Path, Path], tmp_path: Path, run_cli) -> None:
    ckpt, data = published
    ev = run_cli("evaluate", str(ckpt), *MODEL_FLAGS, "--dataset", str(data))
    assert ev.returncode == 0, ev.stderr
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'model = "{MODEL}"\nmodel_args = {{ depth = 8, width = 4, num_classes = 3 }}\n'
        f'dataset = "{data}"\n[prune.retrain]\nepochs = 1\nbatch_size = 16\n'
        '[[prune.rounds]]\ncriteria = { "*" = { method = "fraction", keep = 0.5 } }\n'
        '[quantize]\nbits = { "*" = 4 }\n[quantize.finetune]\nepochs = 0\n'
    )
    run = tmp_path / "run"
    proc = run_cli("compress", "--recipe", str(recipe), str(ckpt), "--allow-code",
                   "--out-dir", str(run), "--no-plots")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((run / "report.json").read_text())
    # No recorded split: decisions on one half of the test images, the report on the other.
    assert "one seeded part of the test images" in report["splits"]
    assert "60 images" in report["splits"] and "report on 60" in report["splits"]


def test_budgets_decide_on_half_the_test_set(
    published: tuple[Path, Path], tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    from deep_compression.budget import no_retrain_run

    search = functools.partial(no_retrain_run.compress_without_retraining, max_trials=5)
    monkeypatch.setattr(no_retrain_run, "compress_without_retraining", search)
    ckpt, data = published
    common = (str(ckpt), *MODEL_FLAGS, "--dataset", str(data), "--max-error-increase", "10")
    nr = tmp_path / "nr"
    proc = run_cli("compress", *common, "--no-retrain", "--calibration", "0", "--out-dir", str(nr))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((nr / "report.json").read_text())
    assert "one seeded part of the test images" in doc["splits"]
    assert "60 images" in doc["splits"] and "report on 60" in doc["splits"]
    assert doc["increase"]["val"]["n"] == 60
    inc = doc["increase"]["test"]
    assert inc["n"] == 60 and inc["low"] <= inc["increase"] <= inc["high"]
    assert doc["search"]["candidates"] >= 1 and doc["search"]["seconds"] > 0
    written = tomllib.loads((nr / "recipe.toml").read_text())
    assert written["validation"]["source"] == "test"  # replays on the same images
    again = tmp_path / "again"
    proc = run_cli("compress", "--recipe", str(nr / "recipe.toml"), str(ckpt), "--allow-code",
                   "--out-dir", str(again))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (again / "model.dcz").read_bytes() == (nr / "model.dcz").read_bytes()
    run = tmp_path / "budget"
    proc = run_cli("compress", *common, "--max-minutes", "0.2", "--out-dir", str(run),
                   "--no-plots")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "one seeded part of the test images" in proc.stdout
    chosen = tomllib.loads((run / "recipe.toml").read_text())
    assert chosen["validation"]["source"] == "test"
    search_doc = json.loads((run / "search.json").read_text())
    decided = [t for t in search_doc["trials"] if t["stage"] in ("prune", "bits")]
    assert decided and all(t["verdict"]["n"] <= 60 for t in decided)
    explicit = run_cli("compress", *common, "--no-retrain", "--calibration", "0",
                       "--val-from", "val", "--out-dir", str(tmp_path / "x"))  # fmt: skip
    assert explicit.returncode == 1 and "no validation split of its own" in explicit.stderr


def test_shrink_decides_on_half_the_test_set(
    published: tuple[Path, Path], tmp_path: Path, run_cli
) -> None:
    ckpt, data = published
    config = tmp_path / "shrink.toml"
    config.write_text('[shrink]\ncriterion = "l1"\nkeep = { "*" = 0.5 }\n'
                      '[shrink.retrain]\nepochs = 1\nbatch_size = 16\n')
    out = tmp_path / "shrunk.safetensors"
    proc = run_cli("shrink", str(ckpt), *MODEL_FLAGS, "--dataset", str(data), "--recipe",
                   str(config), "-o", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "one seeded part of the test images" in proc.stdout
