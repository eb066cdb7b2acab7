"""prune_, strip_pruning_, sparsity_report: masks that stay, criteria checked by hand."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deep_compression.checkpoint import save_checkpoint
from deep_compression.errors import ConfigError
from deep_compression.loading import load_model
from deep_compression.models import build_model
from deep_compression.prune import (
    ActivationAware,
    GlobalMagnitude,
    KeepFraction,
    NoPruning,
    PruningMask,
    StdThreshold,
    activation_means,
    get_mask,
    prune_,
    sparsity_report,
    strip_pruning_,
)
from deep_compression.prune.dropout import DropoutScaler, dropout_inputs


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet-300-100")


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-3, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-3),
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=5e-3),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=5e-2),
    ],
    ids=["sgd-nesterov", "sgd-momentum", "adam", "adamw"],
)
def test_pruned_entries_stay_exactly_zero_under_training(make_opt, one_thread) -> None:
    torch.manual_seed(0)
    # A conv and two linear layers; small, so 60 optimizer steps take milliseconds.
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    prune_(model, KeepFraction(0.3))
    masks = {i: get_mask(model[i]).clone() for i in (0, 3, 5)}
    opt = make_opt(model.parameters())
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        x = torch.randn(16, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        for i, mask in masks.items():
            grad = model[i].parametrizations.weight.original.grad
            # The masked product gives the pruned entries exactly zero gradient.
            assert torch.count_nonzero(grad[~mask]) == 0
            assert torch.count_nonzero(grad[mask]) > 0
        opt.step()
    for i, mask in masks.items():
        layer = model[i]
        assert torch.equal(get_mask(layer), mask)  # the mask itself never changed
        assert torch.count_nonzero(layer.weight[~mask]) == 0
        # The stored value does not drift either (so stripping later is exact).
        assert torch.count_nonzero(layer.parametrizations.weight.original[~mask]) == 0
        assert torch.count_nonzero(layer.weight[mask]) == int(mask.sum())


def test_std_threshold_matches_numpy() -> None:
    model = _lenet()
    w = {n: getattr(model, n).weight.detach().numpy().copy() for n in ("fc1", "fc2", "fc3")}
    prune_(model, {"*": StdThreshold(1.0), "fc3": StdThreshold(0.5)})
    for name, s in (("fc1", 1.0), ("fc2", 1.0), ("fc3", 0.5)):
        expected = np.abs(w[name]) >= s * np.std(w[name])
        assert np.array_equal(get_mask(getattr(model, name)).numpy(), expected)


def test_std_uses_the_survivors_of_a_pruned_layer() -> None:
    model = _lenet()
    prune_(model, KeepFraction(0.5))
    w = model.fc2.weight.detach().numpy().copy()
    kept = get_mask(model.fc2).numpy().copy()
    prune_(model, StdThreshold(1.0))
    expected = kept & (np.abs(w) >= np.std(w[kept].astype(np.float64)))
    assert np.array_equal(get_mask(model.fc2).numpy(), expected)


def test_keep_fraction_keeps_the_largest() -> None:
    model = _lenet()
    w = model.fc2.weight.detach().abs().numpy().ravel()
    prune_(model, KeepFraction(0.123))
    k = round(0.123 * w.size)
    expected = np.zeros(w.size, dtype=bool)
    expected[np.argsort(-w)[:k]] = True
    assert np.array_equal(get_mask(model.fc2).numpy().ravel(), expected)
    report = sparsity_report(model)
    assert [r.kept for r in report.layers] == [round(0.123 * n) for n in (235_200, 30_000, 1_000)]
    assert report.kept == sum(r.kept for r in report.layers)


def test_global_magnitude_pools_layers() -> None:
    model = _lenet()
    ws = [getattr(model, n).weight.detach().abs().numpy().ravel() for n in ("fc1", "fc2")]
    pooled = np.concatenate(ws)
    crit = GlobalMagnitude(keep=0.05)
    prune_(model, {"*": NoPruning(), "fc1": crit, "fc2": crit})
    k = round(0.05 * pooled.size)
    threshold = np.sort(pooled)[::-1][k - 1]
    for name, w in zip(("fc1", "fc2"), ws):
        assert np.array_equal(get_mask(getattr(model, name)).numpy().ravel(), w >= threshold)
    assert get_mask(model.fc3) is None  # "none" leaves the layer alone
    # An absolute threshold is the same rule in every layer.
    model = _lenet()
    prune_(model, GlobalMagnitude(threshold=0.03))
    for name in ("fc1", "fc2", "fc3"):
        layer = getattr(model, name)
        expected = layer.parametrizations.weight.original.abs() >= 0.03
        assert torch.equal(get_mask(layer), expected | (get_mask(layer) & expected))


def test_activation_aware_linear_by_hand() -> None:
    model = _lenet()
    x = torch.randn(64, 1, 28, 28)
    x[:, :, :5] = 0.0  # dead input pixels: their weights carry nothing
    h = x.flatten(1)
    means = h.abs().mean(0).numpy()
    w = model.fc1.weight.detach().abs().numpy()
    prune_(model, {"*": NoPruning(), "fc1": ActivationAware(0.2)}, calibration=x)
    importance = (w * means).ravel()
    expected = np.zeros(importance.size, dtype=bool)
    expected[np.argsort(-importance, kind="stable")[: round(0.2 * importance.size)]] = True
    assert np.array_equal(get_mask(model.fc1).numpy().ravel(), expected)
    assert not get_mask(model.fc1)[:, : 5 * 28].any()


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(3, 4, 3),
        nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dilation=(1, 2)),
        nn.Conv2d(4, 6, 3, padding="same", groups=2),
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
    ],
    ids=["plain", "stride-pad-dilation", "same-groups", "reflect"],
)
def test_conv_activation_means_equal_unfold(layer: nn.Conv2d) -> None:
    x = torch.randn(5, layer.in_channels, 9, 10)
    means = activation_means(nn.Sequential(layer), ["0"], x)["0"]
    # Independent reference: pad as the layer does, unfold, average |patches|.
    pad = layer._reversed_padding_repeated_twice
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    xp = nn.functional.pad(x, pad, mode=mode)
    cols = nn.functional.unfold(
        xp, layer.kernel_size, dilation=layer.dilation, stride=layer.stride
    )  # (N, C*kh*kw, L)
    ref = cols.abs().mean(dim=(0, 2)).reshape(layer.in_channels, *layer.kernel_size)
    torch.testing.assert_close(means, ref)


def test_conv1d_and_conv3d_activation_means_brute_force() -> None:
    conv1 = nn.Conv1d(2, 3, 3, stride=2)
    x1 = torch.randn(4, 2, 11)
    m1 = activation_means(nn.Sequential(conv1), ["0"], x1)["0"]
    out = (11 - 3) // 2 + 1
    ref1 = torch.zeros(2, 3)
    for c in range(2):
        for k in range(3):
            ref1[c, k] = torch.stack([x1[:, c, 2 * p + k].abs() for p in range(out)]).mean()
    torch.testing.assert_close(m1, ref1)
    conv3 = nn.Conv3d(1, 2, 2, padding=1)
    x3 = torch.randn(2, 1, 3, 3, 3)
    m3 = activation_means(nn.Sequential(conv3), ["0"], x3)["0"]
    xp = nn.functional.pad(x3, (1, 1, 1, 1, 1, 1)).abs()
    ref3 = torch.zeros(1, 2, 2, 2)
    for a in range(2):
        for b in range(2):
            for c in range(2):
                ref3[0, a, b, c] = xp[:, 0, a : a + 4, b : b + 4, c : c + 4].mean()
    torch.testing.assert_close(m3, ref3)


def test_any_module_with_conv_and_linear_layers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 5))
    x = torch.randn(8, 2, 8)
    report = prune_(model, {"*": KeepFraction(0.5), "0": ActivationAware(0.25)}, calibration=x)
    assert {r.name: r.kept for r in report.layers} == {"0": 6, "3": 60}
    assert list(model[0].parametrizations) == ["weight"]  # the bias is never pruned
    model(x).sum().backward()  # still trains


def test_masks_only_shrink() -> None:
    model = _lenet()
    prune_(model, KeepFraction(0.1))
    first = get_mask(model.fc1).clone()
    prune_(model, KeepFraction(0.5))  # milder: nothing may grow back
    assert torch.equal(get_mask(model.fc1), first)
    prune_(model, StdThreshold(2.0))
    second = get_mask(model.fc1)
    assert not (second & ~first).any() and second.sum() < first.sum()
    # Still exactly one parametrization, holding the ANDed mask.
    assert len(model.fc1.parametrizations.weight) == 1
    assert isinstance(model.fc1.parametrizations.weight[0], PruningMask)


def test_biases_are_not_pruned() -> None:
    model = _lenet()
    bias = model.fc1.bias.detach().clone()
    prune_(model, KeepFraction(0.01))
    assert torch.equal(model.fc1.bias, bias)
    assert "bias" not in model.fc1.parametrizations


def test_strip_keeps_the_zeros_and_the_function(tmp_path: Path) -> None:
    model = _lenet()
    prune_(model, {"*": KeepFraction(0.2), "fc3": StdThreshold(0.5)})
    plain = strip_pruning_(copy.deepcopy(model))
    assert get_mask(model.fc1) is not None  # the input model is untouched
    x = torch.randn(16, 1, 28, 28)
    model.eval()
    plain.eval()
    torch.testing.assert_close(plain(x), model(x), rtol=0, atol=0)
    for name in ("fc1", "fc2", "fc3"):
        layer = getattr(plain, name)
        assert not hasattr(layer, "parametrizations")
        assert isinstance(layer.weight, nn.Parameter)
        mask = get_mask(getattr(model, name))
        assert torch.count_nonzero(layer.weight[~mask]) == 0
    assert set(plain.state_dict()) == set(_lenet().state_dict())
    assert sparsity_report(plain).kept == sparsity_report(model).kept


def test_pruned_checkpoint_roundtrips(tmp_path: Path) -> None:
    model = build_model("lenet-5")
    prune_(model, {"*": KeepFraction(0.1), "conv1": NoPruning()})
    path = save_checkpoint(
        tmp_path / "p.safetensors", model, {"model": {"name": "lenet-5", "kwargs": {}}}
    )
    loaded, _ = load_model(path)
    for name in ("conv2", "fc1", "fc2"):
        assert torch.equal(get_mask(getattr(loaded, name)), get_mask(getattr(model, name)))
    assert get_mask(loaded.conv1) is None
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    # Pruning the loaded model again ANDs into the restored mask.
    before = get_mask(loaded.fc1).clone()
    prune_(loaded, KeepFraction(0.05))
    assert not (get_mask(loaded.fc1) & ~before).any()


def test_config_errors() -> None:
    model = _lenet()
    with pytest.raises(ConfigError, match="'fc4' matches no layer"):
        prune_(model, {"*": KeepFraction(0.5), "fc4": KeepFraction(0.5)})
    with pytest.raises(ConfigError, match="no pruning criterion for layer 'fc1'"):
        prune_(model, {"fc2": KeepFraction(0.5)})
    with pytest.raises(ConfigError, match="calibration"):
        prune_(model, ActivationAware(0.5))
    with pytest.raises(ConfigError, match="no Linear or Conv"):
        prune_(nn.Sequential(nn.ReLU()), KeepFraction(0.5))
    # dict forms are accepted and validated the same way
    with pytest.raises(ConfigError, match=r"fraction in \(0, 1\]"):
        prune_(model, {"*": {"method": "fraction", "keep": 0}})
    assert get_mask(model.fc1) is None  # nothing was applied by the failed calls


def test_dropout_follows_its_layer_and_scales() -> None:
    torch.manual_seed(0)
    model = build_model("lenet-300-100", dropout=0.5)
    x = torch.randn(1, 1, 28, 28)
    assert dropout_inputs(model, x) == {"drop1": ["fc1"], "drop2": ["fc2"]}
    assert dropout_inputs(build_model("lenet-5", dropout=0.3), x) == {"drop": ["fc1"]}
    scaler = DropoutScaler(model, x)
    prune_(model, {"*": KeepFraction(0.09), "fc2": KeepFraction(0.25)})
    rates = scaler.update_(model)
    assert rates["drop1"] == pytest.approx(0.5 * np.sqrt(round(0.09 * 235_200) / 235_200))
    assert rates["drop2"] == pytest.approx(0.5 * 0.5)
    assert model.drop2.p == pytest.approx(0.25)
