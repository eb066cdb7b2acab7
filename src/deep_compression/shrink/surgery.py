"""Physically removing channels, and rebuilding a shrunk network from a file.

:func:`remove_channels_` slices every tensor a group's channels index (see
:mod:`.graph`), so the network really gets smaller: fewer filters, fewer BatchNorm
channels, narrower weight matrices, fewer FLOPs.

A shrunk network must be rebuilt from a file. Two ways, both used:

* the built-in LeNets take their widths as arguments (``LeNet5(channels=(8, 16),
  hidden=40)``): :func:`shrunk_spec` writes the new widths into the model spec, so a file
  decodes straight into the smaller model by name and arguments alone;
* any other network (the user's ``net.py:name``, whose arguments we cannot interpret) is
  rebuilt at its original widths and then :func:`resize_to_` gives each ``Conv2d``,
  ``Linear`` and ``BatchNorm`` the shape the file stores, before its tensors are loaded.
  The file's metadata says ``"shrunk": true`` so this happens only for shrunk files, and
  it works when the model's ``forward`` takes widths from its layers (as every model of
  ``examples/models.py`` does); a ``forward`` that hard-codes a width (``x.view(-1, 800)``)
  fails with the shape error torch gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.errors import ConfigError, FormatError
from deep_compression.records import ModelSpec
from deep_compression.shrink.graph import ChannelGroup

__all__ = [
    "remove_channels_",
    "shrunk_spec",
    "resize_to_",
    "shrunk_marker",
    "WIDTH_ARGS",
    "SHRUNK_KEY",
]

# The metadata key (in CheckpointMeta.details) marking a shrunk network.
SHRUNK_KEY = "shrunk"

_Layer = nn.Conv2d | nn.Linear | nn.BatchNorm1d | nn.BatchNorm2d


def _removed_positions(
    groups: Sequence[ChannelGroup], keep: Mapping[str, Sequence[int]]
) -> dict[tuple[str, int], set[int]]:
    """``(layer, dim) -> positions to remove``: dim 0 for ``out``/``bn``, 1 for ``in``."""
    out: dict[tuple[str, int], set[int]] = {}
    for group in groups:
        if group.name not in keep:
            continue
        kept = set(keep[group.name])
        removed = [c for c in range(group.size) if c not in kept]
        for m in group.members:
            dim = 1 if m.kind == "in" else 0
            spatial = m.spatial if m.kind == "in" else 1
            target = out.setdefault((m.module, dim), set())
            for c in removed:
                start = (m.offset + c) * spatial
                target.update(range(start, start + spatial))
    return out


def _slice_(layer: nn.Module, dim: int, removed: set[int]) -> None:
    """Keep the positions of ``layer``'s channel dim ``dim`` not in ``removed``."""
    size = _channel_tensor(layer).shape[dim]
    index = torch.tensor([i for i in range(size) if i not in removed], dtype=torch.long)
    names = ["weight"] + (["bias"] if dim == 0 and layer.bias is not None else [])
    if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
        names = ["weight", "bias", "running_mean", "running_var"]
    for name in names:
        t = getattr(layer, name)
        if t is None:
            continue
        new = t.detach().index_select(dim, index.to(t.device)).clone()
        if isinstance(t, nn.Parameter):
            setattr(layer, name, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            setattr(layer, name, new)
    _set_sizes(layer)


def _channel_tensor(layer: nn.Module) -> torch.Tensor:
    """The tensor whose shape gives the layer's sizes (a BatchNorm without affine
    parameters has only its running statistics)."""
    return layer.weight if layer.weight is not None else layer.running_mean


def _set_sizes(layer: nn.Module) -> None:
    """The layer's size attributes (``in_channels``...) from its weight's shape."""
    shape = _channel_tensor(layer).shape
    if isinstance(layer, nn.Conv2d) and layer.groups > 1:  # depthwise stays depthwise
        layer.out_channels = layer.in_channels = layer.groups = shape[0]
    elif isinstance(layer, nn.Conv2d):
        layer.out_channels, layer.in_channels = shape[0], shape[1] * layer.groups
    elif isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = shape[0], shape[1]
    else:
        layer.num_features = shape[0]


def remove_channels_(
    model: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, Sequence[int]]
) -> None:
    """Keep only channels ``keep[group.name]`` of each named group, in place.

    Args:
        model: a plain model (no pruning or quantization parametrizations: structured
            pruning comes first in the pipeline).
        groups: from :func:`~deep_compression.shrink.graph.trace_groups`.
        keep: group name -> the channel indices (``0 <= c < size``) to keep.

    Raises:
        ConfigError: a parametrized model, an unknown or pinned group, bad indices.
    """
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError(
            "structured pruning needs a plain model: shrink before pruning or quantizing"
        )
    by_name = {g.name: g for g in groups}
    for name, kept in keep.items():
        group = by_name.get(name)
        if group is None:
            raise ConfigError(f"no channel group {name!r} (groups: {', '.join(by_name)})")
        if len(set(kept)) < group.size and group.pinned:
            raise ConfigError(f"group {name!r} cannot be pruned: {group.pinned}")
        if not kept or any(not 0 <= int(c) < group.size for c in kept):
            raise ConfigError(
                f"group {name!r}: keep 1..{group.size} channels in 0..{group.size - 1}"
            )
    modules = dict(model.named_modules())
    for (layer, dim), removed in _removed_positions(groups, keep).items():
        if removed:
            _slice_(modules[layer], dim, removed)


