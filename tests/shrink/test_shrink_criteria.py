"""The criteria of structured pruning against brute-force references."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from deep_compression.models import build_model
from deep_compression.shrink import (
    channel_scores,
    greedy_cancel,
    group_lasso,
    lasso_penalty,
    reduce_order,
    removal_order,
    trace_groups,
)


def _lenet5() -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    model = build_model("lenet-5").eval()
    groups = {g.name: g for g in trace_groups(model, torch.zeros(1, 1, 28, 28))}
    return model, groups


def test_norm_scores_match_loops() -> None:
    model, groups = _lenet5()
    w, b = model.conv2.weight.detach(), model.conv2.bias.detach()
    l1 = [float(w[c].abs().sum() + b[c].abs()) for c in range(50)]
    l2 = [float((w[c].square().sum() + b[c].square()).sqrt()) for c in range(50)]
    assert channel_scores(model, groups["conv2"], "l1").tolist() == pytest.approx(l1, rel=1e-5)
    assert channel_scores(model, groups["conv2"], "l2").tolist() == pytest.approx(l2, rel=1e-5)
    order = removal_order(model, groups["conv2"], "l1")
    assert order == sorted(range(50), key=lambda c: l1[c])


def test_bn_scores_are_the_absolute_scales() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    model[1].weight.data = torch.tensor([0.5, -2.0, 0.1, -0.3])
    (group,) = [g for g in trace_groups(model, torch.zeros(1, 1, 5, 5)) if not g.pinned]
    assert channel_scores(model, group, "bn").tolist() == pytest.approx([0.5, 2.0, 0.1, 0.3])
    assert removal_order(model, group, "bn") == [2, 3, 0, 1]


def _brute_greedy(vectors: torch.Tensor) -> list[int]:
    """Greedy cancellation computed on the contribution vectors themselves."""
    left, removed, order = set(range(len(vectors))), torch.zeros_like(vectors[0]), []
    while left:
        c = min(sorted(left), key=lambda c: float((removed + vectors[c]).square().sum()))
        order.append(c)
        left.remove(c)
        removed = removed + vectors[c]
    return order


def test_greedy_cancel_matches_the_explicit_sums() -> None:
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    v[3] = -v[1] * 1.01  # nearly cancels channel 1: removed right after it
    order = greedy_cancel(v @ v.T)
    assert order == _brute_greedy(v)
    assert abs(order.index(3) - order.index(1)) == 1


def test_greedy_cancel_first_pair_is_optimal_for_two() -> None:
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    first = greedy_cancel(v @ v.T)[0]
    assert first == min(range(6), key=lambda c: float(v[c].square().sum()))
    best_pair = min(
        itertools.combinations(range(6), 2), key=lambda p: float((v[p[0]] + v[p[1]]).square().sum())
    )
    # greedy is not exhaustive: its pair costs at least the best pair's
    order = greedy_cancel(v @ v.T)
    cost = float((v[order[0]] + v[order[1]]).square().sum())
    assert cost >= float((v[best_pair[0]] + v[best_pair[1]]).square().sum()) - 1e-12


@pytest.mark.parametrize("group", ["conv1", "conv2", "fc1"])
def test_reduce_contributions_match_zeroing_a_channel(group: str) -> None:
    """Reference: the change of the reading layer's output when one channel's input is
    zeroed (by running the layer), against the Gram matrix reduce builds."""
    model, groups = _lenet5()
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    g = groups[group]
    (reader,) = [m for m in g.members if m.kind == "in"]
    layer = model.get_submodule(reader.module)
    seen = {}
    h = layer.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model(x)
    h.remove()
    inp = seen["x"]
    vectors = []
    with torch.no_grad():
        full = layer(inp)
        for c in range(g.size):
            z = inp.clone()
            if inp.ndim == 2:
                z[:, c * reader.spatial : (c + 1) * reader.spatial] = 0
            else:
                z[:, c] = 0
            vectors.append((full - layer(z)).reshape(-1).double())
    v = torch.stack(vectors)
    assert reduce_order(model, g, x) == greedy_cancel(v @ v.T)


def test_group_lasso_gradient_is_the_penalty_gradient() -> None:
    model, groups = _lenet5()
    free = [g for g in groups.values() if not g.pinned]
    x = torch.randn(4, 1, 28, 28)
    strength = 0.05
    # Reference: autograd of the loss plus the explicit penalty.
    model.zero_grad()
    (model(x).sum() + strength * lasso_penalty(model, free)).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with group_lasso(model, free, strength):
        model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-5, atol=1e-7)
    model.zero_grad()
    model(x).sum().backward()  # hooks removed on leaving the block
    assert not torch.allclose(model.fc1.weight.grad, expected["fc1.weight"])


@pytest.mark.mnist
def test_training_with_the_penalty_empties_channels(mnist_small) -> None:
    """The same training with and without the penalty: with it, the group norms shrink
    and the lasso-trained network has many more near-empty neurons."""
    from deep_compression.shrink import prunable_groups
    from deep_compression.train import TrainConfig, fit

    train, _ = mnist_small
    norms = {}
    for strength in (0.0, 0.3):
        torch.manual_seed(0)
        model = build_model("lenet-300-100")
        groups = prunable_groups(trace_groups(model, train.x[:1]))
        with group_lasso(model, groups, strength):
            fit(
                model, train, None, TrainConfig(epochs=3, lr=0.01, weight_decay=0.0), progress=False
            )
        norms[strength] = channel_scores(model, groups[0], "lasso")
    assert norms[0.3].sum() < 0.5 * norms[0.0].sum()
    assert (norms[0.3] < 1e-3).sum() > 10 * max(1, int((norms[0.0] < 1e-3).sum()))
