"""Measured layer sensitivity (importance "measured"): the noise measurement against the
second-order expansion of the KL divergence computed independently in numpy, a layer that
cannot move the output, the weights left bit for bit, and the wiring into rd_quantize_."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from deep_compression.errors import ConfigError
from deep_compression.no_retrain import NoRetrainConfig, rd_quantize_
from deep_compression.no_retrain.sensitivity import layer_sensitivity, sensitivity_weights


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_matches_the_second_order_kl_of_the_same_noise() -> None:
    # One Linear layer: KL(p || softmax(z + E x)) = 1/2 dz^T (diag p - p p^T) dz + O(dz^3)
    # with dz = E x, for the very noise E the measurement draws (seed 0, float64, scaled to
    # ||E|| = r ||W||). Computed here in numpy from the formula, not by a forward pass.
    torch.manual_seed(1)
    layer = nn.Linear(6, 4)
    x = torch.randn(300, 6)
    r = 1e-3
    got = layer_sensitivity(layer, {"fc": layer}, x, images=300, noise=r)["fc"]
    w = layer.weight.detach().double().numpy()
    e = torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    e = (e * (r * np.linalg.norm(w) / float(e.norm()))).numpy()
    xs = x.double().numpy()
    p = _softmax(xs @ w.T + layer.bias.detach().double().numpy())
    dz = xs @ e.T  # (N, 4)
    quad = 0.5 * ((dz**2 * p).sum(1) - (dz * p).sum(1) ** 2)
    expected = quad.mean() / r**2
    assert got == pytest.approx(expected, rel=2e-2)


def test_a_layer_that_cannot_move_the_output_has_zero_sensitivity() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 4))
            self.unused = nn.Linear(5, 7)  # not in the forward pass at all

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    torch.manual_seed(0)
    model = Net()
    net, dead = model.body, model.unused
    with torch.no_grad():
        net[0].weight.zero_()  # all-zero weight: nothing to perturb -> 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = layer_sensitivity(model, {"0": net[0], "1": net[1], "unused": dead}, torch.randn(50, 5))
    assert s["0"] == 0.0 and s["unused"] == 0.0 and s["1"] > 0
    for k, v in model.state_dict().items():  # restored bit for bit
        assert torch.equal(v, before[k]), k
    assert sensitivity_weights(s, ["0", "1", "unused"]) == {"0": s["1"], "1": s["1"],
                                                           "unused": s["1"]}  # fmt: skip


def test_bad_arguments() -> None:
    layer = nn.Linear(2, 2)
    x = torch.randn(4, 2)
    for kwargs in ({"noise": 0.0}, {"noise": 2.0}, {"images": 0}, {"images": True}):
        with pytest.raises(ConfigError):
            layer_sensitivity(layer, {"l": layer}, x, **kwargs)
    with pytest.raises(ConfigError):
        layer_sensitivity(layer, {"l": layer}, x[:0])


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()


def test_measured_is_weights_with_the_measured_layer_weights() -> None:
    net, x = _net(), torch.randn(64, 1, 8, 8)
    s = layer_sensitivity(net, {"0": net[0], "4": net[4]}, x)
    a = copy.deepcopy(net)
    rep_a = rd_quantize_(a, NoRetrainConfig(lam=1e-4, importance="measured"), x)
    b = copy.deepcopy(net)
    cfg = NoRetrainConfig(lam=1e-4, importance="weights", layer_weights={"*": 1.0, **s})
    rep_b = rd_quantize_(b, cfg, x)
    assert [r.codebook_size for r in rep_a.layers] == [r.codebook_size for r in rep_b.layers]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # a more sensitive layer keeps more of its weights at the same lam
    weak = copy.deepcopy(net)
    cfg = NoRetrainConfig(lam=1e-4, importance="weights", layer_weights={"*": 1.0, "0": 1e-3})
    rep_w = rd_quantize_(weak, cfg, x)
    assert rep_w.layers[0].relative_error >= rep_a.layers[0].relative_error


def test_measured_needs_calibration_and_reuses_the_cache() -> None:
    net, x = _net(), torch.randn(32, 1, 8, 8)
    with pytest.raises(ConfigError, match="needs calibration"):
        rd_quantize_(copy.deepcopy(net), NoRetrainConfig(importance="measured"), None)
    cache: dict = {}
    rd_quantize_(copy.deepcopy(net), NoRetrainConfig(lam=1e-4, importance="measured"), x,
                 cache=cache)  # fmt: skip
    first = dict(cache["sensitivity"])
    cache["sensitivity"] = {k: 2 * v for k, v in first.items()}  # the cached one is used
    c = copy.deepcopy(net)
    rd_quantize_(c, NoRetrainConfig(lam=2e-4, importance="measured"), x, cache=cache)
    d = copy.deepcopy(net)
    rd_quantize_(d, NoRetrainConfig(lam=1e-4, importance="measured"), x, cache={})
    for k, v in c.state_dict().items():  # 2 a_l at 2 lam: the same trade as a_l at lam
        assert torch.equal(v, d.state_dict()[k]), k


def test_parametrized_model_is_measured_on_plain_weights() -> None:
    net, x = _net(), torch.randn(32, 1, 8, 8)
    rd_quantize_(net, NoRetrainConfig(lam=1e-5, importance="weights"), None)  # parametrized
    before = copy.deepcopy(net.state_dict())
    rd_quantize_(net, NoRetrainConfig(lam=1e-5, importance="measured"), x)
    assert set(net.state_dict()) == set(before)
