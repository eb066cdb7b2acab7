"""``deep-compression train`` and ``deep-compression evaluate``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deep_compression.cli._common import (
    add_data_args,
    existing_file,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    progress_enabled,
    setup_threads,
)
from deep_compression.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from deep_compression.data import DATASETS
    from deep_compression.models import model_names

    p = sub.add_parser(
        "train",
        help="train a dense model and save a checkpoint",
        description="Train a built-in model from scratch and save a safetensors checkpoint "
        "with its metadata (model, dataset, accuracy, seed, training config).",
    )
    p.add_argument("--model", required=True, choices=model_names())
    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    p.add_argument("--epochs", type=nonnegative_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=positive_float, default=0.05, help="initial learning rate")
    p.add_argument("--momentum", type=nonnegative_float, default=0.9)
    p.add_argument("--weight-decay", type=nonnegative_float, default=5e-4)
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument(
        "--augment",
        type=nonnegative_int,
        default=0,
        help="random shifts of up to N pixels (default 0: none)",
    )
    p.add_argument(
        "--dropout",
        type=nonnegative_float,
        default=None,
        help="dropout rate (default: the model's own)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    add_data_args(p)
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "evaluate",
        help="print the test error of a checkpoint or .dcz file",
        description="Evaluate a checkpoint (.safetensors) or compressed model (.dcz) on the "
        "test split of the dataset recorded in it.",
    )
    e.add_argument("model_file", metavar="FILE", type=existing_file)
    e.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default=None,
        help="override the dataset recorded in the file",
    )
    e.add_argument("--batch-size", type=positive_int, default=1000)
    e.add_argument(
        "--sparse",
        action="store_true",
        help="run pruned fully connected layers as CSR sparse matrices (for a .dcz: the "
        "layers it stores pruned, at least half of their weights pruned); prints which",
    )
    add_data_args(e)
    e.set_defaults(func=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    """Train and save; under torchrun every rank trains its share of each batch, rank 0
    alone prints and writes the checkpoint (see docs/DISTRIBUTED.md)."""
    from deep_compression import distributed

    setup_threads(args.threads)
    if args.out.suffix != ".safetensors":
        raise ConfigError(f"--out {args.out}: checkpoints are .safetensors files")
    with distributed.session():
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from deep_compression import distributed
    from deep_compression.checkpoint import save_checkpoint
    from deep_compression.data import get_spec, load_dataset
    from deep_compression.models import build_model, count_parameters
    from deep_compression.train import TrainConfig, fit, seed_everything

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        augment=args.augment,
        seed=args.seed,
    )
    main = distributed.is_main()
    ranks = distributed.world_size()
    kwargs = {} if args.dropout is None else {"dropout": args.dropout}
    seed_everything(args.seed)  # initial weights: the same on every rank
    model = build_model(args.model, **kwargs).to(distributed.device())
    train, test = load_dataset(args.dataset, args.data_dir)
    if main:
        on = f" on {ranks} processes (global batch {config.batch_size})" if ranks > 1 else ""
        print(
            f"training {args.model} ({count_parameters(model):,} parameters) on {args.dataset}: "
            f"{len(train):,} train / {len(test):,} test images, {config.epochs} epochs{on}"
        )
    t0 = time.perf_counter()
    # fit checks the ranks' models bit-identical before and after training.
    result = fit(model, train, test, config, progress=progress_enabled())
    seconds = time.perf_counter() - t0
    meta = {
        "stage": "dense",
        "model": {"name": args.model, "kwargs": kwargs},
        "dataset": args.dataset,
        "preprocessing": get_spec(args.dataset).preprocessing,
        "test_accuracy": result.test_accuracy,
        "test_error": result.test_error,
        "seed": args.seed,
        "train_config": config.to_dict(),
        "train_seconds": round(seconds, 1),
        "world_size": ranks,
    }
    distributed.run_on_main(lambda: save_checkpoint(args.out, model, meta), f"writing {args.out}")
    if main:
        print(
            f"test error {100 * result.test_error:.2f}% after {config.epochs} epochs "
            f"({seconds:.0f}s, {result.seconds_per_epoch:.1f}s/epoch); saved {args.out}"
        )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a file; under torchrun the test set is split across ranks, rank 0 prints."""
    from deep_compression import distributed

    with distributed.session():
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from deep_compression import distributed
    from deep_compression.data import load_dataset
    from deep_compression.evaluate import load_any
    from deep_compression.train import evaluate

    setup_threads(args.threads)
    model, meta = load_any(args.model_file, sparse=args.sparse)
    dataset = args.dataset or meta.get("dataset", "mnist")
    _, test = load_dataset(dataset, args.data_dir)
    main = distributed.is_main()
    if args.sparse and main:
        from deep_compression.sparse import sparse_layers

        layers = sparse_layers(model)
        listed = ", ".join(f"{n} ({100 * m.density:.1f}% kept)" for n, m in layers.items())
        print(f"sparse (CSR) layers: {listed or 'none'}")
    loss, acc = evaluate(model, test, args.batch_size)
    if not main:
        return 0
    print(
        f"{args.model_file}: {meta['model']['name']} on {dataset} test: "
        f"error {100 * (1 - acc):.2f}% (accuracy {100 * acc:.2f}%, loss {loss:.4f}, "
        f"{len(test):,} images)"
    )
    return 0
