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
    AUTO_SEARCH,
    NoRetrainConfig,
    compress_without_retraining,
    encoded_size,
    output_divergence,
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
    rep = rd_quantize_(model, NoRetrainConfig(lam=1e-6, importance="inputs", float16=False), calib)
    corrected = {r.name for r in rep.layers if r.bias_corrected}
    # "inputs" zeroes the weights of inputs that never vary: fc1's correction is needed.
    assert "fc1" in corrected
    means = {}
    for n, m in (("fc1", model.fc1), ("fc2", model.fc2), ("fc3", model.fc3)):
        m.register_forward_hook(lambda mod, a, out, n=n: means.__setitem__(n, out.mean(0)))
    with torch.no_grad():
        model(calib)
    for n in corrected:
        torch.testing.assert_close(means[n], dense_means[n], rtol=0, atol=1e-5)


def test_output_divergence_against_numpy() -> None:
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(50, 7, generator=g), torch.randn(50, 7, generator=g)
    pa = np.exp(a.numpy().astype(np.float64))
    pa /= pa.sum(1, keepdims=True)
    pb = np.exp(b.numpy().astype(np.float64))
    pb /= pb.sum(1, keepdims=True)
    kl = float(np.mean(np.sum(pa * np.log(pa / pb), 1)))
    assert output_divergence(a, b) == pytest.approx(kl, rel=1e-9)
    assert output_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    # Not class scores: the mean squared difference.
    u, v = torch.randn(30, generator=g), torch.randn(30, generator=g)
    assert output_divergence(u, v) == pytest.approx(float(((u - v) ** 2).mean()), rel=1e-6)


@pytest.mark.parametrize("mode", ["weights", "inputs", "gptq"])
def test_bias_correction_only_where_it_brings_outputs_closer(lenet, mode: str) -> None:
    """The corrections that are kept never move the outputs on the calibration inputs
    away from the dense model's, and a layer whose correction was refused keeps the bias
    it had without correction, bit for bit."""
    calib = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = lenet(calib)
    out = {}
    for bc in (False, True):
        model = copy.deepcopy(lenet)
        cfg = NoRetrainConfig(lam=3e-6, importance=mode, float16=False, bias_correction=bc)
        rep = rd_quantize_(model, cfg, calib)
        with torch.no_grad():
            out[bc] = (model, rep, output_divergence(ref, model(calib)))
    plain, corrected = out[False], out[True]
    assert corrected[2] <= plain[2]
    assert not any(r.bias_corrected for r in plain[1].layers)
    for r in corrected[1].layers:
        same = torch.equal(getattr(corrected[0], r.name).bias, getattr(plain[0], r.name).bias)
        assert same != r.bias_corrected, r.name


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


