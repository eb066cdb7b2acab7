"""Schedules: TOML <-> dataclass, validation, and an iterative run on a small problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from deep_compression.data import Split
from deep_compression.errors import ConfigError
from deep_compression.layer_config import check_patterns
from deep_compression.models import build_model, model_names
from deep_compression.prune import KeepFraction, get_mask, prunable_layers
from deep_compression.prune.schedule import (
    RETRAIN_DEFAULTS,
    PruneSchedule,
    load_schedule,
    run_schedule,
)
from deep_compression.train import TrainConfig, fit

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "prune"

GOOD = """
[quantize]            # another stage's table: ignored here
bits = 5

[prune]
calibration_size = 64

[prune.retrain]
epochs = 2
lr = 0.01

[[prune.rounds]]
criteria = { "*" = { method = "fraction", keep = 0.5 } }

[[prune.rounds]]
criteria."*" = { method = "std", s = 1.0 }
criteria.fc3 = { method = "none" }
retrain = { epochs = 3, augment = 1 }
"""


def test_toml_maps_onto_the_dataclass(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(GOOD)
    schedule = load_schedule(path)
    assert schedule.calibration_size == 64 and schedule.scale_dropout is True
    # Keys absent from [prune.retrain] take the retraining defaults, not dense training's.
    assert schedule.retrain == TrainConfig.from_dict(
        {**RETRAIN_DEFAULTS.to_dict(), "epochs": 2, "lr": 0.01}
    )
    assert schedule.rounds[0].criteria == {"*": KeepFraction(0.5)}
    assert schedule.retrain_config(1).epochs == 3 and schedule.retrain_config(1).augment == 1
    assert schedule.retrain_config(1).lr == 0.01
    assert schedule.total_epochs == 5 and not schedule.needs_calibration
    assert PruneSchedule.from_dict(schedule.to_dict()) == schedule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepochs = 1\n", r"no \[prune\] table"),
        ("[prune]\nrounds = []\n", "at least one"),
        ("[prune]\nretrain = {}\n", "at least one"),
        (
            "[prune]\nthreshold = 3\n[[prune.rounds]]\ncriteria = {'*' = {method='none'}}\n",
            r"unknown keys \['threshold'\]",
        ),
        (
            "[[prune.rounds]]\ncriteria = {'*' = {method='none'}}\nepochs = 3\n",
            r"prune.rounds\[1\]: unknown keys \['epochs'\]",
        ),
        ("[[prune.rounds]]\nretrain = {epochs = 1}\n", r"prune.rounds\[1\]: missing 'criteria'"),
        (
            "[[prune.rounds]]\ncriteria = {'*' = {method='std', s=-1}}\n",
            r"prune.rounds\[1\].criteria.\*: std threshold s must be a finite number >= 0",
        ),
        (
            "[[prune.rounds]]\ncriteria = {'*' = {method='fraction', keep=1.5}}\n",
            r"fraction in \(0, 1\], got 1.5",
        ),
        (
            "[[prune.rounds]]\ncriteria = {'*' = {method='none'}}\nretrain = {lr = -1}\n",
            r"prune.rounds\[1\].retrain",
        ),
        (
            "[prune.retrain]\nepoch = 1\n[[prune.rounds]]\ncriteria = {'*' = {method='none'}}\n",
            r"prune.retrain: unknown keys \['epoch'\]",
        ),
        (
            "[prune]\ncalibration_size = 0\n[[prune.rounds]]\ncriteria = {'*' = {method='none'}}\n",
            "calibration_size must be an integer >= 1",
        ),
        ("[prune\n", "invalid TOML"),
    ],
)
def test_bad_recipes_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_schedule(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _toy_problem() -> tuple[Split, Split]:
    """A learnable 10-class problem: the label is the brightest of 10 pixel blocks."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 1, 28, 28, generator=gen) * 0.3
    y = torch.randint(0, 10, (600,), generator=gen)
    for i in range(600):
        r = int(y[i]) * 2
        x[i, 0, r : r + 2, :] += 1.5
    return Split(x[:500], y[:500]), Split(x[500:], y[500:])


