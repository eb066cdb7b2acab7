"""How a model is written to a ``.dcz`` file: the coder and the gap widths.

:class:`EncodeConfig` is the ``[encode]`` table of a recipe and the options of every
command that writes a ``.dcz`` (``encode``, ``import``, ``compress``). Its default is the
smallest coding this project has: ``coder="best"`` (per stream the smallest of Huffman,
ANS, fixed-width and context-adaptive coding) with every gap width chosen per layer
(``"auto"``). A named coder keeps the paper's gap widths where none is given, so
``EncodeConfig("huffman")`` is the paper's coding, bit for bit as it always was.

:func:`layer_gap_bits` and :func:`plain_gap_bits` turn a ``gap_bits`` setting into the
width of one layer's position stream (used by :mod:`deep_compression.encode`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from deep_compression.coding.coders import CODERS
from deep_compression.coding.gaps import best_gap_bits, check_gap_bits
from deep_compression.dcz import CODER_CHOICES, DEFAULT_CHUNK
from deep_compression.errors import ConfigError
from deep_compression.layer_config import layer_kinds, resolve
from deep_compression.recipe_io import from_table

if TYPE_CHECKING:  # torch is imported where a model is coded, not with the options
    from torch import nn

__all__ = [
    "DEFAULT_CODER",
    "DEFAULT_GAP_BITS",
    "EncodeConfig",
    "GapBits",
    "layer_gap_bits",
    "order0_coder",
    "plain_gap_bits",
]

# The smallest coding; the coders that choose every gap width themselves by default.
DEFAULT_CODER = "best"
_CHOOSING = ("best", "ctx")
# The paper's gap fields: 5 bits for fully connected layers, 8 for convolutions (what a
# named coder uses where no gap_bits key applies).
DEFAULT_GAP_BITS = {"linear": 5, "conv": 8}

GapBits = int | str | Mapping[str, int | str] | None


@dataclass(frozen=True)
class EncodeConfig:
    """How a model is written to a ``.dcz`` file (the ``[encode]`` table of a recipe).

    Attributes:
        coder: entropy coder of the gap and index streams: ``"best"`` (default: the
            smallest per stream, context-adaptive coding included; ``"ctx"`` is the same),
            ``"huffman"`` (the paper), ``"ans"`` or ``"fixed"`` (no entropy coding).
        gap_bits: gap field width per layer, ``{"fc*": 4, "conv2": "auto"}`` shape; a value
            may be ``"auto"`` (the width that makes that layer's gap stream smallest); a
            single int or ``"auto"`` means every layer. Layers no key matches get
            ``"auto"`` under ``"best"`` (kept as a ``"*"`` key, so the table says it) and
            the paper's widths (5 for fully connected, 8 for convolutions) under a named
            coder; a key that matches no layer is an error.
        chunk: symbols per Huffman chunk (decoder parallelism vs. 4 bytes per chunk).
    """

    coder: str = DEFAULT_CODER
    gap_bits: Mapping[str, int | str] | int | str = field(default_factory=dict)
    chunk: int = DEFAULT_CHUNK

    def __post_init__(self) -> None:
        if self.coder not in CODER_CHOICES:
            raise ConfigError(
                f"encode.coder must be one of {', '.join(CODER_CHOICES)}, got {self.coder!r}"
            )
        if isinstance(self.gap_bits, int | str) and not isinstance(self.gap_bits, bool):
            object.__setattr__(self, "gap_bits", {"*": self.gap_bits})  # every layer
        if not isinstance(self.gap_bits, Mapping):
            raise ConfigError(f"encode.gap_bits must be a table, got {self.gap_bits!r}")
        for key, value in self.gap_bits.items():
            if value != "auto":
                check_gap_bits(value, f"encode.gap_bits[{key!r}]")
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise ConfigError(f"encode.chunk must be an integer >= 1, got {self.chunk!r}")
        gap_bits = dict(self.gap_bits)
        if self.coder == "best":  # the smallest coding chooses the widths too
            gap_bits.setdefault("*", "auto")
        object.__setattr__(self, "gap_bits", MappingProxyType(gap_bits))

    def to_dict(self) -> dict[str, Any]:
        return {"coder": self.coder, "gap_bits": dict(self.gap_bits), "chunk": self.chunk}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "encode") -> EncodeConfig:
        """Build from the ``[encode]`` table; unknown keys are a :class:`ConfigError`."""
        return from_table(cls, d, where)


def _width(
    gap_bits: GapBits, module_name: str, module: nn.Module, default: int | None
) -> int | None:
    """The width ``gap_bits`` sets for a layer (``default`` if no key matches it); ``None``
    is "auto": the width that makes the layer's gap stream smallest."""
    bits = default if gap_bits is None else gap_bits
    if isinstance(gap_bits, Mapping):
        kinds = layer_kinds({module_name: module})[module_name]
        bits = resolve({"*": default, **gap_bits}, module_name, "gap_bits", kinds)
    if bits is None or bits == "auto":
        return None
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ConfigError(f"gap_bits for {module_name}: expected an int or 'auto', got {bits!r}")
    return bits


def layer_gap_bits(
    gap_bits: GapBits, module_name: str, module: nn.Module, positions: np.ndarray, coder: str
) -> int:
    """The gap width of a pruned layer whose kept flat indices are ``positions`` (shape
    ``(kept,)``, increasing). Where no key matches: ``"auto"`` under ``best``/``ctx``, the
    paper's width under a named coder."""
    from torch import nn

    conv = isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
    paper = DEFAULT_GAP_BITS["conv" if conv else "linear"]
    bits = _width(gap_bits, module_name, module, None if coder in _CHOOSING else paper)
    return best_gap_bits(positions, order0_coder(coder)) if bits is None else bits


def plain_gap_bits(gap_bits: GapBits, module_name: str, module: nn.Module) -> int | None:
    """The gap width ``gap_bits`` sets for a plain (unparametrized) weight whose zeros are
    found in its values; ``None`` ("auto", also where no key matches): the width that
    makes its gap stream smallest. No paper default: the paper pruned, this is found."""
    return _width(gap_bits, module_name, module, None)


def order0_coder(coder: str) -> str:
    """The order-0 coder (or ``"best"`` of them) that sizes ``coder``'s gap streams: ctx
    codes positions by their context, and its order-0 gap stream is the fallback."""
    return coder if coder in CODERS else "best"
