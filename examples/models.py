"""Networks defined outside the package, as a user's own would be.

Use them from a recipe (``model = "../examples/models.py:resnet"``) or the command line
(``--model examples/models.py:resnet --model-arg depth=20``): deep-compression imports this
file only because the user named it.

* :class:`CifarResNet`: the CIFAR ResNets of He et al. (2016, Section 4.2): 6n+2 layers,
  3x3 convolutions with BatchNorm, residual additions, option-A shortcuts (subsampling
  plus zero-padded channels, no parameters). ``depth=20`` with ``in_channels=3`` has the
  state-dict names of the widely used pretrained CIFAR-10 checkpoints (``conv1``,
  ``bn1``, ``layer1.0.conv1``, ..., ``linear``), so their ``.th`` files load as they are.
* :class:`SeparableNet`: depthwise-separable convolutions (grouped 3x3 depthwise, 1x1
  pointwise, BatchNorm), as in MobileNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ShortcutA(nn.Module):
    """Option A: take every other pixel and pad the new channels with zeros."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ShortcutA(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(
        self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, planes = [], width
        for i, out in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(planes, out, stride))
                planes = out
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet(
    depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16
) -> CifarResNet:
    """A CIFAR ResNet (``depth`` = 20, 32, 44, 56, ...); ``in_channels=1`` for MNIST-like data."""
    return CifarResNet(depth, num_classes, in_channels, width)


class _Separable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.depthwise(x)))
        return F.relu(self.bn2(self.pointwise(x)))


class SeparableNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.blocks = nn.Sequential(
            _Separable(width, 2 * width, 2),
            _Separable(2 * width, 2 * width, 1),
            _Separable(2 * width, 4 * width, 2),
            _Separable(4 * width, 4 * width, 1),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.blocks(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def separable(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> SeparableNet:
    """A depthwise-separable network (MobileNet-style)."""
    return SeparableNet(num_classes, in_channels, width)
