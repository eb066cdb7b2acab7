"""The networks of the paper (and of the original project), each a short plain ``nn.Module``.

The MNIST networks take ``(N, 1, 28, 28)`` normalised images and return ``(N, 10)``
logits; VGG-16 takes ImageNet-shaped ``(N, 3, 224, 224)`` input. Layers are
named attributes (``fc1``, ``conv2``...), so state-dict keys and per-layer configs such as
``{"*": 5, "conv*": 8}`` read naturally. Build them by name with :func:`build_model`; the
``(name, kwargs)`` pair is stored in every checkpoint and ``.dcz`` file so the model can
be rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deep_compression import caffe_models
from deep_compression.errors import ConfigError

__all__ = [
    "LeNet300100",
    "LeNet5",
    "SmallCNN",
    "VGG16",
    "MODELS",
    "build_model",
    "model_names",
    "is_builtin",
    "resolve_spec",
    "make_model",
    "import_callable",
    "count_parameters",
]


# Widths are arguments so that a network shrunk by structured pruning
# (deep_compression.shrink) is rebuilt from its name and arguments alone; a width above
# this bound is refused (a file's arguments are untrusted input).
MAX_WIDTH = 4096


def _widths(value: object, n: int, what: str) -> tuple[int, ...]:
    """``value`` as ``n`` widths in 1..MAX_WIDTH (a list read from JSON is accepted)."""
    items = value if isinstance(value, list | tuple) else None
    if (
        items is None
        or len(items) != n
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_WIDTH for v in items
        )
    ):
        count = "an integer" if n == 1 else f"{n} integers"
        raise ValueError(f"{what} must be {count} in 1..{MAX_WIDTH}, got {value!r}")
    return tuple(items)


class LeNet300100(nn.Module):
    """784-300-100-10 multilayer perceptron with ReLU: 266,610 parameters.

    The paper's network has no dropout; ``dropout > 0`` adds it after each hidden layer
    (pruning then scales it with the kept fraction, as the paper prescribes).
    ``hidden`` sets the two hidden widths (a shrunk network's).
    """

    def __init__(self, dropout: float = 0.0, hidden: tuple[int, int] = (300, 100)) -> None:
        super().__init__()
        h1, h2 = _widths(hidden, 2, "hidden")
        self.fc1 = nn.Linear(784, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, 10)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, 784)
        x = self.drop1(torch.relu(self.fc1(x)))
        x = self.drop2(torch.relu(self.fc2(x)))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe's LeNet-5, the variant the paper compresses: 431,080 parameters.

    conv 5x5x20 -> maxpool 2 -> conv 5x5x50 -> maxpool 2 -> fc 800-500 -> ReLU -> fc 500-10.
    (Caffe's version has no ReLU after the convolutions; neither does this one.)
    ``channels`` and ``hidden`` set the widths (a shrunk network's).
    """

    def __init__(
        self, dropout: float = 0.0, channels: tuple[int, int] = (20, 50), hidden: int = 500
    ) -> None:
        super().__init__()
        c1, c2 = _widths(channels, 2, "channels")
        (h,) = _widths(hidden if isinstance(hidden, list | tuple) else [hidden], 1, "hidden")
        self.conv1 = nn.Conv2d(1, c1, 5)  # (N, 20, 24, 24)
        self.conv2 = nn.Conv2d(c1, c2, 5)  # (N, 50, 8, 8)
        self.fc1 = nn.Linear(c2 * 16, h)  # 4 x 4 pixels per channel after two poolings
        self.fc2 = nn.Linear(h, 10)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(self.conv1(x), 2)  # (N, 20, 12, 12)
        x = torch.max_pool2d(self.conv2(x), 2)  # (N, 50, 4, 4)
        x = self.drop(torch.relu(self.fc1(x.flatten(1))))  # (N, 500)
        return self.fc2(x)


class SmallCNN(nn.Module):
    """The original project's TensorFlow MNIST CNN with three hidden layers.

    conv 5x5x32 (same) -> ReLU -> maxpool 2 -> conv 5x5x64 (same) -> ReLU -> maxpool 2
    -> fc 3136-1024 -> ReLU -> dropout -> fc 1024-10: 3,274,634 parameters.
    """

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(7 * 7 * 64, 1024)
        self.fc2 = nn.Linear(1024, 10)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # (N, 32, 14, 14)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # (N, 64, 7, 7)
        x = self.drop(torch.relu(self.fc1(x.flatten(1))))  # (N, 1024)
        return self.fc2(x)


class VGG16(nn.Module):
    """VGG-16 (configuration D) with ImageNet shapes: 138,357,544 parameters.

    Input ``(N, 3, 224, 224)``, output ``(N, num_classes)`` logits. Thirteen 3x3 convolutions
    (``conv1_1`` ... ``conv5_3``) in five max-pooled blocks, then ``fc6`` (25088-4096),
    ``fc7`` (4096-4096) and ``fc8`` (4096-1000) with ReLU and dropout, as in the paper's
    largest experiment. No ImageNet weights are shipped; it is here so the codec and the
    sparse kernels can be measured at the paper's scale.
    """

    _BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        in_ch = 3
        for b, widths in enumerate(self._BLOCKS, start=1):
            for i, out_ch in enumerate(widths, start=1):
                self.add_module(f"conv{b}_{i}", nn.Conv2d(in_ch, out_ch, 3, padding=1))
                in_ch = out_ch
        self.fc6 = nn.Linear(512 * 7 * 7, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b, widths in enumerate(self._BLOCKS, start=1):
            for i in range(1, len(widths) + 1):
                x = torch.relu(getattr(self, f"conv{b}_{i}")(x))
            x = torch.max_pool2d(x, 2)  # halves H and W: 224 -> 7 after five blocks
        x = self.drop(torch.relu(self.fc6(x.flatten(1))))  # (N, 4096)
        x = self.drop(torch.relu(self.fc7(x)))
        return self.fc8(x)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet-300-100": LeNet300100,
    "lenet-5": LeNet5,
    "small-cnn": SmallCNN,
    "vgg-16": VGG16,
    "squeezenet-1.0": caffe_models.SqueezeNet10,  # Caffe layouts, for Han's released files
    "alexnet": caffe_models.AlexNetCaffe,
}


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(MODELS)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the built-in model ``name`` with constructor arguments ``kwargs``.

    Raises:
        ConfigError: unknown name or a bad argument.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    dropout = kwargs.get("dropout", 0.0)
    if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be a number in [0, 1), got {dropout!r}")
    try:
        return MODELS[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad arguments for model {name!r}: {e}") from None


def is_builtin(spec: str) -> bool:
    """Whether ``spec`` names a built-in model (as opposed to the user's own code)."""
    return spec in MODELS


def _check_spec(spec: str) -> tuple[str, str]:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ConfigError(
            f"unknown model {spec!r}: give a built-in ({', '.join(model_names())}), a file "
            "and callable 'path/to/net.py:name', or a module and callable 'package.module:name'"
        )
    return target, attr


def resolve_spec(spec: str, base_dir: str | os.PathLike[str] | None = None) -> str:
    """``spec`` with a relative ``file.py`` made absolute against ``base_dir`` (a recipe's
    directory; default the working directory), so the spec means the same from anywhere.
    Built-in names and ``package.module:name`` specs are returned unchanged."""
    if is_builtin(spec):
        return spec
    target, attr = _check_spec(spec)
    if target.endswith(".py") and not Path(target).is_absolute():
        target = str((Path(base_dir or ".") / target).resolve())
    return f"{target}:{attr}"


def import_callable(spec: str) -> Callable[..., Any]:
    """The callable ``spec`` (``file.py:name`` or ``package.module:name``) names, imported.

    Runs the file's or module's code: callers check that the user allowed it.
    """
    target, attr = _check_spec(spec)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"model {spec!r}: no such file {path}")
        # A unique module name per file, so two files both called net.py do not collide.
        name = (
            "deep_compression_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        )
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ConfigError(f"model {spec!r}: cannot import {path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            try:
                loader_spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise ConfigError(f"model {spec!r}: importing {path} failed: {e!r}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"model {spec!r}: cannot import {target} ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"model {spec!r}: {target} has no callable {attr!r}")
    return fn


def make_model(
    spec: str, args: Mapping[str, Any] | None = None, *, allow_code: bool = False
) -> nn.Module:
    """Build the model ``spec`` names with keyword arguments ``args``.

    Args:
        spec: a built-in name (:func:`model_names`), ``"path/to/net.py:name"`` or
            ``"package.module:name"``: a callable (class or function) returning an
            ``nn.Module``.
        args: its keyword arguments (a recipe's ``model_args``).
        allow_code: importing a file or module runs its code. A spec read from a file
            (checkpoint, ``.dcz``, recipe) is untrusted input, so code is imported only
            when the caller says so: the user naming the spec on the command line, or an
            explicit ``--allow-code``.

    Raises:
        ConfigError: unknown spec, code not allowed, import failure, bad arguments, or a
            callable that does not return an ``nn.Module``.
    """
    args = dict(args or {})
    if is_builtin(spec):
        return build_model(spec, **args)
    _check_spec(spec)
    if not allow_code:
        raise ConfigError(
            f"model {spec!r} is Python code, and importing it runs that code: pass "
            "--allow-code (allow_code=True) if you trust it"
        )
    fn = import_callable(spec)
    try:
        model = fn(**args)
    except TypeError as e:
        raise ConfigError(f"bad arguments for model {spec!r}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (weights and biases) in ``model``."""
    return sum(p.numel() for p in model.parameters())
