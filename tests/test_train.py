"""The shared training loop: learns, is deterministic, validates its config."""

from __future__ import annotations

import pytest
import torch

from deep_compression.errors import ConfigError
from deep_compression.models import build_model
from deep_compression.train import TrainConfig, evaluate, fit
from deep_compression.train.loop import _shift  # the augmentation, tested where it lives


@pytest.mark.mnist
def test_short_training_beats_chance_by_far(mnist_small) -> None:
    train, test = mnist_small
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    _, acc0 = evaluate(model, test)
    result = fit(model, train, test, TrainConfig(epochs=5, lr=0.1), progress=False)
    assert acc0 < 0.3  # an untrained net is near chance (10%)
    assert result.test_accuracy > 0.92  # chance is 0.10
    assert len(result.history) == 5 and result.history[-1].train_loss < result.history[0].train_loss


@pytest.mark.mnist
def test_deterministic_for_a_seed(mnist_small) -> None:
    train, _ = mnist_small
    small = type(train)(train.x[:1000], train.y[:1000])
    weights = []
    for _ in range(2):
        torch.manual_seed(1)
        model = build_model("lenet-300-100", dropout=0.2)
        fit(model, small, None, TrainConfig(epochs=1, seed=3, augment=1), progress=False)
        weights.append(model.fc1.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_shift_moves_pixels() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    out = _shift(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.sum()) == 1.0


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": -1},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"optimizer": "lbfgs"},
        {"momentum": 1.0},
        {"batch_size": 0},
        {"schedule": "warm"},
        {"augment": 20},
    ],
)
def test_bad_config(bad) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        TrainConfig.from_dict({"epochs": 1, "lr_decay": 3})


def test_named_augmentation_and_flips() -> None:
    """'crop-flip' is 4-pixel shifts plus horizontal flips; a flip mirrors whole images,
    about half of them, drawn from the augmentation generator."""
    from deep_compression.errors import ConfigError
    from deep_compression.train import TrainConfig
    from deep_compression.train.loop import _augment

    config = TrainConfig(augment="crop-flip")
    assert (config.augment, config.flip) == (4, True)
    assert TrainConfig(augment="shift").augment == 1 and "flip" not in TrainConfig().to_dict()
    assert TrainConfig.from_dict({"augment": "crop-flip"}).to_dict()["flip"] is True
    with pytest.raises(ConfigError, match="train.augment must be an integer in 0..8 or one of"):
        TrainConfig(augment="mixup")
    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4).repeat(50, 1, 1, 1)
    out = _augment(x, 0, True, torch.Generator().manual_seed(0))
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(mirrored | (out == x).flatten(1).all(1))
    assert 30 < int(mirrored.sum()) < 70
