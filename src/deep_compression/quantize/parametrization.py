"""The quantized weight as a parametrization: ``weight = codebook[indices] * mask``.

``codebook`` (k,) is a trainable ``nn.Parameter``; ``indices`` (the weight's shape, the
narrowest signed integer type that holds ``k``: int8 up to 128 centroids, int16 up to
32,768) and ``mask`` (bool, the weight's shape) are buffers. Autograd through the gather gives each
centroid the sum of the gradients of the weights assigned to it, which is exactly the
paper's centroid update; assignments stay fixed. Pruned positions are not a cluster: the
mask zeroes them whatever their index holds (by convention index 0).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["QuantizedWeight", "index_dtype"]


def index_dtype(k: int) -> torch.dtype:
    """The narrowest signed integer dtype for cluster indices ``0 .. k-1``.

    Why it matters: a quantized layer keeps its float original (parametrize holds it), the
    indices and the mask; with int32 indices a quantized VGG-16 (conv 8 / fc 5 bits) takes
    3.1x the dense model in memory. Signed types only: torch reads a uint8 index tensor as
    a mask, so ``codebook[indices]`` would silently mean something else; with int8/int16 it
    fails loudly and ``codebook[indices.long()]`` is the way.
    """
    if k <= 2**7:
        return torch.int8
    if k <= 2**15:
        return torch.int16
    return torch.int32


class QuantizedWeight(nn.Module):
    """Shared-weight parametrization of one layer's weight.

    Args:
        codebook: ``(k,)`` float centroids, ``k <= 2**16``.
        indices: integer cluster index per weight, the weight's shape, values in ``[0, k)``.
        mask: bool keep-mask, the weight's shape (all True when the layer is not pruned).
    """

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        assert codebook.ndim == 1 and indices.shape == mask.shape
        k = codebook.numel()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
            # Checked before narrowing: a cast to uint8 would wrap a bad index silently.
            raise ValueError(f"cluster indices outside [0, {k})")
        self.codebook = nn.Parameter(codebook.detach().to(torch.float32).clone())
        self.register_buffer("indices", indices.detach().to(index_dtype(k)).clone())
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        # ``original`` (the float weight kept by torch's parametrize machinery) is ignored:
        # the weight is entirely determined by the codebook, the indices and the mask.
        # The value of ``codebook[indices] * mask`` (pruned entries +0.0, never -0.0), 3x
        # faster and in 40% of the memory on VGG-16's fc6 (0.31 s and +0.49 GB vs 0.99 s
        # and +1.18 GB, one thread): advanced indexing is torch's slow general path, and
        # ``* mask`` first converts the bool mask to a float tensor the size of the layer.
        # Autograd gives the same centroid gradient: index_select's backward sums the
        # weights' gradients per index; masked_fill_'s zeroes those of pruned entries.
        # index_select takes int32/int64 indices: widen the compact buffer for the lookup.
        flat = self.codebook.index_select(0, self.indices.reshape(-1).to(torch.int32))
        return flat.view(self.indices.shape).masked_fill_(torch.logical_not(self.mask), 0.0)

    def extra_repr(self) -> str:
        return f"k={self.codebook.numel()}, nonzero={int(self.mask.sum())}/{self.mask.numel()}"
