"""Sparse inference: run pruned fully connected layers as CSR matrix products.

A pruned ``nn.Linear`` still multiplies by every zero of its dense weight. After
:func:`sparsify_` the layer is a :class:`SparseLinear` that stores only the kept weights in
compressed sparse row (CSR) form and computes ``y = x @ W.T + b`` as ``W @ x.T + b`` on a
``torch.sparse_csr`` tensor, which this CPU build of torch hands to MKL's sparse BLAS:
``torch.addmv`` for a single input vector, ``torch.addmm`` for a batch.
:func:`densify_` turns the layers back into plain ``nn.Linear``.

How it was chosen (``benchmarks/sparse_speed.py --kernels``; the tables are in
``benchmarks/results/``):

- CSR with the sparse matrix on the left (``W @ x.T``) is the only fast layout torch has
  on CPU. On the VGG-16 fc6 shape at 4% density, COO (``torch.sparse.mm``), CSC, and
  ``x @ W_csr.T`` (dense on the left) were 40x to 130x slower than CSR at batch 1, and
  still slower (down to about 2x for COO) at batch 64.
- Batch 1 uses the matrix-vector product: ``addmv`` was about 1.2x to 2.6x faster than
  ``addmm`` with a one-column matrix on every layer shape tried.
- Indices are ``int32``: with ``int64`` ones torch converts them for MKL on every call,
  which made batch-1 and batch-8 products up to about 2x slower.
- scipy.sparse (single-threaded) was no faster than this at batch 1 and about 2.5x
  slower at batch 8, so it is not a dependency.
- It pays only on sparse enough layers. One thread, 4096x4096: sparse beat dense up to
  40-50% density at batch 1 and about 30% at batch 64; on LeNet-300-100's 784x300 fc1 up
  to 15-20% at batch 1 (the fixed cost of a call, a few microseconds, weighs more on
  small layers). Hence ``min_sparsity`` in :func:`sparsify_`.

Inference only: the kept weights are buffers, not parameters, and nothing here is meant
to be trained (train with the :class:`~deep_compression.prune.PruningMask`
parametrization instead, then sparsify).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.errors import ConfigError
from deep_compression.prune.mask import get_mask

__all__ = ["SparseLinear", "sparsify_", "densify_", "sparse_layers"]

_INT32_MAX = 2**31 - 1


class SparseLinear(nn.Module):
    """``nn.Linear`` whose ``(out_features, in_features)`` weight is a CSR sparse matrix.

    Same attributes and call as ``nn.Linear``: ``in_features``, ``out_features``,
    ``weight`` (here a ``torch.sparse_csr`` tensor of shape ``(out, in)``), ``bias``
    (``(out,)`` or None), and ``forward(x)`` for ``x`` of shape ``(*, in)``, returning
    ``(*, out)``. The CSR arrays are three buffers, so ``state_dict()``, ``.to()`` and
    ``.double()`` work as for any module:

    - ``crow_indices``: ``(out + 1,)`` int32, row ``r``'s entries are
      ``crow_indices[r]:crow_indices[r + 1]``;
    - ``col_indices``: ``(nnz,)`` int32 column of each kept weight, ascending within a row;
    - ``values``: ``(nnz,)`` the kept weights.

    Args:
        weight: ``(out, in)`` dense weight (its exact zeros are dropped) or a sparse COO /
            CSR tensor of that shape.
        bias: ``(out,)`` or None.

    >>> w = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, -1.0]])
    >>> layer = SparseLinear(w, torch.tensor([0.5, 0.0]))
    >>> layer
    SparseLinear(in_features=3, out_features=2, bias=True, nnz=3, density=50.0%)
    >>> layer(torch.tensor([1.0, 1.0, 3.0]))
    tensor([ 2.5000, -2.0000])
    >>> torch.equal(layer.to_dense(), w)
    True
    """

    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ConfigError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
        if not weight.is_floating_point():
            raise ConfigError(f"weight must be floating point, got {weight.dtype}")
        out_features, in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (out_features,):
            raise ConfigError(
                f"bias must have shape ({out_features},) to match weight "
                f"{tuple(weight.shape)}, got {tuple(bias.shape)}"
            )
        with torch.no_grad(), warnings.catch_warnings():
            # torch warns once per process that CSR support is "beta"; the first CSR tensor
            # is made here, so the warning is consumed here instead of in a user's loop.
            warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support")
            w = weight.detach()
            if w.layout == torch.sparse_coo:
                w = w.coalesce()
            elif w.layout not in (torch.strided, torch.sparse_csr):
                raise ConfigError(f"weight must be dense, COO or CSR, got layout {w.layout}")
            # From a dense weight this keeps exactly the non-zeros; a sparse weight keeps
            # its stored entries (explicit zeros included, which cost only their storage).
            csr = w.to_sparse_csr()
        nnz = csr.values().numel()
        # int32 indices: MKL (torch's CPU sparse backend here) takes 32-bit indices, and
        # torch converts int64 ones on every call. Fall back to int64 only when needed.
        index_dtype = torch.int32 if max(nnz, in_features) <= _INT32_MAX else torch.int64
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._csr_cache: tuple[torch.Tensor, ...] | None = None
        self.register_buffer("crow_indices", csr.crow_indices().to(index_dtype).contiguous())
        self.register_buffer("col_indices", csr.col_indices().to(index_dtype).contiguous())
        self.register_buffer("values", csr.values().clone().contiguous())
        if bias is None:
            self.register_buffer("bias", None)
        else:
            self.register_buffer("bias", bias.detach().to(self.values.dtype).clone())

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> SparseLinear:
        """The sparse copy of ``layer``'s current weight and bias (parametrized or not).

        Entries masked out by a pruning mask or quantized weight are never stored.
        """
        with torch.no_grad():
            bias = layer.bias.detach() if layer.bias is not None else None
            return cls(_sparse_weight(layer), bias)

    @property
    def nnz(self) -> int:
        """Number of stored weights."""
        return int(self.values.numel())

    @property
    def density(self) -> float:
        """Stored weights as a fraction of ``out_features * in_features``."""
        return self.nnz / max(1, self.out_features * self.in_features)

    @property
    def weight(self) -> torch.Tensor:
        """The ``(out, in)`` weight as a ``torch.sparse_csr`` tensor (shares the buffers)."""
        # Building the CSR view costs ~3 us a call, as much as the whole product on a
        # LeNet-sized layer, so it is kept. It shares storage with the buffers (in-place
        # edits show through); replacing a buffer (``.to()``, ``load_state_dict(assign=
        # True)``, assignment) is caught by identity, since the cache holds the old ones.
        # (Plain dict lookups: this runs on every forward, and nn.Module.__getattr__ is slow.)
        buffers = self._buffers
        crow, col, values = buffers["crow_indices"], buffers["col_indices"], buffers["values"]
        cached = self._csr_cache
        if (
            cached is None
            or cached[1] is not crow
            or cached[2] is not col
            or cached[3] is not values
        ):
            csr = torch.sparse_csr_tensor(
                crow,
                col,
                values,
                (self.out_features, self.in_features),
                check_invariants=False,  # valid by construction
            )
            cached = self._csr_cache = (csr, crow, col, values)
        return cached[0]

    def __getstate__(self) -> dict[str, object]:
        # A deep copy must not carry a CSR view of the original's buffers.
        state = super().__getstate__()
        state["_csr_cache"] = None
        return state

    def to_dense(self) -> torch.Tensor:
        """The ``(out, in)`` weight as an ordinary dense tensor (pruned entries are 0)."""
        return self.weight.to_dense()

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the dense weight and the same bias, dtype and device."""
        layer = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.values.device,
            dtype=self.values.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(self.to_dense())
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(*, in) -> (*, out)``: ``x @ W.T + bias`` computed as ``W @ x.T (+ bias)``."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ConfigError(
                f"SparseLinear expects input of shape (*, {self.in_features}), got {tuple(x.shape)}"
            )
        weight = self.weight
        if x.dtype != weight.dtype:
            raise ConfigError(f"SparseLinear holds {weight.dtype} weights, got {x.dtype} input")
        bias = self._buffers["bias"]
        lead = x.shape[:-1]
        if x.numel() == self.in_features:
            # One input vector: the sparse matrix-vector product (addmv) measured 1.2x to
            # 2.6x faster than addmm with a one-column matrix, on every layer shape tried.
            v = x.reshape(self.in_features)
            if bias is None:
                y = torch.mv(weight, v)
            else:
                y = torch.addmv(bias, weight, v)
            return y.reshape(*lead, self.out_features)
        # The sparse operand must be on the left: torch's fast CPU path is CSR @ dense.
        # x2.T is a free view; its layout made no measurable difference.
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        if bias is None:
            y = torch.mm(weight, x2.T)  # (out, N)
        else:
            y = torch.addmm(bias.unsqueeze(1), weight, x2.T)  # (out, N)
        # Back to (N, out) row-major, so callers can .view() the result as with nn.Linear.
        return y.T.contiguous().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, nnz={self.nnz}, density={100 * self.density:.1f}%"
        )


