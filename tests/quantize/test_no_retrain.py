"""rd_quantize_ and the no-retraining search: the parametrizations round-trip through the
.dcz writer bit-exactly, the in-memory size is the file's size, the search respects its
budget on a tiny model with a synthetic validation set, configs are validated."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deep_compression.encode import EncodeConfig, encode_model, plain_state_dict
from deep_compression.errors import ConfigError
from deep_compression.loading import load_dcz
from deep_compression.models import build_model
from deep_compression.no_retrain import (
    NoRetrainConfig,
    compress_without_retraining,
    encoded_size,
    rd_quantize_,
)
from deep_compression.quantize import QuantizedWeight, quantized_weight
from deep_compression.quantize.rdq import model_bits

META = {"model": {"name": "lenet-300-100", "kwargs": {}}}


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet-300-100").eval()


@pytest.mark.parametrize("calibrated", [False, True])
def test_roundtrip_through_encode_model_bit_exact(lenet, calibrated: bool, tmp_path: Path) -> None:
    model = copy.deepcopy(lenet)
    calib = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    report = rd_quantize_(
        model, NoRetrainConfig(lam=3e-7 if not calibrated else 1e-6), calib if calibrated else None
    )
    for layer in (model.fc1, model.fc2, model.fc3):
        q = quantized_weight(layer)
        assert isinstance(q, QuantizedWeight)
        # Zero is never a codebook entry: zeros are the mask's job.
        assert not bool((q.codebook == 0).any()) or not bool(q.mask.any())
    assert 0 < report.kept_fraction < 1
    expected = plain_state_dict(model)
    path = tmp_path / "m.dcz"
    rep = encode_model(model, path, EncodeConfig("best", "auto"), metadata=META)
    decoded, _ = load_dcz(path)
    got = decoded.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k
    # The in-memory size is the written file's.
    assert encoded_size(model, coder="best", gap_bits="auto", metadata=META) == rep.file_bytes
    # Codebooks and biases are float16-exact (stored in 2 bytes).
    for layer in (model.fc1, model.fc2, model.fc3):
        cb = quantized_weight(layer).codebook.detach()
        assert torch.equal(cb, cb.half().float())
        assert torch.equal(layer.bias.detach(), layer.bias.detach().half().float())


def test_report_matches_rate_model(lenet) -> None:
    model = copy.deepcopy(lenet)
    report = rd_quantize_(model, NoRetrainConfig(lam=3e-7, float16=False))
    for row, layer in zip(report.layers, (model.fc1, model.fc2, model.fc3)):
        q = quantized_weight(layer)
        mask = q.mask.numpy().reshape(-1)
        idx = q.indices.long().numpy().reshape(-1)
        assert row.kept == int(mask.sum())
        assert row.model_bits == pytest.approx(model_bits(mask, idx, row.codebook_size))


def test_larger_lam_smaller_file(lenet) -> None:
    sizes = []
    for lam in (1e-8, 1e-7, 1e-6):
        model = copy.deepcopy(lenet)
        rd_quantize_(model, NoRetrainConfig(lam=lam))
        sizes.append(encoded_size(model, metadata=META))
    assert sizes[0] > sizes[1] > sizes[2]


def test_bias_correction_matches_dense_mean_outputs(lenet) -> None:
    """After correction, each layer's mean output on the calibration set equals the dense
    model's (the correction is applied in order, so this holds with the quantized inputs)."""
    calib = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    dense_means = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, out, n=n: dense_means.__setitem__(n, out.mean(0)))
        for n, m in (("fc1", lenet.fc1), ("fc2", lenet.fc2), ("fc3", lenet.fc3))
    ]
    with torch.no_grad():
        lenet(calib)
    for h in hooks:
        h.remove()
    model = copy.deepcopy(lenet)
    rd_quantize_(model, NoRetrainConfig(lam=1e-6, importance="inputs", float16=False), calib)
    means = {}
    for n, m in (("fc1", model.fc1), ("fc2", model.fc2), ("fc3", model.fc3)):
        m.register_forward_hook(lambda mod, a, out, n=n: means.__setitem__(n, out.mean(0)))
    with torch.no_grad():
        model(calib)
    for n in dense_means:
        torch.testing.assert_close(means[n], dense_means[n], rtol=0, atol=1e-5)


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


