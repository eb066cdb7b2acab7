"""The seeded loop itself: :func:`fit` (one epoch at a time, through the helpers below),
on one process or many; it evaluates with :func:`~.evaluation.evaluate`. See
:mod:`deep_compression.train` for the semantics of the global batch under several ranks."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from deep_compression import distributed as dist
from deep_compression.errors import ConfigError
from deep_compression.progress import log, progress_bar
from deep_compression.train.batches import Data, GlobalBatchSampler, check_data, epoch_batches
from deep_compression.train.config import EpochStats, TrainConfig, TrainResult
from deep_compression.train.evaluation import evaluate, model_device


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


def _optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass
class _Loop:
    """What every epoch of one :func:`fit` call shares, and the step count it carries on."""

    model: nn.Module
    net: nn.Module  # ``model``, or its DistributedDataParallel wrapper for forward passes
    opt: torch.optim.Optimizer
    sampler: GlobalBatchSampler
    config: TrainConfig
    aug_gen: torch.Generator  # augmentation shifts (the shuffling generator in one process)
    dev: torch.device
    size: int  # number of ranks
    desc: str
    show: bool  # progress bars and epoch lines (rank 0, when asked)
    lr: float  # the learning rate of the last step
    step: int = 0  # optimizer steps taken so far: they set the learning rate
    float_buffers: bool = field(init=False)  # BatchNorm statistics, re-synced after each epoch

    def __post_init__(self) -> None:
        self.float_buffers = any(b.is_floating_point() for b in self.model.buffers())

    @property
    def total_steps(self) -> int:
        return self.config.epochs * len(self.sampler)


def _generators(config: TrainConfig, size: int) -> tuple[torch.Generator, torch.Generator]:
    """Seed dropout (torch's global generator) and return the shuffling and augmentation
    generators, in the order the loop has always drawn them."""
    # Shuffling: one generator seeded alike on every rank, so all ranks agree on the batches.
    gen = torch.Generator().manual_seed(config.seed)
    if size == 1:
        seed_everything(config.seed)
        return gen, gen  # one stream for order and shifts, as the loop has always had
    seed_everything(dist.rank_seed(config.seed))  # dropout: a stream per rank
    return gen, torch.Generator().manual_seed(dist.rank_seed(config.seed))


def _augment(x: torch.Tensor, max_shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Shift (a random crop with padding), then flip half of the images left-right."""
    if x.ndim != 4:
        raise ConfigError(
            f"train.augment shifts images (B, C, H, W); got a batch of shape {tuple(x.shape)}"
        )
    if max_shift:
        x = _shift(x, max_shift, gen)
    if flip:
        mirrored = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
    return x


def _batch_loss(
    logits: torch.Tensor, y: torch.Tensor, size: int, global_batch: int
) -> tuple[torch.Tensor, float]:
    """The loss to back-propagate, and this rank's summed loss over its images (for the
    epoch's statistics)."""
    if size == 1:
        loss = nn.functional.cross_entropy(logits, y)
        return loss, loss.item() * len(y)
    # DDP averages the ranks' gradients; scaling each rank's summed loss by
    # N / (global batch) makes that average the gradient of the global mean,
    # also when the ranks' shares differ by one image.
    summed = nn.functional.cross_entropy(logits, y, reduction="sum")
    return summed * (size / global_batch), summed.item()


def _train_epoch(loop: _Loop, train: Data, epoch: int) -> tuple[float, int, int]:
    """One pass over this rank's batches: ``(summed loss, correct, images)`` on this rank."""
    config, sampler = loop.config, loop.sampler
    sampler.set_epoch(epoch)
    seen, loss_sum, correct = 0, 0.0, 0
    steps = len(sampler)
    bar = progress_bar(
        epoch_batches(train, sampler),
        total=steps,
        desc=f"{loop.desc} {epoch}/{config.epochs}",
        enabled=loop.show,
        unit="batch",
    )
    for b, (x, y) in enumerate(bar):
        x, y = x.to(loop.dev), y.to(loop.dev)
        if (config.augment or config.flip) and len(x):
            x = _augment(x, config.augment, config.flip, loop.aug_gen)
        loop.lr = _lr_at(config, loop.step, loop.total_steps)
        for g in loop.opt.param_groups:
            g["lr"] = loop.lr
        logits = loop.net(x)
        loss, batch_loss = _batch_loss(logits, y, loop.size, sampler.global_size(b))
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        loop.opt.step()
        loop.step += 1
        seen += len(y)
        loss_sum += batch_loss
        correct += int((logits.argmax(1) == y).sum())
        if loop.show and (b % 20 == 0 or b == steps - 1):
            bar.set_postfix(
                loss=f"{loss_sum / max(1, seen):.4f}", acc=f"{correct / max(1, seen):.4f}"
            )
    bar.close()
    return loss_sum, correct, seen


def _run_epoch(loop: _Loop, train: Data, test: Data | None, epoch: int) -> EpochStats:
    """Train one epoch, gather the ranks' statistics, evaluate on ``test``, log a line."""
    loop.model.train()
    t0 = time.perf_counter()
    sums = _train_epoch(loop, train, epoch)
    if loop.float_buffers:  # BatchNorm statistics drift apart per rank: take rank 0's
        dist.broadcast_buffers_(loop.model, floating_only=True, phase=loop.desc)
    loss_sum, correct, seen = dist.all_reduce_sum(*sums, phase=loop.desc)
    test_loss, test_acc = evaluate(loop.model, test) if test is not None else (math.nan,) * 2
    stats = EpochStats(
        epoch=epoch,
        lr=loop.lr,
        train_loss=loss_sum / max(1, seen),
        train_accuracy=correct / max(1, seen),
        test_loss=test_loss,
        test_accuracy=test_acc,
        seconds=time.perf_counter() - t0,
    )
    if loop.show:
        log(
            f"{loop.desc} epoch {epoch}/{loop.config.epochs}: loss {stats.train_loss:.4f} "
            # "held-out": the validation split when there is one, else the test set.
            f"train acc {stats.train_accuracy:.4f} held-out error "
            f"{100 * (1 - test_acc):.2f}% ({stats.seconds:.1f}s)"
        )
    return stats


def fit(
    model: nn.Module,
    train: Data,
    test: Data | None,
    config: TrainConfig,
    *,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place on ``train`` and evaluate on ``test`` after each epoch.

    Deterministic for a given ``config.seed`` (and thread count and number of ranks):
    shuffling and augmentation use their own generator, dropout uses torch's global one,
    seeded here. In one process the results are bit for bit those of earlier versions.

    Under torchrun (``WORLD_SIZE > 1``; the process group is joined here if it is not yet)
    every rank must call ``fit`` with the same arguments. Batches are global:
    :class:`GlobalBatchSampler` gives each rank its share of each step's batch, the model
    trains inside DistributedDataParallel, each rank's summed loss is scaled by
    ``N / global batch`` so that DDP's gradient average is the gradient of the mean loss
    over the global batch, and the learning rate applies to that. Without dropout and
    augmentation, N ranks thus take the steps one process takes, to float rounding;
    dropout and augmentation draw per-rank streams (derived from ``config.seed`` and the
    rank), so with them runs differ in their random draws. Before and after training the
    ranks' models (weights, masks, codebooks, buffers) are checked bit-identical
    (:func:`~deep_compression.distributed.check_same_across_ranks`); float buffers such as
    BatchNorm statistics are taken from rank 0 after every epoch. Progress bars and
    per-epoch lines appear on rank 0 only; the returned statistics are over all ranks.

    Args:
        model: any module mapping ``(B, ...)`` inputs to ``(B, classes)`` logits; a plain
            module (not FSDP- or DDP-wrapped), on the device where it should train.
        train: training data, a :class:`~deep_compression.data.Split` or a map-style
            Dataset of ``(x, y)`` (batched through a DataLoader); ``test``: evaluated after
            each epoch, sharded across ranks (may be ``None``).
        config: hyper-parameters.
        progress: a bar per epoch with the running loss and accuracy (log lines every
            few seconds when stderr is not a terminal), and one line per finished epoch.
        desc: label of the progress bar and of errors (the phase: "train", "round 2/5
            retrain"...).

    Raises:
        ConfigError: bad data, an FSDP- or DDP-wrapped model, augmentation of non-image data.
        DistributedError: the ranks' models differ, or a rank died or timed out.
    """
    dist.init_from_env()
    size, rank = dist.world_size(), dist.rank()
    if dist.is_initialized():
        dist.refuse_wrapped(model)
    check_data(train, "training data")
    gen, aug_gen = _generators(config, size)
    sampler = GlobalBatchSampler(len(train), config.batch_size, gen, rank=rank, world_size=size)
    dev = model_device(model)
    result = TrainResult()
    show = progress and dist.is_main()
    with dist.collective_errors(desc):
        dist.check_same_across_ranks(model, f"before {desc}")
        net = dist.wrap_ddp(model)
        opt = _optimizer([p for p in model.parameters() if p.requires_grad], config)
        loop = _Loop(model, net, opt, sampler, config, aug_gen, dev, size, desc, show, config.lr)
        for epoch in range(1, config.epochs + 1):
            result.history.append(_run_epoch(loop, train, test, epoch))
        del net, loop  # the wrapper only; ``model`` holds the trained parameters
        dist.check_same_across_ranks(model, f"after {desc}")
        if test is not None:
            result.test_accuracy = (
                result.history[-1].test_accuracy if result.history else evaluate(model, test)[1]
            )
    return result
