"""Every key a recipe may hold, read from the configuration dataclasses that
:mod:`deep_compression.recipe` parses, for the generated page ``docs/RECIPE.md`` (see
:mod:`deep_compression.cli.reference`).

The tables are found by walking the type annotations of
:class:`~deep_compression.recipe.Recipe` and :class:`~deep_compression.recipe.NoRetrainRecipe`;
a key's meaning is its entry in the ``Attributes:`` section of its class's docstring, and
its default is what the recipe parser itself gives when the key is left out.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MINIMAL_NO_RETRAIN",
    "MINIMAL_RECIPE",
    "Key",
    "Section",
    "attributes",
    "cell",
    "keys_of",
    "recipe_markdown",
    "recipe_sections",
    "undocumented",
    "with_table",
]

# The smallest recipes of each kind that parse: the generator reads defaults off them.
MINIMAL_RECIPE: dict[str, Any] = {
    "model": "lenet-5",
    "prune": {"rounds": [{"criteria": {"*": {"method": "none"}}}]},
    "quantize": {},
}
MINIMAL_NO_RETRAIN: dict[str, Any] = {"model": "lenet-5", "no_retrain": {"lam": 1e-7}}
# NoRetrainPlan keeps the quantizer's settings in a NoRetrainConfig, but its table lists
# them next to its own keys (``lam`` beside ``max_error_increase``); ``lam_given`` is
# derived from whether ``lam`` was written, not a key.
_FLATTENED = {("NoRetrainPlan", "config")}
_NOT_KEYS = {("NoRetrainPlan", "lam_given")}
# Tables that the recipe parser also takes in a short form (their ``from_value``).
SHORTHAND = {
    "DatasetConfig": "string or table",
    "ValidationConfig": "integer, number, string or table",
}


@dataclass(frozen=True)
class Key:
    """One recipe key: its name, TOML type, default (as TOML text) and meaning."""

    name: str
    type: str
    default: str
    meaning: str


@dataclass(frozen=True)
class Section:
    """One table of a recipe.

    Attributes:
        title: how a recipe writes it (``[prune.retrain]``, ``[[prune.rounds]]``).
        path: where it sits in the parsed TOML document: table names, ``0`` for the first
            element of an array of tables, ``"*"`` for a per-layer entry.
        classes: the dataclasses whose fields are its keys (two for ``[no_retrain]``).
        fixed: keys a probe of this table must carry (a criterion's ``method``).
        keys: the keys, in the classes' field order.
        summary: the first paragraph of the class docstring.
    """

    title: str
    path: tuple[str | int, ...]
    classes: tuple[type, ...]
    fixed: Mapping[str, str]
    keys: tuple[Key, ...]
    summary: str


# ------------------------------------------------------------------ docstrings to markdown
def _rst(text: str) -> str:
    """Sphinx markup as markdown: ``x`` -> `x`, :class:`~a.B` -> `B`."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`", text)
    return text.replace("``", "`")


def attributes(cls: type) -> dict[str, str]:
    """The ``Attributes:`` entries of ``cls``'s docstring, one line of markdown each."""
    doc = typing.cast(str, cls.__doc__ or "")
    lines = doc.expandtabs().splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return out
    indent = len(lines[start]) - len(lines[start].lstrip())
    name = None
    for line in lines[start + 1 :]:
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth <= indent:
            break  # the next section
        entry = re.match(r"(\w+): (.*)", line.strip())
        if entry and depth <= indent + 4:
            name = entry.group(1)
            out[name] = entry.group(2)
        elif name and line.strip():
            out[name] += " " + line.strip()
    return {k: _rst(v) for k, v in out.items()}


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return _rst(" ".join(line.strip() for line in doc.splitlines())).removesuffix(" ::")


# ------------------------------------------------------------------------ types and values
def _config_classes(tp: Any) -> list[type]:
    """The project's config dataclasses among ``tp`` and its union members."""
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, _UnionType) else (tp,)
    return [
        m
        for m in members
        if dataclasses.is_dataclass(m) and m.__module__.startswith("deep_compression.")
    ]