def test_iterative_run_shrinks_masks_and_retrains() -> None:
    train, test = _toy_problem()
    torch.manual_seed(0)
    # Any module works; a small MLP keeps the test fast.
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.4), nn.Linear(64, 10)
    )
    dense = fit(model, train, test, TrainConfig(epochs=3, batch_size=50), progress=False)
    assert dense.test_accuracy > 0.9
    schedule = PruneSchedule.from_dict(
        {
            "retrain": {"epochs": 1, "lr": 0.05, "batch_size": 50},
            "rounds": [
                {"criteria": {"*": {"method": "fraction", "keep": 0.5}}},
                {"criteria": {"*": {"method": "activation", "keep": 0.2}}},
                {
                    "criteria": {"*": {"method": "std", "s": 1.0}, "4": {"method": "none"}},
                    "retrain": {"epochs": 2},
                },
            ],
            "calibration_size": 100,
        }
    )
    seen = []
    results = run_schedule(model, schedule, train, test, progress=False, on_round=seen.append)
    assert seen == results and [r.round for r in results] == [1, 2, 3]
    kept = [r.report.kept_fraction for r in results]
    assert kept[0] == pytest.approx(0.5, abs=1e-3) and kept[1] == pytest.approx(0.2, abs=1e-3)
    assert kept[2] < kept[1]
    assert [r.epochs for r in results] == [1, 1, 2]
    assert results[-1].accuracy_retrained > 0.9  # chance is 0.1: retraining worked
    # Dropout follows sqrt(kept) of the layer each module follows.
    kept_fc1 = results[-1].report.kept_fractions()["1"]
    assert model[3].p == pytest.approx(0.4 * kept_fc1**0.5)
    assert results[-1].dropout == {"3": model[3].p}
    assert results[-1].report.kept_fractions()["4"] == pytest.approx(0.2, abs=1e-3)
    for layer in prunable_layers(model).values():
        assert torch.count_nonzero(layer.weight[~get_mask(layer)]) == 0


def test_resumed_run_equals_the_uninterrupted_one() -> None:
    """run_schedule(start=k, reference=dense) on the state after round k ends where the
    whole run ends: same masks, weights and (dropout-scaled) rates."""
    import copy

    train, test = _toy_problem()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.4), nn.Linear(64, 10)
    )
    fit(model, train, test, TrainConfig(epochs=1, batch_size=50), progress=False)
    dense = copy.deepcopy(model)
    schedule = PruneSchedule.from_dict(
        {
            "retrain": {"epochs": 1, "lr": 0.05, "batch_size": 50},
            "rounds": [
                {"criteria": {"*": {"method": "fraction", "keep": 0.5}}},
                {"criteria": {"*": {"method": "fraction", "keep": 0.2}}},
            ],
        }
    )
    snapshots = []
    run_schedule(
        model, schedule, train, test, progress=False,
        on_round=lambda r: snapshots.append(copy.deepcopy(model)),
    )  # fmt: skip
    resumed = snapshots[0]
    resumed[3].p = 0.4  # a fresh process rebuilds the model with its original rate
    results = run_schedule(resumed, schedule, train, test, progress=False, start=1, reference=dense)
    assert [r.round for r in results] == [2]
    assert resumed[3].p == model[3].p < 0.4
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="start must be in 0..2"):
        run_schedule(resumed, schedule, train, test, progress=False, start=3)


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_parse_and_fit_their_model(recipe: Path) -> None:
    schedule = load_schedule(recipe)
    # Recipes are named after their model: lenet-5.toml, lenet-300-100-margin.toml...
    name = max((m for m in model_names() if recipe.stem.startswith(m)), key=len)
    model: nn.Module = build_model(name)
    for r in schedule.rounds:
        check_patterns(r.criteria, prunable_layers(model), "criteria")
    assert schedule.total_epochs > 0


def test_both_lenet_recipes_are_shipped() -> None:
    assert {"lenet-300-100.toml", "lenet-5.toml"} <= {p.name for p in RECIPES.glob("*.toml")}
