"""Fitting a state dict someone else wrote to the model that will hold it.

Published checkpoints hold the right tensors under slightly wrong names or types:

* **wrapper prefixes**: ``module.`` (``DataParallel``/DDP), ``model.`` or ``net.``
  (a Lightning module holding the network as an attribute), ``_orig_mod.``
  (``torch.compile``). :func:`match_keys` removes one only when every key has it *and*
  the names then fit the model better: a model may well call its own layers ``model``;
* **BatchNorm counters**: files written before PyTorch 0.4.1 have no
  ``num_batches_tracked``; :func:`batchnorm_counters` fills them in as PyTorch's own
  ``_NormBase._load_from_state_dict`` does for old state dicts: a zero ``long`` tensor;
* **half precision**: float16/bfloat16 files; :func:`cast_to_model` casts them to the
  model's floating type (PyTorch's ``copy_`` would too, silently; ``assign=True`` would
  not at all).

Nothing else is guessed: what does not fit after this stays an error naming the keys.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = [
    "PARAMETRIZED_KEY",
    "own_name",
    "stored_shapes",
    "match_keys",
    "batchnorm_counters",
    "cast_to_model",
]

T = TypeVar("T")

# A parametrized tensor's keys: ``fc1.parametrizations.weight.original`` (the tensor) and
# ``fc1.parametrizations.weight.0.mask`` (a parametrization's buffer). Groups: the layer
# (None at the top level), the tensor's name, the part, the buffer's name.
PARAMETRIZED_KEY = re.compile(r"^(?:(.*)\.)?parametrizations\.(\w+)\.(original|0\.(\w+))$")
# What torch.compile inserts: ``_orig_mod`` is the attribute holding the compiled module.
_COMPILED = "_orig_mod"


def own_name(key: str) -> str | None:
    """The key of the plain (unparametrized) model that state-dict ``key`` stands for:
    ``key`` itself, a parametrized tensor's name for its ``original``, None for a
    parametrization's own buffers (mask, codebook, indices)."""
    m = PARAMETRIZED_KEY.match(key)
    if m is None:
        return key
    if m.group(3) != "original":
        return None
    return f"{m.group(1)}.{m.group(2)}" if m.group(1) else m.group(2)


def stored_shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Key of the plain model -> the shape ``state`` stores for it (a parametrized
    tensor's ``original`` stands for the tensor): the layer sizes a structurally pruned
    model is rebuilt with before loading."""
    names = {key: own_name(key) for key in state}
    return {name: tuple(state[key].shape) for key, name in names.items() if name is not None}


def _fitting(keys: Iterable[str], model_keys: Collection[str]) -> int:
    """How many of ``keys`` name a tensor of the model."""
    return sum(1 for k in keys if own_name(k) in model_keys)


def _candidates(keys: list[str]) -> list[tuple[dict[str, str], str]]:
    """Renamings to try, least change first: without torch.compile's ``_orig_mod``, then
    without each dotted prefix all keys share (shortest first), on top of either."""
    bases: list[tuple[list[str], str]] = [(keys, "")]
    if any(_COMPILED in k.split(".") for k in keys):
        plain = [".".join(p for p in k.split(".") if p != _COMPILED) for k in keys]
        bases.append((plain, f"{_COMPILED}."))
    out = []
    for names, removed in bases:
        if removed:
            out.append((dict(zip(keys, names, strict=True)), removed))
        parts = [n.split(".")[:-1] for n in names]  # a key keeps at least its own name
        common = 0
        while parts and all(len(p) > common and p[common] == parts[0][common] for p in parts):
            common += 1
        for n in range(1, common + 1):
            prefix = ".".join(parts[0][:n]) + "."
            label = f"{removed} and {prefix}" if removed else prefix
            out.append((dict(zip(keys, (k[len(prefix) :] for k in names), strict=True)), label))
    return out


def match_keys(
    state: Mapping[str, T], model_keys: Collection[str]
) -> tuple[dict[str, T], str | None]:
    """``state`` renamed to the model's keys when a wrapper prefix is all that differs.

    Only when some key is not the model's: then each candidate (``_orig_mod.`` removed
    wherever it is, a dotted prefix shared by every key removed, or both) is scored by how
    many keys then name a tensor of the model, and the best is kept if it beats the names
    as they are (ties: the smaller change). A renaming that would merge two keys is never
    taken.

    Args:
        state: name -> tensor, as read.
        model_keys: the keys of the (plain) model's ``state_dict()``.

    Returns:
        ``(state, removed)``: the state (renamed or as it was) and what was removed
        (e.g. ``"model."``), None when nothing was.
    """
    keys = list(state)
    best = _fitting(keys, model_keys)
    if best == len(keys):
        return dict(state), None
    chosen: tuple[dict[str, str], str] | None = None
    for rename, removed in _candidates(keys):
        if len(set(rename.values())) != len(rename):
            continue  # two keys would become one
        score = _fitting(rename.values(), model_keys)
        if score > best:
            best, chosen = score, (rename, removed)
    if chosen is None:
        return dict(state), None
    rename, removed = chosen
    return {rename[k]: v for k, v in state.items()}, removed


def batchnorm_counters(model: nn.Module, missing: Iterable[str]) -> dict[str, torch.Tensor]:
    """Zero ``num_batches_tracked`` counters for the ``missing`` keys that are one of a
    BatchNorm (or InstanceNorm with running statistics: PyTorch applies the same rule to
    both) of ``model``; every other missing key is left to the caller's error.

    The counter only matters for ``momentum=None`` (a cumulative average): there a zero
    restarts the average from the loaded running statistics, as PyTorch does.
    """
    out = {}
    for key in missing:
        layer_name, _, name = key.rpartition(".")
        if name != "num_batches_tracked":
            continue
        try:
            layer = model.get_submodule(layer_name)
        except AttributeError:
            continue
        if isinstance(layer, _NormBase):
            out[key] = torch.zeros((), dtype=torch.long)
    return out


def cast_to_model(
    state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Floating tensors of ``state`` cast to the floating type of the model's tensor of the
    same key (``own``: the model's ``state_dict()``); integer and boolean tensors as they
    are.

    Returns:
        ``(state, note)``: the note says what was cast (``"cast 54 float16 tensors to
        float32"``), None when nothing was.
    """
    out, counts = {}, Counter[tuple[str, str]]()
    for key, value in state.items():
        target = own.get(key)
        if (
            target is not None
            and value.is_floating_point()
            and target.is_floating_point()
            and value.dtype != target.dtype
        ):
            counts[(_dtype_name(value.dtype), _dtype_name(target.dtype))] += 1
            value = value.to(target.dtype)
        out[key] = value
    if not counts:
        return out, None
    parts = [f"{n} {src} tensors to {dst}" for (src, dst), n in sorted(counts.items())]
    return out, "cast " + ", ".join(parts)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