# Built-in model name -> its width arguments read off a (shrunk) instance.
WIDTH_ARGS: dict[str, Callable[[nn.Module], dict[str, object]]] = {
    "lenet-5": lambda m: {
        "channels": [m.conv1.out_channels, m.conv2.out_channels],
        "hidden": m.fc1.out_features,
    },
    "lenet-300-100": lambda m: {"hidden": [m.fc1.out_features, m.fc2.out_features]},
}


def shrunk_spec(spec: ModelSpec, model: nn.Module) -> ModelSpec:
    """``spec`` with the widths of the shrunk ``model`` when the model takes them as
    arguments (:data:`WIDTH_ARGS`); otherwise unchanged (the loader resizes the layers
    to the stored shapes: :func:`resize_to_`)."""
    widths = WIDTH_ARGS.get(spec.name)
    if widths is None:
        return spec
    return ModelSpec(spec.name, {**spec.kwargs, **widths(model)})


def shrunk_marker(details: Mapping[str, object]) -> dict[str, object]:
    """``{"shrunk": true}`` when metadata ``details`` say the network was shrunk, else
    ``{}``: what a file keeps of a checkpoint's details so its loader resizes layers."""
    return {SHRUNK_KEY: True} if details.get(SHRUNK_KEY) is True else {}


def resize_to_(model: nn.Module, shapes: Mapping[str, Sequence[int]], where: str) -> int:
    """Give each ``Conv2d``, ``Linear`` and ``BatchNorm`` of ``model`` the shape its
    weight has in ``shapes`` (state-dict key -> shape, as a file stores them), with
    uninitialised tensors of that shape on the layer's device (the file's values are
    loaded next). Returns how many layers changed.

    Raises:
        FormatError: a stored shape that no channel count explains (a different kernel,
            a grouped convolution, another number of dimensions).
    """
    changed = 0
    for name, layer in model.named_modules():
        if not isinstance(layer, _Layer):
            continue
        tensor = "weight" if layer.weight is not None else "running_mean"
        key = f"{name}.{tensor}" if name else tensor
        if key not in shapes:
            continue
        old, new = tuple(_channel_tensor(layer).shape), tuple(int(s) for s in shapes[key])
        if old == new:
            continue
        grouped = isinstance(layer, nn.Conv2d) and layer.groups != 1
        depthwise = grouped and layer.groups == old[0] and old[1] == new[1] == 1
        if len(old) != len(new) or old[2:] != new[2:] or (grouped and not depthwise):
            raise FormatError(f"{where}: {key} has shape {new}, the model's layer is {old}")
        for tname, t in list(layer.named_parameters(recurse=False)) + list(
            layer.named_buffers(recurse=False)
        ):
            if t.ndim == 0:
                continue  # num_batches_tracked
            shape = new if tname == tensor else (new[0],)
            fresh = torch.empty(shape, dtype=t.dtype, device=t.device)
            setattr(layer, tname, nn.Parameter(fresh) if isinstance(t, nn.Parameter) else fresh)
        _set_sizes(layer)
        changed += 1
    return changed
