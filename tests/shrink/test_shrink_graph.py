"""Structured pruning: the traced channel groups (written out by hand here) and the
surgery, checked against the unshrunk model with the removed channels zeroed."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deep_compression.errors import ConfigError
from deep_compression.models import build_model
from deep_compression.prune import prune_
from deep_compression.prune.config import KeepFraction
from deep_compression.shrink import (
    ShrinkConfig,
    remove_channels_,
    shrink_,
    trace_groups,
)


class Tiny(nn.Module):
    """BatchNorm, a residual addition, a concatenation and a flatten into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(4)
        self.a = nn.Conv2d(4, 3, 3, padding=1, bias=False)
        self.bna = nn.BatchNorm2d(3)
        self.b = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bnb = nn.BatchNorm2d(4)
        self.side = nn.Conv2d(4, 2, 1)
        self.bnc = nn.BatchNorm2d(6)  # over the concatenation (4 + 2 channels)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))  # (N, 4, 8, 8)
        y = self.bnb(self.b(F.relu(self.bna(self.a(x)))))
        x = F.relu(x + y)  # residual: stem and b coupled
        x = self.bnc(torch.cat([x, self.side(x)], dim=1))  # (N, 6, 8, 8)
        x = F.max_pool2d(x, 2).flatten(1)  # (N, 96): 16 features per channel
        return self.out(torch.relu(self.fc(x)))


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen)
            m.running_mean = torch.randn(n, generator=gen)
            m.running_var = torch.rand(n, generator=gen) + 0.5


def test_tiny_groups_written_out_by_hand() -> None:
    groups = {g.name: g for g in trace_groups(Tiny(), torch.zeros(2, 1, 8, 8))}
    members = {
        n: {(m.module, m.kind, m.offset, m.spatial) for m in g.members} for n, g in groups.items()
    }
    assert set(groups) == {"stem", "a", "side", "fc", "out"}
    # The residual addition unites stem and b (and their BatchNorms); both feed a and
    # side, sit at channels 0..3 of bnc and of the flattened fc input (16 per channel).
    assert members["stem"] == {
        ("stem", "out", 0, 1), ("bn0", "bn", 0, 1), ("b", "out", 0, 1), ("bnb", "bn", 0, 1),
        ("a", "in", 0, 1), ("side", "in", 0, 1), ("bnc", "bn", 0, 1), ("fc", "in", 0, 16),
    }  # fmt: skip
    assert members["a"] == {("a", "out", 0, 1), ("bna", "bn", 0, 1), ("b", "in", 0, 1)}
    assert members["side"] == {("side", "out", 0, 1), ("bnc", "bn", 4, 1), ("fc", "in", 4, 16)}
    assert members["fc"] == {("fc", "out", 0, 1), ("out", "in", 0, 1)}
    assert groups["out"].pinned == "the model's output"
    assert not any(groups[n].pinned for n in ("stem", "a", "side", "fc"))