def _is_plain_linear(module: nn.Module) -> bool:
    # Exactly nn.Linear, or the class torch's parametrize injects on top of it. Subclasses
    # (e.g. MultiheadAttention's out_proj, whose parent reads ``.weight`` directly) may
    # depend on a dense weight, so they are left alone.
    cls = type(module)
    if cls is nn.Linear:
        return True
    return parametrize.is_parametrized(module) and cls.__bases__ == (nn.Linear,)


def _sparse_weight(layer: nn.Linear) -> torch.Tensor:
    """``layer``'s current ``(out, in)`` weight with every pruned entry exactly 0."""
    weight = layer.weight.detach()
    mask = get_mask(layer)
    if mask is not None:
        # The parametrization already multiplies by the mask; applying it again costs
        # nothing and guarantees a masked -0.0 or NaN*0 never becomes a stored entry.
        weight = torch.where(mask, weight, torch.zeros((), dtype=weight.dtype))
    return weight


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@torch.no_grad()
def sparsify_(model: nn.Module, *, min_sparsity: float = 0.5) -> nn.Module:
    """Swap the pruned ``nn.Linear`` layers of ``model`` for :class:`SparseLinear`, in place.

    A layer is swapped when at least ``min_sparsity`` of its weights are exactly zero
    (counting the entries its pruning mask or quantized weight masks out, found with
    :func:`~deep_compression.prune.get_mask`). Its current weight (the masked, or
    codebook-decoded, value) and bias are copied; the dense layer is dropped. Convolutions
    and ``nn.Linear`` subclasses are left as they are.

    The default 0.5 is where CSR (8 bytes per kept weight: value and int32 column) starts
    to need less memory than the dense float32 weight, and about where it starts to be
    faster on large layers at batch 1. Batches and small layers need sparser weights to
    gain (see the module docstring): raise it (e.g. 0.75) when speed is the only goal.

    Args:
        model: any module; ``model`` itself may be an ``nn.Linear``.
        min_sparsity: fraction of zero weights, in ``[0, 1]``, from which a layer is swapped.

    Returns:
        ``model`` (or, if ``model`` is itself a swapped ``nn.Linear``, its replacement).

    Raises:
        ConfigError: ``min_sparsity`` outside ``[0, 1]``.
    """
    if isinstance(min_sparsity, bool) or not isinstance(min_sparsity, int | float):
        raise ConfigError(f"min_sparsity must be a number in [0, 1], got {min_sparsity!r}")
    if not 0.0 <= min_sparsity <= 1.0:
        raise ConfigError(f"min_sparsity must be in [0, 1], got {min_sparsity!r}")
    # A layer registered under two names is swapped once and both names get the same
    # SparseLinear, preserving the sharing.
    done: dict[int, SparseLinear | None] = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not _is_plain_linear(module):
            continue
        key = id(module)
        if key not in done:
            weight = _sparse_weight(module)
            zeros = weight.numel() - int(torch.count_nonzero(weight))
            swap = weight.numel() > 0 and zeros >= min_sparsity * weight.numel()
            bias = module.bias.detach() if module.bias is not None else None
            done[key] = SparseLinear(weight, bias) if swap else None
            del weight  # a VGG fc6 copy is 411 MB: do not hold two while building the next
        new = done[key]
        if new is None:
            continue
        if not name:
            return new
        _replace(model, name, new)
    return model


@torch.no_grad()
def densify_(model: nn.Module) -> nn.Module:
    """Swap every :class:`SparseLinear` of ``model`` back to a plain ``nn.Linear``, in place.

    The new layers hold the dense weight with zeros at the pruned positions and no mask
    (use the pruning parametrization if the zeros must survive training).

    Returns:
        ``model`` (or, if ``model`` is itself a ``SparseLinear``, its dense replacement).
    """
    done: dict[int, nn.Linear] = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not isinstance(module, SparseLinear):
            continue
        if id(module) not in done:
            done[id(module)] = module.to_linear()
        new = done[id(module)]
        if not name:
            return new
        _replace(model, name, new)
    return model


def sparse_layers(model: nn.Module) -> dict[str, SparseLinear]:
    """The :class:`SparseLinear` layers of ``model`` by qualified name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SparseLinear)}
