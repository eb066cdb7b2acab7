"""A shrunk network travels through checkpoints and .dcz files, the command line and
the pipeline, and decodes straight into the smaller model."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from deep_compression.checkpoint import save_checkpoint
from deep_compression.encode import encode_model
from deep_compression.errors import FormatError
from deep_compression.loading import load_dcz, load_model
from deep_compression.models import build_model, make_model
from deep_compression.pipeline import compress
from deep_compression.recipe import Recipe
from deep_compression.records import CheckpointMeta, ModelSpec
from deep_compression.shrink import SHRUNK_KEY, ShrinkConfig, shrink_, shrunk_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models.py"


def test_default_widths_keep_every_key_and_shape() -> None:
    shapes = {k: tuple(v.shape) for k, v in build_model("lenet-5").state_dict().items()}
    assert shapes == {
        "conv1.weight": (20, 1, 5, 5), "conv1.bias": (20,), "conv2.weight": (50, 20, 5, 5),
        "conv2.bias": (50,), "fc1.weight": (500, 800), "fc1.bias": (500,),
        "fc2.weight": (10, 500), "fc2.bias": (10,),
    }  # fmt: skip
    shapes = {k: tuple(v.shape) for k, v in build_model("lenet-300-100").state_dict().items()}
    assert shapes["fc1.weight"] == (300, 784) and shapes["fc3.weight"] == (10, 100)


def test_shrunk_lenet5_round_trips_through_checkpoint_and_dcz(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet-5").eval()
    x = torch.randn(4, 1, 28, 28)
    shrink_(model, ShrinkConfig(keep={"conv1": 6, "conv2": 0.3, "fc1": 40}), x)
    spec = shrunk_spec(ModelSpec("lenet-5", {"dropout": 0.0}), model)
    assert dict(spec.kwargs) == {"dropout": 0.0, "channels": [6, 15], "hidden": 40}
    meta = CheckpointMeta(model=spec, details={SHRUNK_KEY: True})
    save_checkpoint(tmp_path / "s.safetensors", model, meta)
    loaded, _ = load_model(tmp_path / "s.safetensors")
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    encode_model(model, tmp_path / "s.dcz", metadata=meta)
    decoded, dmeta = load_dcz(tmp_path / "s.dcz")  # rebuilt from name and arguments
    assert decoded.fc1.weight.shape == (40, 15 * 16)
    assert dmeta.model == spec
    torch.testing.assert_close(decoded(x), model(x), rtol=0, atol=0)


def test_user_model_is_resized_to_the_stored_shapes(tmp_path: Path) -> None:
    spec = ModelSpec(f"{EXAMPLES}:resnet", {"depth": 8, "in_channels": 1})
    torch.manual_seed(0)
    model = make_model(spec.name, spec.kwargs, allow_code=True).eval()
    x = torch.randn(2, 1, 16, 16)
    report = shrink_(model, ShrinkConfig(criterion="bn", keep={"*": 0.5}), x)
    assert report.widths["layer2.0.conv1"] == (32, 16)
    assert shrunk_spec(spec, model) == spec  # its arguments cannot say the widths
    encode_model(
        model, tmp_path / "r.dcz", metadata=CheckpointMeta(spec, details={SHRUNK_KEY: True})
    )
    decoded, _ = load_dcz(tmp_path / "r.dcz", allow_code=True)
    assert decoded.layer2[0].conv1.out_channels == 16
    torch.testing.assert_close(decoded(x), model(x), rtol=0, atol=0)
    # Without the marker the file is an ordinary one: the shapes do not fit.
    encode_model(model, tmp_path / "plain.dcz", metadata=CheckpointMeta(spec))
    with pytest.raises(FormatError, match="tensors do not fit the model"):
        load_dcz(tmp_path / "plain.dcz", allow_code=True)


@pytest.mark.mnist
def test_shrink_command(mnist, run_cli, tmp_path: Path) -> None:
    torch.manual_seed(0)
    dense = tmp_path / "dense.safetensors"
    save_checkpoint(
        dense,
        build_model("lenet-300-100"),
        CheckpointMeta(ModelSpec("lenet-300-100"), dataset="mnist"),
    )
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[shrink]\ncriterion = "reduce"\ncalibration = 64\nkeep = { fc1 = 30, fc2 = 0.5 }\n'
    )
    out = tmp_path / "s.safetensors"
    p = run_cli("shrink", str(dense), "--recipe", str(recipe), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "parameters 266,610 -> 25,610" in p.stdout
    model, meta = load_model(out)
    assert dict(meta.model.kwargs)["hidden"] == [30, 50] and meta.stage == "shrunk"
    p = run_cli("shrink", str(dense), "--list-groups")
    assert "| fc3   |       10 | the model's output |" in p.stdout
    p = run_cli("shrink", str(dense), "-o", str(out))
    assert p.returncode == 1 and "--recipe and -o/--out are required" in p.stderr


TINY = """
model = "lenet-300-100"
seed = 3
[train]
epochs = 1
[shrink]
criterion = "l2"
keep = { fc1 = 0.3, fc2 = 0.5 }
[shrink.retrain]
epochs = 1
lr = 0.01
[prune.retrain]
epochs = 0
[[prune.rounds]]
criteria."*" = { method = "fraction", keep = 0.5 }
[quantize]
bits = { "*" = 5 }
[quantize.finetune]
epochs = 0
[encode]
coder = "huffman"
"""


@pytest.mark.mnist
def test_pipeline_with_a_shrink_step(mnist, tmp_path: Path) -> None:
    report = compress(Recipe.from_dict(tomllib.loads(TINY)), tmp_path, progress=False, log=print)
    assert (tmp_path / "shrunk.safetensors").is_file()
    decoded, meta = load_dcz(tmp_path / "model.dcz")
    assert dict(meta.model.kwargs)["hidden"] == [90, 50]
    assert decoded.fc2.weight.shape == (50, 90)
    # The rate is against the dense network the run started from.
    stages = {s.stage: s for s in report.stages}
    assert stages["dense (float32)"].bytes == 4 * 266_610
    errors = {p.phase: p.test_error for p in report.phases}
    assert "shrunk" in errors and errors["decoded"] == errors["quantized"] < 0.2
