"""``deep-compression train`` and ``deep-compression evaluate``."""

from __future__ import annotations

import argparse

from deep_compression.cli._common import (
    add_data_args,
    add_model_args,
    add_out_arg,
    add_validation_args,
    check_out,
    dataset_of,
    existing_file,
    model_args_of,
    model_spec_of,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    progress_enabled,
    setup_threads,
    validation_of,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a dense model and save a checkpoint",
        description="Train a model (built-in or your own) from scratch and save a "
        "safetensors checkpoint with its metadata (model, dataset, preprocessing, error, "
        "seed, training config). Runs unchanged under torchrun: every rank trains its "
        "share of each global batch, rank 0 prints and writes (docs/DISTRIBUTED.md).",
    )
    add_model_args(p, required=True)
    p.add_argument(
        "--dataset",
        default="mnist",
        metavar="DATASET",
        help="a built-in (mnist, fashion-mnist), an image folder DIR (DIR/train/<class>/*, "
        "DIR/test/<class>/*) or an .npz file",
    )
    p.add_argument("--epochs", type=nonnegative_int, default=20, help="passes over the data")
    p.add_argument(
        "--batch-size", type=positive_int, default=128, help="images per step (global batch)"
    )
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
        "--augment", type=nonnegative_int, default=0, help="random shifts of up to N pixels"
    )
    p.add_argument(
        "--dropout",
        type=nonnegative_float,
        default=None,
        help="dropout rate of a built-in model (default: the model's own)",
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="seeds initial weights, order, dropout"
    )
    add_validation_args(p)
    add_out_arg(p, "checkpoint (.safetensors)")
    add_data_args(p)
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "evaluate",
        help="print the test error of a checkpoint or .dcz file",
        description="Evaluate a checkpoint (this project's, a plain safetensors state dict, "
        "or a PyTorch .pt/.pth/.th file) or a compressed model (.dcz) on the test split of "
        "its dataset. Under torchrun the test set is split across ranks.",
    )
    e.add_argument(
        "model_file", metavar="FILE", type=existing_file, help="a checkpoint or a .dcz file"
    )
    e.add_argument(
        "--dataset",
        default=None,
        metavar="DATASET",
        help="a built-in name, an image folder, an .npz file, or a table as in a recipe: "
        "'{ root = \"DIR\", mean = [...], std = [...] }' (default: what the file says)",
    )
    add_model_args(e)
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
    """Train and save; under torchrun every rank trains its share of each batch, rank 0
    alone prints and writes the checkpoint (see docs/DISTRIBUTED.md)."""
    from deep_compression import distributed

    setup_threads(args.threads)
    check_out(args, ".safetensors")
    with distributed.session():
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from deep_compression import distributed
    from deep_compression.checkpoint import save_checkpoint
    from deep_compression.data import DatasetConfig, carve_validation, load_data
    from deep_compression.models import count_parameters, make_model
    from deep_compression.phases import PhaseContext, silent, test_error, train_phase
    from deep_compression.records import CheckpointMeta, ModelSpec
    from deep_compression.train import TrainConfig, seed_everything

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
    kwargs = model_args_of(args)
    if args.dropout is not None:
        kwargs["dropout"] = args.dropout
    dataset = DatasetConfig.from_value(args.dataset)
    split = validation_of(args)
    data = carve_validation(load_data(dataset, args.data_dir, allow_code=args.allow_code), split)
    seed_everything(args.seed)  # initial weights: the same on every rank
    spec = model_spec_of(args)
    model = make_model(spec, kwargs, allow_code=True).to(distributed.device())
    if main:
        on = f" on {ranks} processes (global batch {config.batch_size})" if ranks > 1 else ""
        print(
            f"training {args.model} ({count_parameters(model):,} parameters) on "
            f"{dataset.label}: {len(data.train):,} train / "
            f"{len(data.val) if data.val is not None else 0:,} validation / "
            f"{len(data.test):,} test images, "
            f"{config.epochs} epochs{on}"
        )
    # fit checks the ranks' models bit-identical before and after training; the phase's
    # own summary line is left out (the command prints one below, on rank 0).
    eval_split = data.val if data.val is not None else data.test
    ctx = PhaseContext(data.train, eval_split, progress=progress_enabled(), log=silent)
    outcome = train_phase(model, config, ctx)
    # With a validation split the epochs were watched on it; the test set is measured
    # once, here, for the checkpoint's record.
    errors = {"test_error": outcome.test_error}
    if data.val is not None:
        errors = {"val_error": outcome.test_error, "test_error": test_error(model, data.test)}
    meta = CheckpointMeta(
        model=ModelSpec(spec, kwargs),
        stage="dense",
        dataset=dataset.label,
        preprocessing=data.info.preprocessing,
        seed=args.seed,
        test_error=errors["test_error"],
        details={
            "train": {**outcome.details(), "world_size": ranks},
            "dataset_source": dataset.to_dict(),
            # Where the validation split came from, so compressing this checkpoint holds
            # out the same images (they were never trained on).
            "validation": split.to_dict() if data.val is not None else None,
            **errors,
        },
    )
    distributed.run_on_main(lambda: save_checkpoint(args.out, model, meta), f"writing {args.out}")
    if main:
        print(
            "".join(f"{k.replace('_', ' ')} {100 * v:.2f}%, " for k, v in errors.items())
            + f"after {config.epochs} epochs "
            f"({outcome.seconds:.0f}s, {outcome.result.seconds_per_epoch:.1f}s/epoch); "
            f"saved {args.out}"
        )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a file; under torchrun the test set is split across ranks, rank 0 prints."""
    from deep_compression import distributed

    setup_threads(args.threads)
    with distributed.session():
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from deep_compression import distributed
    from deep_compression.data import load_data
    from deep_compression.loading import load_any
    from deep_compression.sparse import sparse_layers
    from deep_compression.train import evaluate

    model, meta = load_any(
        args.model_file,
        sparse=args.sparse,
        model=model_spec_of(args),
        model_args=model_args_of(args),
        allow_code=args.allow_code or args.model is not None,
    )
    dataset = dataset_of(args.dataset, meta.dataset, meta.details)
    data = load_data(
        dataset, args.data_dir, allow_code=args.allow_code, preprocessing=meta.preprocessing
    )
    main = distributed.is_main()
    if args.sparse and main:
        layers = sparse_layers(model)
        listed = ", ".join(f"{n} ({100 * m.density:.1f}% kept)" for n, m in layers.items())
        print(f"sparse (CSR) layers: {listed or 'none'}")
    loss, acc = evaluate(model, data.test, args.batch_size)
    if main:
        print(
            f"{args.model_file}: {meta.model.name} on {dataset.label} test: "
            f"error {100 * (1 - acc):.2f}% (accuracy {100 * acc:.2f}%, loss {loss:.4f}, "
            f"{len(data.test):,} images)"
        )
    return 0
