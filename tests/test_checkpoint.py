"""Checkpoints round-trip through safetensors and never unpickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deep_compression.checkpoint import load_checkpoint, load_model, save_checkpoint
from deep_compression.errors import FormatError
from deep_compression.models import build_model


def test_roundtrip(tmp_path: Path) -> None:
    model = build_model("lenet-5")
    meta = {"model": {"name": "lenet-5", "kwargs": {}}, "dataset": "mnist", "seed": 7}
    save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded, got = load_model(tmp_path / "m.safetensors")
    assert got["seed"] == 7 and got["tool_version"]
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)


def test_pickle_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "evil.safetensors"
    torch.save({"a": torch.zeros(1)}, path)  # a zip/pickle file with the wrong suffix
    with pytest.raises(FormatError, match="not a valid safetensors"):
        load_checkpoint(path)


def test_missing_metadata(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(FormatError, match="not a deep-compression checkpoint"):
        load_checkpoint(tmp_path / "x.safetensors")


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    meta = {"deep_compression": json.dumps({"model": {"name": "lenet-5"}})}
    save_file({"fc1.weight": torch.zeros(2, 2)}, str(tmp_path / "y.safetensors"), meta)
    with pytest.raises(FormatError, match="do not fit lenet-5"):
        load_model(tmp_path / "y.safetensors")
