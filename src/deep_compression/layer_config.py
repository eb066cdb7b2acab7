"""Per-layer settings in the ``{"*": default, "conv*": ..., "fc1": ...}`` shape.

Keys are layer names (as in ``model.named_modules()``) or ``fnmatch`` patterns. The most
specific key wins: an exact name, then the longest matching pattern, then ``"*"``. This
is the shape users know from Distiller, without its class-name strings. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import TypeVar

from deep_compression.errors import ConfigError

__all__ = ["resolve", "check_patterns"]

T = TypeVar("T")


def resolve(per_layer: Mapping[str, T], layer: str, what: str = "setting") -> T:
    """The value of ``per_layer`` that applies to ``layer``.

    Raises:
        ConfigError: no key matches (give a ``"*"`` default).
    """
    if layer in per_layer:
        return per_layer[layer]
    matches = [k for k in per_layer if k != "*" and fnmatchcase(layer, k)]
    if matches:
        # Longest pattern first; ties broken by the number of literal characters, then text.
        best = max(matches, key=lambda k: (len(k.replace("*", "")), len(k), k))
        return per_layer[best]
    if "*" in per_layer:
        return per_layer["*"]
    raise ConfigError(f"no {what} for layer {layer!r}: add it or a '*' default")


def check_patterns(per_layer: Mapping[str, object], layers: Iterable[str], what: str) -> None:
    """Reject keys that match no layer (usually a typo such as ``"fc4"``)."""
    names = list(layers)
    for key in per_layer:
        if key != "*" and not any(fnmatchcase(n, key) for n in names):
            raise ConfigError(f"{what}: key {key!r} matches no layer (layers: {', '.join(names)})")