_UnionType = type(int | str)


def _type_name(tp: Any) -> str:
    """A field's annotation in TOML's vocabulary."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and tp.__name__ in SHORTHAND:
        return SHORTHAND[tp.__name__]
    if origin in (typing.Union, _UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin is not None and issubclass(origin, Mapping):
        return "table" if args[1] is Any else f"table of {_plural(args[1])}"
    if origin in (tuple, list) or (origin is not None and issubclass(origin, Sequence)):
        return f"array of {_plural(args[0])}" if args else "array"
    if dataclasses.is_dataclass(tp) or _config_classes(tp):
        return "table"
    basic = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return basic.get(tp, "any")


def _plural(tp: Any) -> str:
    """The element type of a table or array: ``tables``, ``(integer or string)``."""
    name = _type_name(tp)
    return "tables" if name == "table" else f"({name})" if " or " in name else name


def _toml(value: Any) -> str:
    """``value`` as TOML text (``None``: not set)."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{ }"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _key(name: object) -> str:
    return str(name) if re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) else f'"{name}"'


# --------------------------------------------------------------------- walking the recipe
def _parse(doc: Mapping[str, Any]) -> Any:
    from deep_compression.recipe import NoRetrainRecipe, Recipe

    return (NoRetrainRecipe if "no_retrain" in doc else Recipe).from_dict(doc)


def with_table(doc: Mapping[str, Any], path: Sequence[str | int], table: Mapping[str, Any]):
    """A deep copy of ``doc`` whose table at ``path`` gets the keys of ``table`` (missing
    tables on the way are created empty)."""
    import copy

    out = copy.deepcopy(dict(doc))
    node: Any = out
    for part in path:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node.update(table)
    return out


def _at(obj: Any, path: Sequence[str | int]) -> Any:
    """The parsed object at ``path`` (criteria entries by their key)."""
    for part in path:
        obj = obj[part] if isinstance(part, int) or isinstance(obj, Mapping) else getattr(obj, part)
    return obj


def _nested_default(own: Any, doc: Mapping[str, Any], path: tuple[str | int, ...]) -> str:
    """A nested table's default: not set, its table's defaults (what an empty table
    gives), or, where leaving the table out gives something else, that, as TOML."""
    if own is None:
        return "not set"
    if own == _at(_parse(with_table(doc, path, {})), path):
        return "its table's defaults"
    return _toml(own.to_dict())


def keys_of(
    sources: Mapping[type, Any], probe: Mapping[str, Any], path: tuple[str | int, ...]
) -> list[Key]:
    """The keys of the classes in ``sources`` (class -> its parsed object, or None when
    the table does not parse without the keys it requires), at ``path`` of the recipe
    ``probe``; keys the probe sets show their field's own default."""
    given = _at(probe, path)
    out = []
    for cls, parsed in sources.items():
        hints = typing.get_type_hints(cls)
        docs = attributes(cls)
        for f in dataclasses.fields(cls):
            if (cls.__name__, f.name) in _NOT_KEYS | _FLATTENED:
                continue
            own: Any = dataclasses.MISSING
            if f.default is not dataclasses.MISSING:
                own = f.default
            elif f.default_factory is not dataclasses.MISSING:
                own = f.default_factory()
            if own is dataclasses.MISSING:
                default = "required"
            elif _config_classes(hints[f.name]):
                default = _nested_default(own, probe, (*path, f.name))
            elif f.name in given or parsed is None:
                default = _toml(own)
            else:  # what the parser fills in, which may differ from the field's default
                default = _toml(getattr(parsed, f.name))
            out.append(Key(f.name, _type_name(hints[f.name]), default, docs.get(f.name, "")))
    return out


