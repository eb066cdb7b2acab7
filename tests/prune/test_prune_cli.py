"""``deep-compression prune``, ``sensitivity`` and ``neuron`` end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from deep_compression.checkpoint import save_checkpoint
from deep_compression.loading import load_model
from deep_compression.models import build_model
from deep_compression.prune import get_mask

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "weights.csv"


def _checkpoint(tmp_path: Path, dropout: float = 0.0) -> Path:
    torch.manual_seed(0)
    model = build_model("lenet-300-100", dropout=dropout)
    meta = {
        "stage": "dense",
        "model": {"name": "lenet-300-100", "kwargs": {"dropout": dropout}},
        "dataset": "mnist",
    }
    return save_checkpoint(tmp_path / "dense.safetensors", model, meta)


RECIPE = """
[prune.retrain]
epochs = 1
lr = 0.05

[[prune.rounds]]
criteria = { "*" = { method = "fraction", keep = 0.2 }, fc3 = { method = "none" } }
retrain = { epochs = 0 }

[[prune.rounds]]
criteria = { "*" = { method = "fraction", keep = 0.1 }, fc3 = { method = "std", s = 0.5 } }
"""


@pytest.mark.mnist
def test_prune_command(mnist, tmp_path: Path, run_cli) -> None:
    ckpt = _checkpoint(tmp_path, dropout=0.5)
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    out = tmp_path / "pruned.safetensors"
    proc = run_cli("prune", str(ckpt), "--recipe", str(recipe), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"pruning {ckpt}") and "2 rounds, 1 retraining epochs" in lines[0]
    assert any(line.startswith("[prune] round 1/2: kept ") for line in lines), lines
    assert "| layer | weights |" in proc.stdout and "| fc1   | 235,200 | 23,520 | 10.00% |" in (
        proc.stdout
    )
    model, meta = load_model(out)
    prune = meta.details["prune"]
    assert meta.stage == "pruned" and prune["schedule"]["rounds"][0]["criteria"]
    assert prune["layers"]["fc1"] == pytest.approx(0.1)
    assert int(get_mask(model.fc1).sum()) == 23_520
    assert meta.test_error < 0.2  # one epoch of retraining from random weights
    # Dropout scaled per module by sqrt(kept fraction); the model-wide value is the max.
    rates = prune["dropout"]
    assert rates["drop1"] == pytest.approx(0.5 * 0.1**0.5)
    assert meta.model.kwargs["dropout"] == max(rates.values())
    assert len(prune["rounds"]) == 2


def test_bad_recipe_is_one_line(tmp_path: Path, run_cli) -> None:
    ckpt = _checkpoint(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text("[[prune.rounds]]\ncriteria = { fc1 = { method = 'fraction', keep = 0 } }\n")
    proc = run_cli("prune", str(ckpt), "--out", str(tmp_path / "o.safetensors"))
    assert proc.returncode == 2  # argparse-level check: --recipe is required
    proc = run_cli("prune", str(ckpt), "--recipe", str(recipe), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "--out" in proc.stderr  # the suffix is checked first
    proc = run_cli(
        "prune", str(ckpt), "--recipe", str(recipe), "--out", str(tmp_path / "o.safetensors")
    )
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert r"prune.rounds[1].criteria.fc1: keep fraction must be a fraction in (0, 1]" in (
        proc.stderr
    )


@pytest.mark.mnist
def test_sensitivity_command(mnist, tmp_path: Path, run_cli) -> None:
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "sens"
    proc = run_cli(
        "sensitivity",
        str(ckpt),
        "--out",
        str(out),
        "--thresholds",
        "0,1,2",
        "--limit",
        "300",
        "--budget",
        "100",
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "sensitivity.csv").open()))
    assert [r["layer"] for r in rows] == ["fc1"] * 3 + ["fc2"] * 3 + ["fc3"] * 3
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    # With a budget of 100 points every threshold qualifies: the largest is suggested.
    assert 'fc1 = { method = "std", s = 2 }' in proc.stdout


def test_neuron_command(run_cli) -> None:
    proc = run_cli("neuron", str(EXAMPLE), "--tolerance", "0.05")
    assert proc.returncode == 0, proc.stderr
    assert "exact dynamic programming, proved optimal" in proc.stdout
    assert "pre-activation: full" in proc.stdout and "removed" in proc.stdout
    proc = run_cli("neuron", str(EXAMPLE), "--method", "greedy")
    assert "GREEDY" in proc.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [("weight,input\n1,abc\n", "line 2: input 'abc' is not a number"), ("", "no data rows")],
)
def test_neuron_bad_csv_is_one_line(tmp_path: Path, text: str, message: str, run_cli) -> None:
    path = tmp_path / "w.csv"
    path.write_text(text)
    proc = run_cli("neuron", str(path))
    assert proc.returncode == 1 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
