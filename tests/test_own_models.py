"""A user's own model file, checkpoints and data, through the CLI and the API: image
folders, .npz arrays, PyTorch checkpoints, BatchNorm, nested layers, export."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deep_compression.batchnorm import fold_batchnorm_, reestimate_batchnorm_
from deep_compression.checkpoint import read_state
from deep_compression.data import DatasetConfig, load_data
from deep_compression.dcz import open_dcz
from deep_compression.encode import encode_model
from deep_compression.errors import ConfigError, FormatError
from deep_compression.loading import load_model
from deep_compression.models import make_model
from deep_compression.prune import KeepFraction, prune_
from deep_compression.quantize import QuantizeConfig, layer_bits, quantize_

NET = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)  # depthwise
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn(self.conv(x)))  # a residual addition


    def tiny(width=4, classes=2):
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            Block(width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes),
        )
    """
)


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """A directory with the user's model file and an 8x8 RGB image folder of 2 classes
    (class 'b' is brighter, so the data can be learnt)."""
    root = tmp_path_factory.mktemp("user")
    (root / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for c, level in (("a", 60), ("b", 190)):
            (root / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                px = np.clip(rng.normal(level, 40, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(root / "data" / split / c / f"{i}.png")
    return root


RECIPE = """
model = "net.py:tiny"
model_args = { width = 4 }
dataset = "data"
[train]
epochs = 2
batch_size = 8
lr = 0.05
[prune.retrain]
epochs = 1
batch_size = 8
[[prune.rounds]]
criteria = { "*" = { method = "fraction", keep = 0.5 }, "type:Linear" = { method = "none" } }
[quantize]
bits = { "*" = 3, "type:Linear" = 4 }
float16 = true
bn_batches = 2
[quantize.finetune]
epochs = 1
batch_size = 8
"""


def test_user_model_and_image_folder_through_the_cli(user: Path, tmp_path: Path, run_cli) -> None:
    recipe = user / "tiny.toml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    args = ("compress", "--train", "--recipe", str(recipe), "--out-dir", str(run), "--no-plots")
    refused = run_cli(*args)
    assert refused.returncode == 1 and "--allow-code" in refused.stderr  # never on its own
    proc = run_cli(*args, "--allow-code", "-o", str(tmp_path / "tiny.dcz"))
    assert proc.returncode == 0, proc.stderr
    meta = open_dcz(tmp_path / "tiny.dcz").metadata
    assert meta["model"]["name"] == f"{user / 'net.py'}:tiny"  # absolute: means the same anywhere
    pre = meta["preprocessing"]
    assert pre["input_shape"] == [3, 8, 8] and pre["classes"] == ["a", "b"]
    assert len(pre["mean"]) == 3 and meta["dataset"] == "data"
    # Nested convolutions were pruned and quantized by type and name keys.
    layers = {t.name: t for t in open_dcz(tmp_path / "tiny.dcz").tensors}
    assert layers["3.conv.weight"].encoding == "quantized" and layers["3.conv.weight"].k <= 8
    assert layers["6.weight"].k <= 16 and layers["6.weight"].kept == layers["6.weight"].numel
    # BatchNorm's integer counter is not a weight: the rate counts floats only.
    assert open_dcz(tmp_path / "tiny.dcz").original_bytes == 4 * sum(
        t.numel for t in layers.values() if t.dtype.startswith("float")
    )
    ev = run_cli(
        "evaluate", str(tmp_path / "tiny.dcz"), "--allow-code", "--dataset", str(user / "data")
    )
    assert ev.returncode == 0, ev.stderr
    assert "on data test: error" in ev.stdout
    onnx = tmp_path / "tiny.onnx"
    ex = run_cli("export", str(tmp_path / "tiny.dcz"), "--allow-code", "--fold-bn", "-o", str(onnx))
    assert ex.returncode == 0, ex.stderr
    assert "folded 2 BatchNorm layers" in ex.stdout and "onnxruntime output within" in ex.stdout
    diff = float(ex.stdout.rsplit("within ", 1)[1].split()[0])
    assert diff < 1e-4


def test_pytorch_checkpoints_of_every_shape(user: Path, tmp_path: Path) -> None:
    """.pt/.th with a nested state_dict and DataParallel's prefix load; a mismatch names
    the first missing and unexpected keys; a plain state dict needs --model."""
    spec = f"{user / 'net.py'}:tiny"
    model = make_model(spec, allow_code=True)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "x.th")
    state, meta = read_state(tmp_path / "x.th")
    assert meta is None and set(state) == set(model.state_dict())
    with pytest.raises(ConfigError, match="plain state dict does not say which model"):
        load_model(tmp_path / "x.th")
    loaded, meta = load_model(tmp_path / "x.th", model=spec, allow_code=True, dataset="data")
    assert meta.stage == "dense" and meta.dataset == "data"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(FormatError, match=r"missing 0\.weight; unexpected conv\.weight$"):
        bad = {("conv.weight" if k == "0.weight" else k): v for k, v in model.state_dict().items()}
        torch.save(bad, tmp_path / "bad.pt")
        load_model(tmp_path / "bad.pt", model=spec, allow_code=True)
    (tmp_path / "evil.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="not a PyTorch checkpoint that loads safely"):
        read_state(tmp_path / "evil.pt")


def test_npz_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 255, (20, 6, 6), dtype=np.uint8),
        y_train=rng.integers(0, 3, 20),
        x_test=rng.integers(0, 255, (10, 6, 6), dtype=np.uint8),
        y_test=rng.integers(0, 3, 10),
    )
    data = load_data(DatasetConfig.from_value("d.npz", tmp_path))
    assert len(data.train) == 20 and data.info.input_shape == (1, 6, 6)
    x, y = data.train[0]
    assert x.shape == (1, 6, 6) and abs(float(data.train.x.mean())) < 1e-5
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 6, 6)))
    with pytest.raises(Exception, match="missing arrays"):
        load_data(DatasetConfig.from_value("bad.npz", tmp_path))


