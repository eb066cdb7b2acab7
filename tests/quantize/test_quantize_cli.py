"""``deep-compression quantize`` end to end, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from deep_compression.checkpoint import load_checkpoint, save_checkpoint
from deep_compression.loading import load_model
from deep_compression.models import build_model
from deep_compression.prune import PruningMask
from deep_compression.quantize import quantized_weight


def _pruned_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    masks = {}
    for name in ("fc1", "fc2"):
        layer = model.get_submodule(name)
        masks[name] = torch.rand(layer.weight.shape) < 0.1
        parametrize.register_parametrization(layer, "weight", PruningMask(masks[name]))
    meta = {"stage": "pruned", "model": {"name": "lenet-300-100", "kwargs": {}}, "dataset": "mnist"}
    return save_checkpoint(tmp_path / "pruned.safetensors", model, meta), masks


@pytest.mark.mnist
def test_quantize_command(mnist, tmp_path: Path, run_cli) -> None:
    ckpt, masks = _pruned_checkpoint(tmp_path)
    out = tmp_path / "q.safetensors"
    proc = run_cli(
        "quantize",
        str(ckpt),
        "--bits",
        "*=3",
        "--bits",
        "fc3=2",
        "--init",
        "density",
        "--finetune-epochs",
        "1",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "| layer | weights | non-zero | bits | codebook | distinct |" in text
    assert "| fc1   | 235,200 |" in text and "after 1 fine-tuning epochs" in text
    model, meta = load_model(out)
    q_details = meta.details["quantize"]
    assert meta.stage == "quantized" and meta.tool_version != "unknown"
    assert q_details["config"]["bits"] == {"*": 3, "fc3": 2}
    assert q_details["config"]["init"] == "density"
    assert q_details["layers"]["fc3"]["index_bits"] == 2
    assert q_details["config"]["finetune"]["epochs"] == 1
    for name, bits in (("fc1", 3), ("fc2", 3), ("fc3", 2)):
        q = quantized_weight(model.get_submodule(name))
        assert q.codebook.numel() == 2**bits
        w = model.get_submodule(name).weight
        if name in masks:
            assert torch.equal(w == 0, ~masks[name])
        assert q_details["layers"][name]["distinct"] == torch.unique(w[q.mask]).numel()
    # The test error printed is the one stored.
    assert f"{100 * meta.test_error:.2f}% after 1 fine-tuning epochs" in text


@pytest.mark.mnist
def test_quantize_recipe_and_options(mnist, tmp_path: Path, run_cli) -> None:
    """Options override the recipe's [quantize] table; --finetune-epochs 0 skips training."""
    ckpt, _ = _pruned_checkpoint(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[quantize]\nbits = { "*" = 4 }\ninit = "forgy"\n[encode]\nx = 1\n')
    out = tmp_path / "q.safetensors"
    proc = run_cli(
        "quantize",
        str(ckpt),
        "--recipe",
        str(recipe),
        "--init",
        "linear",
        "--finetune-epochs",
        "0",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    _, meta = load_checkpoint(out)
    q_details = meta.details["quantize"]
    assert q_details["config"]["bits"] == {"*": 4} and q_details["config"]["init"] == "linear"
    assert meta.test_error == q_details["test_error_clustered"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "fc1=17"], "quantize.bits['fc1'] must be an integer in 1..16, got 17"),
        (["--bits", "*=0"], "quantize.bits['*'] must be an integer in 1..16, got 0"),
        (["--bits", "fc9=3", "--bits", "*=4"], "key 'fc9' matches no layer"),
        (["--bits", "type:Conv2d=3"], "key 'type:Conv2d' matches no layer"),
        (["--bits", "fc1=x"], "'fc1=x' is not PATTERN=BITS"),
        (["--bits", "*=3", "--bits", "*=4"], "--bits gives '*' twice"),
        (["--init", "kmeans++"], "invalid choice: 'kmeans++'"),
        (["--finetune-epochs", "-1"], "not an integer >= 0"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, run_cli, args: list[str], message: str) -> None:
    ckpt, _ = _pruned_checkpoint(tmp_path)
    proc = run_cli("quantize", str(ckpt), *args, "--out", str(tmp_path / "o.safetensors"))
    assert proc.returncode != 0
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_bad_recipe_is_one_line(tmp_path: Path, run_cli) -> None:
    ckpt, _ = _pruned_checkpoint(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text("[quantize]\nbits = { '*' = 5 }\nbitz = 3\n")
    proc = run_cli(
        "quantize", str(ckpt), "--recipe", str(recipe), "--out", str(tmp_path / "o.safetensors")
    )
    assert proc.returncode == 1
    assert "unknown keys ['bitz']" in proc.stderr and len(proc.stderr.splitlines()) == 1