def _zero_channels(model: nn.Module, groups, keep) -> nn.Module:  # type: ignore[no-untyped-def]
    """The reference: the same network with the removed channels' own parameters zeroed
    (filters, biases, BatchNorm scale and shift), so they carry exact zeros."""
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for g in groups:
            removed = [c for c in range(g.size) if c not in keep.get(g.name, range(g.size))]
            for m in g.members:
                layer = modules[m.module]
                rows = [m.offset + c for c in removed]
                if m.kind in ("out", "bn", "dw"):
                    layer.weight[rows] = 0
                    if layer.bias is not None:
                        layer.bias[rows] = 0
    return ref


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shrunk_tiny_network_computes_what_the_zeroed_one_does(seed: int) -> None:
    torch.manual_seed(seed)
    model = Tiny().eval()
    _randomise_bn(model, seed)
    x = torch.randn(5, 1, 8, 8)
    groups = trace_groups(model, x)
    gen = torch.Generator().manual_seed(seed)
    keep = {
        g.name: sorted(torch.randperm(g.size, generator=gen)[: max(1, g.size // 2)].tolist())
        for g in groups
        if not g.pinned
    }
    ref = _zero_channels(model, groups, keep)
    # BatchNorm of a zeroed channel outputs its shift, which is zeroed too; but its
    # normalised mean is subtracted first: (0 - mean) * 0 / std + 0 = 0. Exact zeros.
    remove_channels_(model, groups, keep)
    assert model.stem.out_channels == model.b.out_channels == len(keep["stem"])
    assert model.bnc.num_features == len(keep["stem"]) + len(keep["side"])
    assert model.fc.in_features == 16 * model.bnc.num_features
    torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["lenet-5", "lenet-300-100"])
def test_removing_channels_that_are_already_zero_changes_nothing(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(8, 1, 28, 28)
    groups = trace_groups(model, x)
    keep = {}
    with torch.no_grad():
        for g in groups:
            if g.pinned:
                continue
            (out,) = [m.module for m in g.members if m.kind == "out"]
            layer = model.get_submodule(out)
            dead = list(range(0, g.size, 3))  # every third channel: all its weights zero
            layer.weight[dead] = 0
            layer.bias[dead] = 0
            keep[g.name] = [c for c in range(g.size) if c not in dead]
    before = model(x)
    counts = {k: len(v) for k, v in keep.items()}
    report = shrink_(model, ShrinkConfig(criterion="l1", keep=counts), x)
    # l1 removes exactly the zero channels (their norm is 0, every other is > 0).
    assert {k: b for k, (a, b) in report.widths.items()} == counts
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)
    assert report.params[1] < report.params[0] and report.macs[1] < report.macs[0]


def test_pinned_groups_and_parametrized_models_are_refused() -> None:
    model = build_model("lenet-5")
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(ConfigError, match="fc2: this group cannot be pruned .*output"):
        shrink_(model, ShrinkConfig(keep={"fc2": 0.5}), x)
    with pytest.raises(ConfigError, match="key 'fc9' matches no layer"):
        shrink_(model, ShrinkConfig(keep={"fc9": 0.5}), x)
    prune_(model, {"*": KeepFraction(0.5)})
    with pytest.raises(ConfigError, match="shrink before pruning"):
        shrink_(model, ShrinkConfig(keep={"*": 0.5}), x)


class Padded(nn.Module):
    """A channel pad (an option-A shortcut) is not understood: it pins its groups."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3)
        self.c2 = nn.Conv2d(2, 4, 3)
        self.c3 = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        y = self.c2(x)
        return self.c3(y) + F.pad(x[:, :, 2:, 2:], (0, 0, 0, 0, 1, 1))


def test_unknown_operations_pin_what_they_touch() -> None:
    groups = {g.name: g for g in trace_groups(Padded(), torch.zeros(1, 1, 9, 9))}
    assert "pad" in groups["c1"].pinned
    assert groups["c2"].pinned == ""
    assert groups["c3"].pinned  # added to the pad, and the output


def test_bad_configs() -> None:
    with pytest.raises(ConfigError, match="shrink.criterion must be one of"):
        ShrinkConfig(criterion="l3")
    with pytest.raises(ConfigError, match=r"shrink.keep.fc1 must be a fraction"):
        ShrinkConfig(keep={"fc1": 0})
    with pytest.raises(ConfigError, match="needs a \\[shrink.train\\]"):
        ShrinkConfig(lasso=0.01)
    with pytest.raises(ConfigError, match="unknown keys"):
        ShrinkConfig.from_dict({"keeps": {}})


class Separable(nn.Module):
    """A depthwise convolution carries its input's channels, as a BatchNorm does."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(6)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.bn1 = nn.BatchNorm2d(6)
        self.pointwise = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(self.bn1(self.depthwise(x)))
        return self.fc(F.max_pool2d(self.pointwise(x), 2).flatten(1))


def test_depthwise_convolutions_follow_their_input() -> None:
    torch.manual_seed(0)
    model = Separable().eval()
    _randomise_bn(model)
    x = torch.randn(3, 1, 8, 8)
    groups = {g.name: g for g in trace_groups(model, x)}
    kinds = {(m.module, m.kind) for m in groups["stem"].members}
    assert kinds == {
        ("stem", "out"),
        ("bn0", "bn"),
        ("depthwise", "dw"),
        ("bn1", "bn"),
        ("pointwise", "in"),
    }
    keep = {"stem": [0, 2, 5], "pointwise": [1, 3]}
    ref = _zero_channels(model, list(groups.values()), keep)
    remove_channels_(model, list(groups.values()), keep)
    assert model.depthwise.groups == model.depthwise.in_channels == 3
    torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)
