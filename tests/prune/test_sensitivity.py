"""Sensitivity analysis: one layer at a time, checked against the std rule by hand."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deep_compression.data import Split
from deep_compression.errors import ConfigError
from deep_compression.prune import KeepFraction, get_mask, prune_
from deep_compression.prune.sensitivity import (
    SensitivityPoint,
    SensitivityResult,
    sensitivity_analysis,
    suggest_thresholds,
    write_csv,
)
from deep_compression.report.sensitivity_plot import plot_sensitivity
from deep_compression.train import evaluate


def _model_and_data() -> tuple[nn.Module, Split]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 1, 28, 28, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model is right on its own labels: accuracy 1.0
    return model, Split(x, y)


def test_one_layer_at_a_time_by_hand() -> None:
    model, data = _model_and_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = sensitivity_analysis(model, data, [0.0, 0.5, 1.0, 2.5])
    assert result.baseline == 1.0 and result.layers() == ["1", "3"]
    for layer in ("1", "3"):
        w = getattr(model, layer).weight.detach().numpy().astype(np.float64)
        curve = result.curve(layer)
        assert [p.s for p in curve] == [0.0, 0.5, 1.0, 2.5]
        assert curve[0].kept == w.size and curve[0].accuracy == 1.0
        for p in curve:
            assert p.kept == int((np.abs(w) >= p.s * np.std(w)).sum())
            # Reference: prune that layer alone on a copy, evaluate.
            ref, _ = _model_and_data()
            ref.load_state_dict(before)
            with torch.no_grad():
                lw = getattr(ref, layer).weight
                lw[lw.abs() < p.s * lw.std(correction=0)] = 0
            assert p.accuracy == evaluate(ref, data)[1]
        assert [p.kept for p in curve] == sorted((p.kept for p in curve), reverse=True)
    # The analysed model is untouched.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not hasattr(model[1], "parametrizations")


def test_already_pruned_model_and_layer_filter() -> None:
    model, data = _model_and_data()
    prune_(model, KeepFraction(0.5))
    mask = get_mask(model[1]).clone()
    result = sensitivity_analysis(model, data, [0.0, 1.0], layers=["1"])
    assert result.layers() == ["1"]
    assert result.curve("1")[0].kept == int(mask.sum())  # s = 0: the existing mask
    assert torch.equal(get_mask(model[1]), mask)
    with pytest.raises(ConfigError, match="'fc9' matches no layer"):
        sensitivity_analysis(model, data, [1.0], layers=["fc9"])
    with pytest.raises(ConfigError, match="finite number >= 0"):
        sensitivity_analysis(model, data, [-1.0])


def _result() -> SensitivityResult:
    pts = []
    for s, a1, a2 in [(0, 0.99, 0.99), (1, 0.988, 0.97), (2, 0.95, 0.96), (3, 0.989, 0.5)]:
        pts.append(SensitivityPoint("fc1", float(s), 100 - 30 * s, 100, a1))
        pts.append(SensitivityPoint("fc2", float(s), 100 - 30 * s, 100, a2))
    return SensitivityResult(0.99, tuple(pts))


def test_suggestions_stop_at_the_first_violation() -> None:
    got = {p.layer: p.s for p in suggest_thresholds(_result(), 0.005)}
    # fc1: s=1 loses 0.002, s=2 loses 0.04 (stop; s=3 recovering is noise).
    assert got == {"fc1": 1.0, "fc2": 0.0}
    assert {p.layer: p.s for p in suggest_thresholds(_result(), 0.05)} == {"fc1": 3.0, "fc2": 2.0}
    with pytest.raises(ConfigError, match="budget"):
        suggest_thresholds(_result(), -0.1)


def test_csv_and_png(tmp_path: Path) -> None:
    result = _result()
    path = write_csv(result, tmp_path / "s.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 8 and rows[0]["layer"] == "fc1"
    assert float(rows[2]["kept_fraction"]) == pytest.approx(0.7)
    assert float(rows[4]["accuracy_loss"]) == pytest.approx(0.04)
    png = plot_sensitivity(result, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
