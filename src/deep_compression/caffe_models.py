"""SqueezeNet v1.0 and AlexNet with Caffe's layer order, names and shapes.

Song Han released Deep-Compressed SqueezeNet and AlexNet weights in his own ``.net``
layout (:mod:`deep_compression.han_net`), whose tensors are identified only by their
position in the Caffe network. These modules reproduce those networks so the weights can
be loaded and run: a module path is the Caffe layer name with ``/`` replaced by ``.``
(``fire2/conv1x1_1`` -> ``fire2.conv1x1_1.weight``), and :func:`caffe_layers` lists the
parametrized layers in Caffe's order with their shapes.

* **SqueezeNet v1.0** as in ``songhan/SqueezeNet-Deep-Compression``'s
  ``SqueezeNet_deploy.prototxt``: 7x7/2 ``conv1`` (96), max-pool, fire2-fire9 (squeeze
  ``conv1x1_1``, expand ``conv1x1_2`` and ``conv3x3_2``, concatenated), max-pools after
  fire4 and fire8, ``conv_final`` (1x1, 1000, with the prototxt's ``pad: 1``), global
  average pooling: 1,248,424 parameters, input ``(N, 3, 227, 227)``.
* **AlexNet** (Caffe's ``bvlc_alexnet``): conv1 11x11/4 (96), LRN, pool; conv2 5x5 in two
  groups (256), LRN, pool; conv3 (384); conv4 and conv5 in two groups; fc6-fc8 with
  dropout: 60,965,224 parameters, input ``(N, 3, 227, 227)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SqueezeNet10", "AlexNetCaffe", "caffe_layers"]

# (squeeze, expand) widths of fire2 .. fire9.
_FIRES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))


class Fire(nn.Module):
    """A fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated on channels."""

    def __init__(self, in_ch: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.conv1x1_1 = nn.Conv2d(in_ch, squeeze, 1)
        self.conv1x1_2 = nn.Conv2d(squeeze, expand, 1)
        self.conv3x3_2 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.conv1x1_1(x))
        return torch.cat([torch.relu(self.conv1x1_2(s)), torch.relu(self.conv3x3_2(s))], 1)


class SqueezeNet10(nn.Module):
    """SqueezeNet v1.0, Caffe layout (see the module docstring)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 7, stride=2)
        in_ch = 96
        for i, (s, e) in enumerate(_FIRES, start=2):
            self.add_module(f"fire{i}", Fire(in_ch, s, e))
            in_ch = 2 * e
        self.drop = nn.Dropout(dropout)
        self.conv_final = nn.Conv2d(in_ch, num_classes, 1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 3, 2, ceil_mode=True)  # Caffe pools
        for i in range(2, 10):  # round up
            x = getattr(self, f"fire{i}")(x)
            if i in (4, 8):
                x = torch.max_pool2d(x, 3, 2, ceil_mode=True)
        x = torch.relu(self.conv_final(self.drop(x)))
        return x.mean(dim=(2, 3))  # (N, num_classes)


class AlexNetCaffe(nn.Module):
    """AlexNet as Caffe's ``bvlc_alexnet`` (grouped conv2, conv4, conv5; LRN)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(self.lrn(torch.relu(self.conv1(x))), 3, 2)  # (N, 96, 27, 27)
        x = torch.max_pool2d(self.lrn(torch.relu(self.conv2(x))), 3, 2)  # (N, 256, 13, 13)
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        x = torch.max_pool2d(torch.relu(self.conv5(x)), 3, 2)  # (N, 256, 6, 6)
        x = self.drop(torch.relu(self.fc6(x.flatten(1))))
        x = self.drop(torch.relu(self.fc7(x)))
        return self.fc8(x)


def caffe_layers(model: nn.Module) -> list[tuple[str, str, tuple[int, ...], int]]:
    """The model's conv and linear layers in definition (Caffe) order.

    Returns:
        ``(caffe name, module path, weight shape, bias size)`` per layer, e.g.
        ``("fire2/conv1x1_1", "fire2.conv1x1_1", (16, 96, 1, 1), 16)``.
    """
    out = []
    for path, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            bias = m.bias.numel() if m.bias is not None else 0
            out.append((path.replace(".", "/"), path, tuple(m.weight.shape), bias))
    return out
