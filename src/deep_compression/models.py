"""The networks of the paper (and of the original project), each a short plain ``nn.Module``.

The MNIST networks take ``(N, 1, 28, 28)`` normalised images and return ``(N, 10)``
logits; VGG-16 takes ImageNet-shaped ``(N, 3, 224, 224)`` input. Layers are
named attributes (``fc1``, ``conv2``...), so state-dict keys and per-layer configs such as
``{"*": 5, "conv*": 8}`` read naturally. Build them by name with :func:`build_model`; the
``(name, kwargs)`` pair is stored in every checkpoint and ``.dcz`` file so the model can
be rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable
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
    "count_parameters",
]


class LeNet300100(nn.Module):
    """784-300-100-10 multilayer perceptron with ReLU: 266,610 parameters.

    The paper's network has no dropout; ``dropout > 0`` adds it after each hidden layer
    (pruning then scales it with the kept fraction, as the paper prescribes).
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)
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
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)  # (N, 20, 24, 24)
        self.conv2 = nn.Conv2d(20, 50, 5)  # (N, 50, 8, 8)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)
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
    except TypeError as e:
        raise ConfigError(f"bad arguments for model {name!r}: {e}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (weights and biases) in ``model``."""
    return sum(p.numel() for p in model.parameters())
