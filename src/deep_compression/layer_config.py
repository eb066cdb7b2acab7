"""Per-layer settings in the ``{"*": default, "conv*": ..., "fc1": ...}`` shape.

A key selects layers by name or by module type:

* ``"conv1"``, ``"layer1.0.conv1"``: that layer (its name in ``model.named_modules()``;
  a name without wildcards means exactly that layer);
* ``"layer1.*"``: a dotted ``fnmatch`` pattern, matched against the full name;
* ``"conv*"``: a pattern without a dot, matched against the last part of the name, so it
  reaches nested layers (``conv1`` and ``layer3.2.conv2`` alike);
* ``"type:Conv2d"``, ``"type:Conv*"``, ``"type:Linear"``: every layer whose class (or a
  base class: subclasses and parametrized layers count) has that name;
* ``"*"``: every layer not matched otherwise.

The most specific key wins: an exact name, then a full-name pattern, then a last-part
pattern (longest first), then a type, then ``"*"``. Every key must match some layer (a
typo such as ``"fc4"`` is an error). No torch here: layers are given as names, or as a
mapping of names to modules whose class names are read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import TypeVar

from deep_compression.errors import ConfigError

__all__ = ["resolve", "check_patterns", "layer_kinds", "TYPE_PREFIX"]

T = TypeVar("T")
TYPE_PREFIX = "type:"


def layer_kinds(layers: Mapping[str, object] | Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Name -> the class names of the layer and its bases (``()`` for bare names)."""
    if isinstance(layers, Mapping):
        return {n: tuple(c.__name__ for c in type(m).__mro__) for n, m in layers.items()}
    return {n: () for n in layers}


def _rank(key: str, layer: str, kinds: tuple[str, ...]) -> tuple[int, int] | None:
    """How specifically ``key`` matches ``layer`` (higher wins), or None."""
    if key == layer:
        return (5, len(key))
    if key == "*":
        return (0, 0)
    if key.startswith(TYPE_PREFIX):
        pattern = key[len(TYPE_PREFIX) :]
        return (1, len(pattern)) if any(fnmatchcase(k, pattern) for k in kinds) else None
    if not any(c in key for c in "*?["):
        return None  # a plain name is exact
    literal = len(key.replace("*", "").replace("?", ""))
    if "." in key:
        return (4, literal) if fnmatchcase(layer, key) else None
    return (3, literal) if fnmatchcase(layer.rpartition(".")[2], key) else None


def resolve(
    per_layer: Mapping[str, T],
    layer: str,
    what: str = "setting",
    kinds: tuple[str, ...] = (),
) -> T:
    """The value of ``per_layer`` that applies to ``layer`` (whose class names are
    ``kinds``, see :func:`layer_kinds`).

    Raises:
        ConfigError: no key matches (give a ``"*"`` default).
    """
    best: tuple[tuple[int, int], str] | None = None
    for key in per_layer:
        rank = _rank(key, layer, kinds)
        if rank is not None and (best is None or (rank, key) > best):
            best = (rank, key)
    if best is None:
        raise ConfigError(f"no {what} for layer {layer!r}: add it or a '*' default")
    return per_layer[best[1]]


def check_patterns(
    per_layer: Mapping[str, object], layers: Mapping[str, object] | Iterable[str], what: str
) -> None:
    """Reject keys that match no layer (usually a typo such as ``"fc4"``)."""
    kinds = layer_kinds(layers)
    for key in per_layer:
        if key != "*" and not any(_rank(key, n, k) for n, k in kinds.items()):
            names = ", ".join(kinds)
            raise ConfigError(f"{what}: key {key!r} matches no layer (layers: {names})")
