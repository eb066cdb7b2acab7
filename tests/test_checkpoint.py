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


def test_parametrized_roundtrip(tmp_path: Path) -> None:
    """Pruning masks and quantized weights come back as the same parametrizations."""
    from torch.nn.utils import parametrize

    from deep_compression.prune import PruningMask, get_mask
    from deep_compression.quantize import QuantizedWeight

    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    mask = torch.rand(300, 784) > 0.9
    parametrize.register_parametrization(model.fc1, "weight", PruningMask(mask))
    idx = torch.randint(0, 4, (100, 300))
    qmask = torch.rand(100, 300) > 0.5
    parametrize.register_parametrization(
        model.fc2, "weight", QuantizedWeight(torch.tensor([0.0, 0.1, -0.2, 0.3]), idx, qmask)
    )
    save_checkpoint(tmp_path / "p.safetensors", model, {"model": {"name": "lenet-300-100"}})
    loaded, _ = load_model(tmp_path / "p.safetensors")
    assert torch.equal(get_mask(loaded.fc1), mask) and torch.equal(get_mask(loaded.fc2), qmask)
    assert isinstance(loaded.fc2.parametrizations.weight[0], QuantizedWeight)
    x = torch.randn(5, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert int((loaded.fc1.weight != 0).sum()) <= int(mask.sum())
