"""The pruning mask as a parametrization that lives on the layer.

``register_parametrization(layer, "weight", PruningMask(mask))`` makes ``layer.weight``
compute ``original * mask`` in every forward pass. The mask is a buffer of the
parametrization, so ``state_dict()`` holds it under
``<layer>.parametrizations.weight.0.mask`` and a checkpoint round-trips it. Because the
product is taken in the forward pass, masked entries receive zero gradient; the original
entries under the mask are also set to zero when pruning, so momentum and (coupled) weight
decay, whose update is proportional to the value, never move them either.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["PruningMask", "PRUNABLE_TYPES", "prunable_layers", "get_mask", "unparametrize_"]

# Layers whose ``weight`` can be pruned (and quantized). Biases never are.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class PruningMask(nn.Module):
    """``weight = original * mask``; ``mask`` is a bool buffer of the weight's shape."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask

    def extra_repr(self) -> str:
        kept = int(self.mask.sum())
        return f"kept={kept}/{self.mask.numel()}"


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The ``Linear`` and ``ConvNd`` layers of ``model`` by qualified name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def get_mask(layer: nn.Module, tensor_name: str = "weight") -> torch.Tensor | None:
    """The bool keep-mask of ``layer.<tensor_name>`` if a parametrization holds one, else None.

    Any parametrization with a ``mask`` buffer counts (pruning masks and quantized weights
    both carry one), so later stages need not know which stage added it.
    """
    if not parametrize.is_parametrized(layer, tensor_name):
        return None
    for p in layer.parametrizations[tensor_name]:
        mask = getattr(p, "mask", None)
        if isinstance(mask, torch.Tensor):
            return mask
    return None


def unparametrize_(layer: nn.Module, value: torch.Tensor | None = None) -> None:
    """Make ``layer.weight`` a plain parameter holding its parametrized value, in place.

    ``parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)``,
    safe for copies: torch gives a parametrized module a generated class holding the
    ``weight`` property, and ``copy.deepcopy`` shares that class between the copies;
    removing the parametrization deletes the property from the class, which breaks every
    other copy. Giving this module its own copy of the class first confines the change
    to it. (``parametrize.type_before_parametrizations`` names the plain class; the
    generated one must stay until torch has removed the property from it.)

    Args:
        layer: a module whose ``weight`` is parametrized.
        value: the parametrized weight, if the caller has just computed it (torch would
            compute it again: on VGG-16 that is a product the size of each layer, for
            nothing).
    """
    cls = layer.__class__
    layer.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    if value is None:
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        return
    # What leave_parametrized=True does, with the value given: the original parameter
    # (same object, so optimizers and hooks holding it stay valid) takes the value.
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    with torch.no_grad():
        layer.weight.set_(value)