@pytest.mark.parametrize("mode", ["weights", "inputs", "fisher", "gptq", "gptq-fisher"])
def test_conv_model_with_every_importance(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyConv().eval()
    calib = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    lam = {"weights": 1e-4, "inputs": 1e-4, "fisher": 1e-6, "gptq": 1e-4, "gptq-fisher": 1e-6}
    rep = rd_quantize_(
        model, NoRetrainConfig(lam=lam[mode], importance=mode), None if mode == "weights" else calib
    )
    assert [r.name for r in rep.layers] == ["conv1", "conv2", "fc"]
    assert 0 < rep.kept_fraction < 1
    expected = plain_state_dict(model)
    encode_model(model, tmp_path / "c.dcz")
    decoded, _ = load_dcz(tmp_path / "c.dcz", TinyConv())
    for k, v in decoded.state_dict().items():
        assert torch.equal(v, expected[k]), k


def synthetic_task(seed: int = 0):
    """A tiny MLP trained for a few steps on a separable synthetic problem, with a
    validation set: error in percent."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1200, 20, generator=g)
    w_true = torch.randn(20, 4, generator=g)
    y = (x @ w_true).argmax(1)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:800]), y[:800]).backward()
        opt.step()
    model.eval()
    xv, yv = x[800:], y[800:]

    def val_error(m: nn.Module) -> float:
        with torch.no_grad():
            return 100.0 * float((m(xv).argmax(1) != yv).float().mean())

    return model, val_error, x[:200]


@pytest.mark.parametrize("budget", [0.5, 2.0])
def test_search_respects_budget(budget: float) -> None:
    model, val_error, calib = synthetic_task()
    before = copy.deepcopy(model.state_dict())
    res = compress_without_retraining(
        model, val_error, budget, lam_start=1e-6, metadata={"model": {"name": "mlp", "kwargs": {}}}
    )
    # The input model is untouched.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert res.dense_val_error == pytest.approx(val_error(model))
    assert res.val_error <= res.dense_val_error + budget + 1e-9
    assert res.val_error == pytest.approx(val_error(res.model))
    ok = [t for t in res.trials if t.val_error <= res.dense_val_error + budget + 1e-9]
    assert res.file_bytes == min(t.file_bytes for t in ok)
    assert res.file_bytes == encoded_size(
        res.model, metadata={"model": {"name": "mlp", "kwargs": {}}}
    )
    # Some candidate was beyond the budget: the search went as far as it could.
    assert any(t.val_error > res.dense_val_error + budget for t in res.trials)


def test_search_with_calibration_and_looser_budget_is_smaller() -> None:
    model, val_error, calib = synthetic_task(1)
    tight = compress_without_retraining(model, val_error, 0.0, calibration=calib, lam_start=1e-6)
    loose = compress_without_retraining(model, val_error, 5.0, calibration=calib, lam_start=1e-6)
    assert loose.file_bytes <= tight.file_bytes
    assert tight.val_error <= tight.dense_val_error + 1e-9


def test_search_rejects_bad_evaluate() -> None:
    model, _, _ = synthetic_task()
    with pytest.raises(ConfigError, match="percent"):
        compress_without_retraining(model, lambda m: 0.5 + 200, 0.1)
    with pytest.raises(ConfigError, match="max_error_increase"):
        compress_without_retraining(model, lambda m: 1.0, -0.1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(lam=0.0), "no_retrain.lam"),
        (dict(lam=math.inf), "no_retrain.lam"),
        (dict(importance="hessian"), "no_retrain.importance"),
        (dict(layer_weights={"fc1": 2.0}), "no_retrain.layer_weights"),
        (dict(layer_weights={"*": -1.0}), "no_retrain.layer_weights"),
        (dict(bias_correction=1), "no_retrain.bias_correction"),
        (dict(max_codewords=1), "no_retrain.max_codewords"),
        (dict(max_iter=0), "no_retrain.max_iter"),
        (dict(max_groups=True), "no_retrain.max_groups"),
    ],
)
def test_config_errors_name_the_field(kwargs, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        NoRetrainConfig(**kwargs)


def test_config_needs_data_and_known_layers(lenet) -> None:
    with pytest.raises(ConfigError, match="calibration"):
        rd_quantize_(copy.deepcopy(lenet), NoRetrainConfig(importance="gptq"))
    with pytest.raises(ConfigError, match="fc4"):
        rd_quantize_(copy.deepcopy(lenet), NoRetrainConfig(layer_weights={"*": 1.0, "fc4": 2.0}))
    cfg = NoRetrainConfig(lam=1e-7, layer_weights={"*": 1.0, "fc1": 0.5})
    assert hash(cfg) == hash(cfg.with_lam(1e-7)) and cfg.with_lam(2e-7).lam == 2e-7
    assert np.isclose(cfg.with_lam(2e-7).layer_weights["fc1"], 0.5)
