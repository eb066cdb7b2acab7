"""One seeded train/evaluate loop, reused by every phase: dense training, retraining after
pruning, centroid fine-tuning after quantization; on one process or many (torchrun).

Pruning masks and codebooks live on the model as parametrizations, so this loop needs no
knowledge of them: it trains whatever ``model.parameters()`` holds, and masked weights
stay zero because the mask is applied in every forward pass.

Under ``torchrun --nproc-per-node N`` (see :mod:`deep_compression.distributed` and
docs/DISTRIBUTED.md) :func:`fit` splits every batch across the N ranks and trains through
DistributedDataParallel, and :func:`evaluate` splits the data and adds up the counts. The
semantics are those of **one global batch**: ``TrainConfig.batch_size`` and ``lr`` mean
the same with 1 process or N (each rank takes about ``batch_size / N`` images of each
step's batch, the gradients are averaged so that the step is the one a single process
would take on the whole batch), so the same recipe needs no retuning, and N processes
without dropout or augmentation reproduce a single process to float rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from deep_compression import distributed as dist
from deep_compression.data import Split
from deep_compression.errors import ConfigError
from deep_compression.progress import log, progress_bar
from deep_compression.recipe_io import from_table

__all__ = [
    "TrainConfig",
    "EpochStats",
    "TrainResult",
    "GlobalBatchSampler",
    "fit",
    "evaluate",
    "seed_everything",
]

# What fit and evaluate accept: a Split of in-memory tensors, or any map-style torch
# Dataset whose items are ``(x, y)`` pairs (x an image tensor, y an integer label).
Data = Split | Dataset

_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (or retrain). One-to-one with a ``[train]`` table in a recipe.

    Attributes:
        epochs: passes over the training set (0 is allowed: nothing is trained).
        batch_size: images per step, over all ranks together (the global batch: under
            N processes each rank takes about ``batch_size / N`` of them).
        optimizer: ``"sgd"`` (with momentum, Nesterov) or ``"adam"``.
        lr: initial learning rate, for the global batch (the same with 1 process or N).
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty coefficient (coupled, as in Caffe and the paper).
        schedule: ``"cosine"`` (to 0 at the end), ``"step"`` (x0.1 at 50% and 75%) or
            ``"constant"``.
        augment: random translations of up to ``augment`` pixels (0 disables).
        seed: seeds the initial weights (when training from scratch), shuffling, dropout
            and augmentation. Every rank shuffles alike; dropout and augmentation draw
            from a stream of their own per rank.
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


def _check_data(data: Data, what: str) -> None:
    if isinstance(data, Split) or (isinstance(data, Dataset) and hasattr(data, "__len__")):
        return
    raise ConfigError(
        f"{what} must be a data.Split or a map-style torch Dataset of (x, y) pairs with a "
        f"length, got {type(data).__name__}"
    )


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's part of every global batch of an epoch (a distributed batch sampler).

    Each epoch every rank draws the same permutation of ``range(n)`` from ``generator``
    (seeded alike on every rank), cuts it into global batches of ``batch_size`` (the last
    one shorter when ``n`` is not a multiple), and takes its contiguous share of each batch:
    images ``[r * b // N, (r + 1) * b // N)`` of a batch of ``b``. The ranks' parts of a
    step are therefore exactly the batch a single process takes at that step, for any
    ``n``, ``batch_size`` and ``N``, with no image dropped or repeated (torch's
    ``DistributedSampler`` shards the epoch instead, and pads it with repeated images when
    ``n`` is not a multiple of ``N``, so its steps are not a single process's batches).

    With one rank it yields ``randperm(n)`` in consecutive batches, the order the loop has
    always used, so single-process results are unchanged. The permutation of epoch ``e`` is
    the ``e``-th draw from the generator; :meth:`set_epoch` checks that epochs come in order.

    Args:
        n: dataset length.
        batch_size: global batch size.
        generator: the shuffling generator (same seed and same use on every rank).
        rank, world_size: this rank and the number of ranks.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < 0 or batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler arguments n={n} batch_size={batch_size} {rank=}")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Declare the epoch about to be iterated (1, 2, 3... in order)."""
        if epoch != self.epoch + 1:
            raise ValueError(f"epochs must come in order: got {epoch} after {self.epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        """Steps per epoch (the same on every rank)."""
        return math.ceil(self.n / self.batch_size)

    def global_size(self, step: int) -> int:
        """Images in global batch ``step`` (0-based) of an epoch, over all ranks."""
        return min(self.batch_size, self.n - step * self.batch_size)

    def index_batches(self) -> Iterator[torch.Tensor]:
        """This rank's batches as int64 index tensors (what :meth:`__iter__` lists)."""
        # Drawn when the first batch is requested, as the loop has always drawn it: first
        # the permutation, then (single process) the augmentation shifts of that batch.
        order = torch.randperm(self.n, generator=self.generator)
        r, w = self.rank, self.world_size
        for step in range(len(self)):
            lo, size = step * self.batch_size, self.global_size(step)
            yield order[lo + r * size // w : lo + (r + 1) * size // w]

    def __iter__(self) -> Iterator[list[int]]:
        return (idx.tolist() for idx in self.index_batches())


def _loader(dataset: Dataset, **kwargs: Any) -> DataLoader:
    # A throw-away generator for the DataLoader's own base seed (it draws one number per
    # epoch, for worker processes we do not use): without it that draw would come from
    # torch's global generator and shift the dropout stream.
    return DataLoader(dataset, num_workers=0, generator=torch.Generator(), **kwargs)


def _batches(
    data: Data, sampler: GlobalBatchSampler
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of this rank's ``(x, y)`` batches, in the sampler's order.

    A Dataset goes through a DataLoader. A Split is indexed directly with the same index
    tensors: the same batches, without the DataLoader's per-batch overhead (measured here:
    0.2 ms a batch, 0.1 s per MNIST epoch, next to 0.7 s for a whole LeNet-300-100 epoch).
    """
    if isinstance(data, Split):
        for idx in sampler.index_batches():
            yield data.x[idx], data.y[idx]
    else:
        yield from _loader(data, batch_sampler=sampler)


@torch.inference_mode()
def _evaluate_part(model: nn.Module, data: Data, part: range, batch_size: int) -> tuple[float, int]:
    """Summed cross-entropy and number of correct predictions over items ``part`` of ``data``."""
    dev = _model_device(model)
    total_loss, correct = 0.0, 0
    if isinstance(data, Split):
        # Slices of the tensors: the same batches, and so the same bits, as always.
        batches: Any = (
            (data.x[i : min(i + batch_size, part.stop)], data.y[i : min(i + batch_size, part.stop)])
            for i in range(part.start, part.stop, batch_size)
        )
    else:
        _check_data(data, "evaluation data")
        batches = _loader(Subset(data, part), batch_size=batch_size, shuffle=False)
    for x, y in batches:
        x, y = x.to(dev), y.to(dev)
        logits = model(x)
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return total_loss, correct


def evaluate(
    model: nn.Module, data: Data, batch_size: int = 1000, *, shard: bool = True
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data`` (eval mode).

    Under several ranks each rank evaluates its contiguous share of ``data``
    (:func:`~deep_compression.distributed.shard`) and the sums are added up, so every rank
    returns the accuracy over all of ``data``, exactly (counts are integers) and the loss up
    to float rounding. Every rank must then call it; ``shard=False`` evaluates all of
    ``data`` on this rank alone (for code that runs on rank 0 only).

    Args:
        model: maps ``(B, ...)`` inputs to ``(B, classes)`` logits.
        data: a :class:`~deep_compression.data.Split` or a map-style Dataset of ``(x, y)``.
        batch_size: images per forward pass.
        shard: split the work across ranks (a no-op in one process).
    """
    n = len(data)
    part = dist.shard(n) if shard else range(n)
    was_training = model.training
    model.eval()
    try:
        total_loss, correct = _evaluate_part(model, data, part, batch_size)
    finally:
        model.train(was_training)
    if shard:
        total_loss, correct = dist.all_reduce_sum(total_loss, correct, phase="evaluation")
    n = max(1, n)
    return total_loss / n, correct / n


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
    _check_data(train, "training data")
    # Shuffling: one generator seeded alike on every rank, so all ranks agree on the batches.
    gen = torch.Generator().manual_seed(config.seed)
    if size == 1:
        seed_everything(config.seed)
        aug_gen = gen  # one stream for order and shifts, as the loop has always had
    else:
        seed_everything(dist.rank_seed(config.seed))  # dropout: a stream per rank
        aug_gen = torch.Generator().manual_seed(dist.rank_seed(config.seed))
    sampler = GlobalBatchSampler(len(train), config.batch_size, gen, rank=rank, world_size=size)
    dev = _model_device(model)
    float_buffers = any(b.is_floating_point() for b in model.buffers())
    steps_per_epoch = len(sampler)
    total_steps = config.epochs * steps_per_epoch
    result = TrainResult()
    show = progress and dist.is_main()
    with dist.collective_errors(desc):
        dist.check_same_across_ranks(model, f"before {desc}")
        net = dist.wrap_ddp(model)
        opt = _optimizer([p for p in model.parameters() if p.requires_grad], config)
        step = 0
        lr = config.lr
        for epoch in range(1, config.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            seen, loss_sum, correct = 0, 0.0, 0
            bar = progress_bar(
                _batches(train, sampler),
                total=steps_per_epoch,
                desc=f"{desc} {epoch}/{config.epochs}",
                enabled=show,
                unit="batch",
            )
            for b, (x, y) in enumerate(bar):
                x, y = x.to(dev), y.to(dev)
                if config.augment and len(x):
                    if x.ndim != 4:
                        raise ConfigError(
                            f"train.augment shifts images (B, C, H, W); got a batch of shape "
                            f"{tuple(x.shape)}"
                        )
                    x = _shift(x, config.augment, aug_gen)
                lr = _lr_at(config, step, total_steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                logits = net(x)
                if size == 1:
                    loss = nn.functional.cross_entropy(logits, y)
                    batch_loss = loss.item() * len(y)
                else:
                    # DDP averages the ranks' gradients; scaling each rank's summed loss by
                    # N / (global batch) makes that average the gradient of the global mean,
                    # also when the ranks' shares differ by one image.
                    summed = nn.functional.cross_entropy(logits, y, reduction="sum")
                    loss = summed * (size / sampler.global_size(b))
                    batch_loss = summed.item()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                seen += len(y)
                loss_sum += batch_loss
                correct += int((logits.argmax(1) == y).sum())
                if show and (b % 20 == 0 or b == steps_per_epoch - 1):
                    bar.set_postfix(
                        loss=f"{loss_sum / max(1, seen):.4f}", acc=f"{correct / max(1, seen):.4f}"
                    )
            bar.close()
            if float_buffers:  # BatchNorm statistics drift apart per rank: take rank 0's
                dist.broadcast_buffers_(model, floating_only=True, phase=desc)
            loss_sum, correct, seen = dist.all_reduce_sum(loss_sum, correct, seen, phase=desc)
            test_loss, test_acc = evaluate(model, test) if test is not None else (math.nan,) * 2
            stats = EpochStats(
                epoch=epoch,
                lr=lr,
                train_loss=loss_sum / max(1, seen),
                train_accuracy=correct / max(1, seen),
                test_loss=test_loss,
                test_accuracy=test_acc,
                seconds=time.perf_counter() - t0,
            )
            result.history.append(stats)
            if show:
                log(
                    f"{desc} epoch {epoch}/{config.epochs}: loss {stats.train_loss:.4f} "
                    f"train acc {stats.train_accuracy:.4f} test error "
                    f"{100 * (1 - test_acc):.2f}% ({stats.seconds:.1f}s)"
                )
        del net  # the wrapper only; ``model`` holds the trained parameters
        dist.check_same_across_ranks(model, f"after {desc}")
        if test is not None:
            result.test_accuracy = (
                result.history[-1].test_accuracy if result.history else evaluate(model, test)[1]
            )
    return result
