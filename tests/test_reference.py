"""docs/RECIPE.md and docs/CLI.md are what the code says: regenerated here and compared,
every recipe key documented, and the keys listed per table exactly the keys the recipe
parser accepts there (asked of the parser itself, by feeding it an unknown key)."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from deep_compression.cli import recipe_keys, reference
from deep_compression.errors import ConfigError
from deep_compression.recipe import NoRetrainRecipe, Recipe

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", ["RECIPE.md", "CLI.md"])
def test_committed_pages_are_the_generated_ones(name: str) -> None:
    generated = reference.pages()[name]
    committed = (DOCS / name).read_text() if (DOCS / name).is_file() else ""
    assert committed == generated, f"docs/{name} is out of date: run {reference.REGENERATE}"


def test_every_recipe_key_is_documented() -> None:
    assert recipe_keys.undocumented() == []
    for sections in recipe_keys.recipe_sections().values():
        for section in sections:
            assert section.summary, f"{section.title}: its class has no docstring"


def _allowed(doc: dict, path: tuple, fixed: dict) -> set[str]:
    """The keys the recipe parser accepts in the table at ``path``: the list its error
    for an unknown key gives."""
    probe = recipe_keys.with_table(doc, path, {**fixed, "no_such_key_": 1})
    parse = NoRetrainRecipe.from_dict if "no_retrain" in doc else Recipe.from_dict
    with pytest.raises(ConfigError) as info:
        parse(probe)
    message = str(info.value)
    assert "no_such_key_" in message, message
    listed = re.search(r"\(allowed: (\[.*\]|none)\)", message)
    if listed:
        keys = [] if listed.group(1) == "none" else ast.literal_eval(listed.group(1))
    else:  # the validation table names its keys plainly: "(size, seed, source)"
        keys = re.search(r"\(([\w, ]+)\)$", message).group(1).split(", ")  # type: ignore[union-attr]
    return set(keys) - set(fixed)


def test_the_listed_keys_are_the_keys_the_parser_accepts() -> None:
    docs = {"A recipe": recipe_keys.MINIMAL_RECIPE, "A no-retrain": recipe_keys.MINIMAL_NO_RETRAIN}
    titles = []
    for kind, sections in recipe_keys.recipe_sections().items():
        doc = next(d for prefix, d in docs.items() if kind.startswith(prefix))
        for s in sections:
            listed = {k.name for k in s.keys}
            assert listed == _allowed(doc, s.path, dict(s.fixed)), s.title
            titles.append(s.title)
    # Every table a recipe can hold was found by the walk (a new nested config shows up).
    for title in ("[train]", "[shrink.retrain]", "[prune.retrain]", "[[prune.rounds]]",
                  "[quantize.finetune]", "[encode]", "[dataset]", "[validation]",
                  "[no_retrain]"):  # fmt: skip
        assert title in titles
    assert sum("criteria.<layer>" in t for t in titles) == 5  # std, fraction, global, ...


def test_defaults_are_what_the_parser_fills_in() -> None:
    sections = recipe_keys.recipe_sections()
    by_title = {s.title: s for s in sections["A recipe: train, prune, quantize, encode"]}
    keys = {k.name: k for k in by_title["[quantize.finetune]"].keys}
    assert keys["optimizer"].default == '"adam"' and keys["lr"].default == "0.001"
    keys = {k.name: k for k in by_title["[prune.retrain]"].keys}
    assert keys["lr"].default == "0.005"
    keys = {k.name: k for k in by_title["top level"].keys}
    assert keys["model"].default == "required" and keys["shrink"].default == "not set"
    parsed = Recipe.from_dict(recipe_keys.MINIMAL_RECIPE)
    keys = {k.name: k for k in by_title["[encode]"].keys}
    assert keys["coder"].default == f'"{parsed.encode.coder}"'
    assert keys["chunk"].default == str(parsed.encode.chunk)
    # The short forms the types claim parse.
    Recipe.from_dict({**recipe_keys.MINIMAL_RECIPE, "dataset": "fashion-mnist", "validation": 0.1})


def test_a_field_without_documentation_is_found() -> None:
    @dataclasses.dataclass(frozen=True)
    class Example:
        """One line.

        Attributes:
            documented: what it means,
                over two lines.
        """

        documented: int = 1
        forgotten: str = "x"

    docs = recipe_keys.attributes(Example)
    assert docs == {"documented": "what it means, over two lines."}
    keys = recipe_keys.keys_of({Example: Example()}, {}, ())
    assert [k.name for k in keys if not k.meaning] == ["forgotten"]


def test_every_command_and_option_is_in_the_cli_page() -> None:
    from deep_compression.cli import build_parser

    text = reference.cli_markdown()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    pages = dict(part.split("\n", 1) for part in text.split("\n## deep-compression ")[1:])
    assert list(pages) == list(commands)
    for name, command in commands.items():
        rows = [line.split(" | ")[0] for line in pages[name].splitlines() if line.startswith("| `")]
        for action in command._actions:
            if action.option_strings == ["-h", "--help"]:
                continue
            shown = action.option_strings or [action.metavar or action.dest.upper()]
            assert any(all(o in row for o in shown) for row in rows), (name, shown)


def test_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main(["--check", "--docs", str(DOCS)]) == 0
    assert reference.main(["--check", "--docs", str(tmp_path)]) == 1
    assert reference.REGENERATE in capsys.readouterr().err
    assert reference.main(["--write", "--docs", str(tmp_path)]) == 0
    assert reference.main(["--check", "--docs", str(tmp_path)]) == 0
