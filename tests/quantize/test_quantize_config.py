"""QuantizeConfig and the [quantize] recipe table: one-to-one, validated, strict."""

from __future__ import annotations

from pathlib import Path

import pytest

from deep_compression.errors import ConfigError
from deep_compression.quantize import (
    DEFAULT_BITS,
    FINETUNE_DEFAULTS,
    QuantizeConfig,
    load_quantize_config,
)
from deep_compression.train import TrainConfig


def test_defaults() -> None:
    c = QuantizeConfig()
    assert dict(c.bits) == {} and dict(DEFAULT_BITS) == {"conv": 8, "other": 5}
    assert c.init == "linear" and c.finetune == FINETUNE_DEFAULTS


def test_bits_table_is_read_only() -> None:
    table = {"*": 6}
    c = QuantizeConfig(bits=table)
    table["*"] = 2  # the caller's dict is copied
    assert c.bits["*"] == 6
    with pytest.raises(TypeError):
        c.bits["*"] = 3  # type: ignore[index]
    assert hash(c) == hash(QuantizeConfig(bits={"*": 6})) and c == QuantizeConfig(bits={"*": 6})


def test_roundtrip_through_dict() -> None:
    c = QuantizeConfig(
        bits={"*": 4, "fc1": 3},
        init="density",
        lloyd_iterations=7,
        seed=3,
        finetune=TrainConfig(epochs=1, optimizer="adam", lr=0.01, weight_decay=0.0),
    )
    assert QuantizeConfig.from_dict(c.to_dict()) == c


def test_finetune_keys_not_given_take_the_finetune_defaults() -> None:
    c = QuantizeConfig.from_dict({"finetune": {"epochs": 9}})
    assert c.finetune.epochs == 9
    assert c.finetune.lr == FINETUNE_DEFAULTS.lr and c.finetune.optimizer == "adam"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"bitz": {"*": 5}}, r"quantize: unknown keys \['bitz'\]"),
        ({"bits": 5}, "quantize.bits must be a table"),
        ({"bits": {"*": 0}}, r"quantize.bits\['\*'\] must be an integer in 1..16, got 0"),
        ({"bits": {"*": 17}}, r"must be an integer in 1..16, got 17"),
        ({"init": "kmeans++"}, "quantize.init must be one of linear, density, forgy, optimal"),
        ({"lloyd_iterations": -1}, "quantize.lloyd_iterations must be an integer >= 0"),
        ({"seed": 1.5}, "quantize.seed must be an integer >= 0"),
        ({"finetune": {"epoch": 3}}, r"quantize.finetune: unknown keys \['epoch'\]"),
        ({"finetune": {"lr": -1}}, "quantize.finetune: train.lr must be a positive number"),
        ({"finetune": 3}, "quantize.finetune: expected a table"),
    ],
)
def test_bad_tables(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantizeConfig.from_dict(table)


def test_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        """
[prune]  # another stage's table: ignored here
rounds = "anything"

[quantize]
bits = { "*" = 5, "conv*" = 8, fc2 = 4 }
init = "forgy"

[quantize.finetune]
epochs = 2
"""
    )
    c = load_quantize_config(path)
    assert dict(c.bits) == {"*": 5, "conv*": 8, "fc2": 4} and c.init == "forgy"
    assert c.finetune.epochs == 2 and c.finetune.lr == FINETUNE_DEFAULTS.lr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prune]\nx = 1\n", r"no \[quantize\] table"),
        ("[quantize\n", "invalid TOML"),
        ("[quantize]\nbits = { '*' = 20 }\n", r"r.toml: quantize.bits\['\*'\] must be"),
        ("[quantize]\ncolour = 'red'\n", r"r.toml: quantize: unknown keys \['colour'\]"),
    ],
)
def test_bad_recipe_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_quantize_config(path)


def test_missing_recipe(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_quantize_config(tmp_path / "none.toml")
