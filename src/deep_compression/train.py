"""One seeded train/evaluate loop, reused by every phase: dense training, retraining after
pruning, centroid fine-tuning after quantization.

Pruning masks and codebooks live on the model as parametrizations, so this loop needs no
knowledge of them: it trains whatever ``model.parameters()`` holds, and masked weights
stay zero because the mask is applied in every forward pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from deep_compression.data import Split
from deep_compression.errors import ConfigError
from deep_compression.progress import log, progress_bar
from deep_compression.recipe_io import from_table

__all__ = ["TrainConfig", "EpochStats", "TrainResult", "fit", "evaluate", "seed_everything"]

_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (or retrain). One-to-one with a ``[train]`` table in a recipe.

    Attributes:
        epochs: passes over the training set (0 is allowed: nothing is trained).
        batch_size: images per step.
        optimizer: ``"sgd"`` (with momentum, Nesterov) or ``"adam"``.
        lr: initial learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty coefficient (coupled, as in Caffe and the paper).
        schedule: ``"cosine"`` (to 0 at the end), ``"step"`` (x0.1 at 50% and 75%) or
            ``"constant"``.
        augment: random translations of up to ``augment`` pixels (0 disables).
        seed: seeds the initial weights (when training from scratch), shuffling, dropout
            and augmentation.
    """

    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    augment: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"train.{name} {why}, got {getattr(self, name)!r}")

        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise bad("epochs", "must be an integer >= 0")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("batch_size", "must be an integer >= 1")
        if self.optimizer not in _OPTIMIZERS:
            raise bad("optimizer", f"must be one of {_OPTIMIZERS}")
        if self.schedule not in _SCHEDULES:
            raise bad("schedule", f"must be one of {_SCHEDULES}")
        if not isinstance(self.lr, int | float) or not (0 < self.lr < math.inf):
            raise bad("lr", "must be a positive number")
        if not isinstance(self.momentum, int | float) or not 0 <= self.momentum < 1:
            raise bad("momentum", "must be in [0, 1)")
        if not isinstance(self.weight_decay, int | float) or not 0 <= self.weight_decay < 1:
            raise bad("weight_decay", "must be in [0, 1)")
        if not isinstance(self.augment, int) or not 0 <= self.augment <= 8:
            raise bad("augment", "must be an integer in 0..8")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be an integer >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, overrides: object, where: str) -> TrainConfig:
        """This config with the fields of the table ``overrides`` replaced (a round's
        ``retrain = { epochs = 8 }`` over the schedule's ``[prune.retrain]``)."""
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{where}: expected a table of training settings, got {overrides!r}")
        return TrainConfig.from_dict({**self.to_dict(), **overrides}, where)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "train") -> TrainConfig:
        """Build from a recipe table; unknown keys are a :class:`ConfigError`."""
        return from_table(cls, d, where)


@dataclass
class EpochStats:
    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    """Per-epoch statistics and the final test accuracy of one :func:`fit` call."""

    history: list[EpochStats] = field(default_factory=list)
    test_accuracy: float = float("nan")

    @property
    def test_error(self) -> float:
        return 1.0 - self.test_accuracy

    @property
    def seconds_per_epoch(self) -> float:
        return sum(h.seconds for h in self.history) / max(1, len(self.history))


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (initial weights, dropout)."""
    torch.manual_seed(seed)


def _lr_at(config: TrainConfig, step: int, total: int) -> float:
    frac = step / max(1, total)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    if config.schedule == "step":
        return config.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
    return config.lr


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image in ``x`` (N, C, H, W) by up to ``max_shift`` pixels, zero fill
    in normalised space being the background's value (the minimum of the batch)."""
    n, _, h, w = x.shape
    pad = max_shift
    background = x.amin()
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=float(background))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # (N, 1, 1, W)
    idx_n = torch.arange(n)[:, None, None, None]
    return padded[idx_n, torch.arange(x.shape[1])[None, :, None, None], rows, cols]


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``split`` (eval mode)."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, len(split), batch_size):
        x, y = split.x[i : i + batch_size], split.y[i : i + batch_size]
        logits = model(x)
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    n = max(1, len(split))
    return total_loss / n, correct / n


def fit(
    model: nn.Module,
    train: Split,
    test: Split | None,
    config: TrainConfig,
    *,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place on ``train`` and evaluate on ``test`` after each epoch.

    Deterministic for a given ``config.seed`` (and thread count): shuffling and
    augmentation use their own generator, dropout uses torch's global one, seeded here.

    Args:
        model: any module mapping ``(N, 1, 28, 28)`` to ``(N, classes)`` logits.
        train: training split; ``test``: evaluated after each epoch (may be ``None``).
        config: hyper-parameters.
        progress: a bar per epoch with the running loss and accuracy (log lines every
            few seconds when stderr is not a terminal), and one line per finished epoch.
        desc: label of the progress bar (the phase: "train", "retrain round 2"...).
    """
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    else:
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    n = len(train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    result = TrainResult()
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = progress_bar(
            range(steps_per_epoch),
            desc=f"{desc} {epoch}/{config.epochs}",
            enabled=progress,
            unit="batch",
        )
        for b in bar:
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            x, y = train.x[idx], train.y[idx]
            if config.augment:
                x = _shift(x, config.augment, gen)
            lr = _lr_at(config, step, total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if b % 20 == 0 or b == steps_per_epoch - 1:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        bar.close()
        test_loss, test_acc = evaluate(model, test) if test is not None else (math.nan, math.nan)
        stats = EpochStats(
            epoch=epoch,
            lr=lr,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            test_loss=test_loss,
            test_accuracy=test_acc,
            seconds=time.perf_counter() - t0,
        )
        result.history.append(stats)
        if progress:
            log(
                f"{desc} epoch {epoch}/{config.epochs}: loss {stats.train_loss:.4f} "
                f"train acc {stats.train_accuracy:.4f} test error {100 * (1 - test_acc):.2f}% "
                f"({stats.seconds:.1f}s)"
            )
    if test is not None:
        result.test_accuracy = (
            result.history[-1].test_accuracy if result.history else evaluate(model, test)[1]
        )
    return result