class TinyGrouped(TinyConv):
    """TinyConv with a grouped convolution, whose unfolded input the calibration does
    not build (each column gets the variance of the whole input instead)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(6, 8, 3, groups=2)


@pytest.mark.parametrize("net", [TinyConv, TinyGrouped])
@pytest.mark.parametrize("mode", ["weights", "inputs", "fisher", "gptq", "gptq-fisher"])
def test_conv_model_with_every_importance(net: type, mode: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = net().eval()
    calib = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    lam = {"weights": 1e-4, "inputs": 1e-4, "fisher": 1e-6, "gptq": 1e-4, "gptq-fisher": 1e-6}
    rep = rd_quantize_(
        model, NoRetrainConfig(lam=lam[mode], importance=mode), None if mode == "weights" else calib
    )
    assert [r.name for r in rep.layers] == ["conv1", "conv2", "fc"]
    assert 0 < rep.kept_fraction < 1
    expected = plain_state_dict(model)
    encode_model(model, tmp_path / "c.dcz")
    decoded, _ = load_dcz(tmp_path / "c.dcz", net())
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


def test_auto_search_with_calibration_tries_both_weightings() -> None:
    """importance = "auto" with calibration inputs searches the calibrated and the
    data-free weighting and returns the smallest file within budget over both."""
    model, val_error, calib = synthetic_task(2)
    meta = {"model": {"name": "mlp", "kwargs": {}}}
    res = compress_without_retraining(model, val_error, 1.0, calibration=calib, metadata=meta)
    assert {t.importance for t in res.trials} == set(AUTO_SEARCH)
    ok = [t for t in res.trials if t.val_error <= res.dense_val_error + 1.0 + 1e-9]
    best = min(ok, key=lambda t: t.file_bytes)
    assert res.file_bytes == best.file_bytes
    assert (res.config.importance, res.config.lam) == (best.importance, best.lam)
    # The chosen config remade from scratch gives the same file size.
    again = copy.deepcopy(model)
    rd_quantize_(again, res.config, calib)
    assert encoded_size(again, metadata=meta) == res.file_bytes
    # An explicit importance searches that one only.
    only = compress_without_retraining(
        model, val_error, 1.0, config=NoRetrainConfig(importance="weights"), calibration=calib
    )
    assert {t.importance for t in only.trials} == {"weights"}


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


def test_tolerance_steers_past_a_noisy_failure_but_never_chooses_it() -> None:
    """A validation error that is not monotone in lam (a bump over the limit between two
    stretches within it): with a tolerance the search goes past the bump and finds the
    smaller files beyond it; without, it stops at the bump. Nothing over the limit is
    ever chosen."""
    model, _, _ = synthetic_task()

    def kept(m: nn.Module) -> float:
        qs = [quantized_weight(layer) for layer in m if isinstance(layer, nn.Linear)]
        if any(q is None for q in qs):  # the dense model
            return 1.0
        return float(sum(q.mask.sum() for q in qs) / sum(q.mask.numel() for q in qs))

    def fake(m: nn.Module) -> float:
        k = kept(m)
        return 10.0 + (0.2 if 0.3 < k < 0.9 else 0.0) + (50.0 if k < 0.12 else 0.0)

    strict = compress_without_retraining(model, fake, 0.1, lam_start=1e-7)
    loose = compress_without_retraining(model, fake, 0.1, lam_start=1e-7, tolerance=0.5)
    assert loose.file_bytes < strict.file_bytes
    for res in (strict, loose):
        assert res.val_error <= 10.1
    assert any(10.1 < t.val_error <= 10.6 for t in loose.trials)  # went through the bump
    assert all(t.val_error <= 10.1 or t.val_error > 10.6 or t.lam < loose.config.lam
               for t in loose.trials)  # fmt: skip


def test_validation_noise_is_two_binomial_standard_errors() -> None:
    from deep_compression.no_retrain import validation_noise

    # 1% error on 5,000 images: sd = sqrt(0.01 * 0.99 / 5000) = 0.1407 points.
    assert validation_noise(1.0, 5000) == pytest.approx(0.28142, abs=1e-4)
    assert validation_noise(1.0, 5000, sigmas=1) == pytest.approx(0.14071, abs=1e-4)
    assert validation_noise(0.0, 200) == pytest.approx(0.5)  # at least one image
    assert validation_noise(5.0, 0) == 0.0


def test_a_cache_reuses_the_statistics_and_changes_nothing() -> None:
    """The search passes one cache to every candidate: each quantized model is the same,
    bit for bit, as without it, and the statistics are gathered once."""
    torch.manual_seed(0)
    dense = TinyConv().eval()
    calib = torch.randn(40, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    cache: dict = {}
    for lam in (1e-6, 3e-6):
        cfg = NoRetrainConfig(lam=lam, importance="gptq-fisher")
        plain, cached = copy.deepcopy(dense), copy.deepcopy(dense)
        rd_quantize_(plain, cfg, calib)
        rd_quantize_(cached, cfg, calib, cache=cache)
        a, b = plain_state_dict(plain), plain_state_dict(cached)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(cache) == {"outputs", ("stats", True, True)}


def test_bisections_stop_when_the_file_barely_changes() -> None:
    """``min_gain``: no bisection step is taken between two candidates whose files differ
    by less than that fraction; the search then measures fewer candidates, and what it
    chooses is still the smallest file within budget among them."""
    model, val_error, _ = synthetic_task()
    full = compress_without_retraining(model, val_error, 2.0, lam_start=1e-6)
    coarse = compress_without_retraining(model, val_error, 2.0, lam_start=1e-6, min_gain=0.2)
    assert len(coarse.trials) < len(full.trials)
    ok = [t for t in coarse.trials if t.val_error <= coarse.dense_val_error + 2.0 + 1e-9]
    assert coarse.file_bytes == min(t.file_bytes for t in ok)