def test_batchnorm_fold_is_exact_and_reestimation_measures(user: Path) -> None:
    torch.manual_seed(0)
    model = make_model(f"{user / 'net.py'}:tiny", allow_code=True)
    data = load_data(DatasetConfig.from_value(str(user / "data")))
    n = reestimate_batchnorm_(model, data.train, batches=100, batch_size=len(data.train))
    assert n == 2
    # One batch holding the whole training set: the running mean is that batch's mean.
    x = torch.stack([data.train[i][0] for i in range(len(data.train))])
    with torch.no_grad():
        first = model[0](x)
    assert torch.allclose(model[1].running_mean, first.mean(dim=(0, 2, 3)), atol=1e-5)
    model.eval()
    with torch.no_grad():
        want = model(x)
        folded = fold_batchnorm_(model)
        got = model(x)
    assert folded == ["1", "3.bn"] and isinstance(model[1], nn.Identity)
    assert torch.allclose(got, want, atol=1e-5)


def test_layer_keys_reach_nested_and_grouped_layers(user: Path) -> None:
    model = make_model(f"{user / 'net.py'}:tiny", allow_code=True)
    bits = layer_bits(model, QuantizeConfig(bits={"conv*": 6, "type:Linear": 2}))
    assert bits == {"0": 8, "3.conv": 6, "6": 2}  # "0", a conv no key matches: the paper's 8
    prune_(model, {"*": KeepFraction(0.5)})
    quantize_(model, QuantizeConfig(bits={"*": 2}))
    path = Path(user / "x.dcz")
    report = encode_model(model, path)  # no metadata: the class is recorded, not imported
    assert report.rate > 1 and open_dcz(path).metadata["model"]["name"].endswith(":Sequential")
