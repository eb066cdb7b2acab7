"""Checkpoints round-trip through safetensors and never unpickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deep_compression.checkpoint import load_checkpoint, save_checkpoint
from deep_compression.errors import FormatError
from deep_compression.loading import load_model
from deep_compression.models import build_model


def test_roundtrip(tmp_path: Path) -> None:
    model = build_model("lenet-5")
    meta = {"model": {"name": "lenet-5", "kwargs": {}}, "dataset": "mnist", "seed": 7}
    save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded, got = load_model(tmp_path / "m.safetensors")
    assert got.seed == 7 and got.tool_version and got.dataset == "mnist"
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
    with pytest.raises(FormatError, match=r"\(lenet-5\): tensors do not fit the model: missing"):
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


def _quantized_fc2_checkpoint(path: Path, indices: torch.Tensor, k: int) -> None:
    """A lenet-300-100 checkpoint whose fc2 is quantized with the given raw index tensor,
    written by hand (as an older version or a hostile file would) with valid metadata."""
    from safetensors import safe_open

    model = build_model("lenet-300-100")
    save_checkpoint(path, model, {"model": {"name": "lenet-300-100"}})
    state = {k_: v for k_, v in model.state_dict().items() if k_ != "fc2.weight"}
    state["fc2.parametrizations.weight.original"] = model.fc2.weight.detach().clone()
    state["fc2.parametrizations.weight.0.codebook"] = torch.linspace(-1, 1, k)
    state["fc2.parametrizations.weight.0.indices"] = indices
    state["fc2.parametrizations.weight.0.mask"] = torch.ones(100, 300, dtype=torch.bool)
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    save_file(state, str(path), metadata=header)


def test_int32_indices_of_older_checkpoints_load_narrowed(tmp_path: Path) -> None:
    """Checkpoints written with int32 indices load, into the compact index type."""
    idx = torch.randint(0, 32, (100, 300), dtype=torch.int32)
    _quantized_fc2_checkpoint(tmp_path / "q.safetensors", idx, 32)
    loaded, _ = load_model(tmp_path / "q.safetensors")
    q = loaded.fc2.parametrizations.weight[0]
    assert q.indices.dtype == torch.int8 and torch.equal(q.indices.int(), idx)
    assert torch.equal(loaded.fc2.weight, torch.linspace(-1, 1, 32)[idx.long()])


@pytest.mark.parametrize("bad", [32, -1, 300])
def test_out_of_range_indices_are_a_format_error(tmp_path: Path, bad: int) -> None:
    """An index outside the codebook is rejected, never wrapped by the narrowing cast."""
    idx = torch.randint(0, 32, (100, 300), dtype=torch.int32)
    idx[7, 11] = bad
    _quantized_fc2_checkpoint(tmp_path / "q.safetensors", idx, 32)
    with pytest.raises(FormatError, match=r"fc2\.weight: cluster indices outside \[0, 32\)"):
        load_model(tmp_path / "q.safetensors")