def _walk(
    doc: Mapping[str, Any],
    cls: type,
    path: tuple[str | int, ...],
    title: str,
    fixed: Mapping[str, str] | None = None,
) -> Iterator[Section]:
    """``cls``'s table at ``path`` of the minimal recipe ``doc``, then its nested tables."""
    from deep_compression.errors import ConfigError

    fixed = dict(fixed or {})
    probe = with_table(doc, path, fixed)
    try:
        parsed = _at(_parse(probe), path)
    except ConfigError:  # a table with required keys (a criterion): the fields' defaults
        parsed = None
    hints = typing.get_type_hints(cls)
    sources: dict[type, Any] = {cls: parsed}
    for owner, name in sorted(_FLATTENED):
        if owner == cls.__name__:
            sources[_config_classes(hints[name])[0]] = getattr(parsed, name, None)
    summary = _summary(cls)
    yield Section(title, path, tuple(sources), fixed, tuple(keys_of(sources, probe, path)), summary)
    for f in dataclasses.fields(cls):
        if (cls.__name__, f.name) in _FLATTENED:
            continue
        tp = hints[f.name]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        inner = (*path, f.name)
        dotted = ".".join(str(p) for p in inner if isinstance(p, str))
        if _config_classes(tp):
            yield from _walk(doc, _config_classes(tp)[0], inner, f"[{dotted}]")
        elif origin is tuple and args and _config_classes(args[0]):
            yield from _walk(doc, _config_classes(args[0])[0], (*inner, 0), f"[[{dotted}]]")
        elif origin is not None and issubclass(origin, Mapping) and _config_classes(args[1]):
            for member in _config_classes(args[1]):
                method = member.method  # type: ignore[attr-defined]
                entry = f'{dotted}.<layer> = {{ method = "{method}", ... }}'
                yield from _walk(doc, member, (*inner, "*"), entry, {"method": method})


def recipe_sections() -> dict[str, list[Section]]:
    """Every table of both kinds of recipe, by kind, in the order a reader meets them."""
    from deep_compression.recipe import NoRetrainRecipe, Recipe

    return {
        "A recipe: train, prune, quantize, encode": list(
            _walk(MINIMAL_RECIPE, Recipe, (), "top level")
        ),
        "A no-retrain recipe (`[no_retrain]` instead of training)": list(
            _walk(MINIMAL_NO_RETRAIN, NoRetrainRecipe, (), "top level")
        ),
    }


def undocumented() -> list[str]:
    """``Class.key`` of every recipe key whose class docstring does not explain it."""
    return [
        f"{s.classes[0].__name__}.{k.name} ({s.title})"
        for sections in recipe_sections().values()
        for s in sections
        for k in s.keys
        if not k.meaning
    ]


def _value(default: str) -> str:
    """A default as code, unless it is words (``required``, ``not set``)."""
    words = default in ("required", "not set") or default.startswith("its table")
    return cell(default) if words else f"`{cell(default)}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def recipe_markdown(header: str) -> str:
    """The text of ``docs/RECIPE.md``."""
    out = [
        header,
        "# Recipe reference\n",
        "Every key a recipe TOML file may hold, with its type, the value used when it is "
        "left out, and its meaning (from the docstring of the class that reads it). "
        "Unknown keys are an error that lists the allowed ones. How recipes are used: "
        "[USAGE.md](USAGE.md); the shipped ones: [`recipes/`](../recipes).\n",
    ]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for kind, sections in recipe_sections().items():
        out.append(f"## {kind}\n")
        for s in sections:
            rows = tuple(f"{k.name}|{k.type}|{k.default}" for k in s.keys)
            if (s.title, rows) in seen:
                out.append(f"### `{s.title}`\n\nAs in the recipe above.\n")
                continue
            seen.add((s.title, rows))
            where = ", ".join(f"`{c.__module__}.{c.__name__}`" for c in s.classes)
            title = "Top level" if s.title == "top level" else f"`{s.title}`"
            out.append(f"### {title}\n\n{s.summary} ({where})\n")
            if not s.keys:
                out.append("No other keys.\n")
                continue
            out.append("| key | type | default | meaning |\n|:--|:--|:--|:--|")
            out.extend(
                f"| `{k.name}` | {cell(k.type)} | {_value(k.default)} | {cell(k.meaning)} |"
                for k in s.keys
            )
            out.append("")
    return "\n".join(out).rstrip() + "\n"
