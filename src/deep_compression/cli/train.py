"""``deep-compression train`` and ``deep-compression evaluate``."""

from __future__ import annotations

import argparse

from deep_compression.cli._common import (
    add_data_args,
    add_out_arg,
    check_out,
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
    p.add_argument("--model", required=True, choices=model_names(), help="built-in model")
    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS), help="dataset")
    p.add_argument("--epochs", type=nonnegative_int, default=20, help="passes over the data")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per step")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer")
    p.add_argument("--lr", type=positive_float, default=0.05, help="initial learning rate")
    p.add_argument("--momentum", type=nonnegative_float, default=0.9, help="SGD momentum")
    p.add_argument(
        "--weight-decay", type=nonnegative_float, default=5e-4, help="L2 penalty coefficient"
    )
    p.add_argument(
        "--schedule",
        choices=("cosine", "step", "constant"),
        default="cosine",
        help="learning-rate schedule: cosine to 0, step (x0.1 at 50%% and 75%%) or constant",
    )
    p.add_argument(
        "--augment",
        type=nonnegative_int,
        default=0,
        help="random shifts of up to N pixels (0: none)",
    )
    p.add_argument(
        "--dropout",
        type=nonnegative_float,
        default=None,
        help="dropout rate (default: the model's own)",
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="seeds initial weights, order, dropout"
    )
    add_out_arg(p, "checkpoint (.safetensors)")
    add_data_args(p)
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "evaluate",
        help="print the test error of a checkpoint or .dcz file",
        description="Evaluate a checkpoint (.safetensors) or compressed model (.dcz) on the "
        "test split of the dataset recorded in it.",
    )
    e.add_argument(
        "model_file", metavar="FILE", type=existing_file, help="a .safetensors checkpoint or .dcz"
    )
    e.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default=None,
        help="override the dataset recorded in the file",
    )
    e.add_argument("--batch-size", type=positive_int, default=1000, help="images per batch")
    e.add_argument(
        "--sparse",
        action="store_true",
        help="run pruned fully connected layers as CSR sparse matrices (for a .dcz: the "
        "layers it stores pruned, at least half of their weights pruned); prints which",
    )
    add_data_args(e)
    e.set_defaults(func=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from deep_compression.checkpoint import save_checkpoint
    from deep_compression.data import get_spec, load_dataset
    from deep_compression.models import build_model, count_parameters
    from deep_compression.phases import train_phase
    from deep_compression.records import CheckpointMeta, ModelSpec
    from deep_compression.train import TrainConfig, seed_everything

    setup_threads(args.threads)
    check_out(args, ".safetensors")
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
    kwargs = {} if args.dropout is None else {"dropout": args.dropout}
    seed_everything(args.seed)  # initial weights
    model = build_model(args.model, **kwargs)
    train, test = load_dataset(args.dataset, args.data_dir)
    print(
        f"training {args.model} ({count_parameters(model):,} parameters) on {args.dataset}: "
        f"{len(train):,} train / {len(test):,} test images, {config.epochs} epochs"
    )
    outcome = train_phase(model, train, test, config, progress=progress_enabled(), log=print)
    meta = CheckpointMeta(
        model=ModelSpec(args.model, kwargs),
        stage="dense",
        dataset=args.dataset,
        preprocessing=get_spec(args.dataset).preprocessing,
        seed=args.seed,
        test_error=outcome.test_error,
        details={"train": outcome.details()},
    )
    save_checkpoint(args.out, model, meta)
    print(
        f"test error {100 * outcome.test_error:.2f}% after {config.epochs} epochs "
        f"({outcome.seconds:.0f}s, {outcome.result.seconds_per_epoch:.1f}s/epoch); "
        f"saved {args.out}"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from deep_compression.data import load_dataset
    from deep_compression.loading import load_any
    from deep_compression.sparse import sparse_layers
    from deep_compression.train import evaluate

    setup_threads(args.threads)
    model, meta = load_any(args.model_file, sparse=args.sparse)
    dataset = args.dataset or meta.dataset
    if dataset is None:
        raise ConfigError(f"{args.model_file} does not say its dataset; pass --dataset")
    _, test = load_dataset(dataset, args.data_dir)
    if args.sparse:
        layers = sparse_layers(model)
        listed = ", ".join(f"{n} ({100 * m.density:.1f}% kept)" for n, m in layers.items())
        print(f"sparse (CSR) layers: {listed or 'none'}")
    loss, acc = evaluate(model, test, args.batch_size)
    print(
        f"{args.model_file}: {meta.model.name} on {dataset} test: "
        f"error {100 * (1 - acc):.2f}% (accuracy {100 * acc:.2f}%, loss {loss:.4f}, "
        f"{len(test):,} images)"
    )
    return 0
