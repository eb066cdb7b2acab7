"""quantize_, the centroid gradient, strip_quantization_ and the report."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.checkpoint import save_checkpoint
from deep_compression.data import Split
from deep_compression.errors import ConfigError
from deep_compression.loading import load_model
from deep_compression.models import build_model
from deep_compression.prune import PruningMask, get_mask
from deep_compression.quantize import (
    QuantizeConfig,
    QuantizedWeight,
    layer_bits,
    quantization_report,
    quantize_,
    quantized_weight,
    strip_quantization_,
)
from deep_compression.train import TrainConfig, evaluate, fit


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: the suite shares 2 cores with other jobs, and oversubscribed
    threads make small CPU kernels tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def magnitude_prune_(model: nn.Module, keep: dict[str, float]) -> dict[str, torch.Tensor]:
    """Keep the ``keep[layer]`` largest |w| of each listed layer (a PruningMask)."""
    masks = {}
    for name, frac in keep.items():
        layer = model.get_submodule(name)
        w = layer.weight.detach()
        k = max(1, round(frac * w.numel()))
        threshold = w.abs().flatten().kthvalue(w.numel() - k + 1).values
        mask = w.abs() >= threshold
        with torch.no_grad():
            layer.weight.mul_(mask)
        parametrize.register_parametrization(layer, "weight", PruningMask(mask))
        masks[name] = mask
    return masks


@pytest.fixture
def pruned_lenet5() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model("lenet-5")
    masks = magnitude_prune_(model, {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19})
    return model, masks


def test_distinct_values_and_exact_zeros(pruned_lenet5) -> None:
    """At most 2**bits distinct non-zero values per layer; zeros exactly where pruned."""
    model, masks = pruned_lenet5
    x = torch.randn(4, 1, 28, 28)
    report = quantize_(model, QuantizeConfig(bits={"*": 3, "conv*": 5, "fc2": 2}))
    expected_bits = {"conv1": 5, "conv2": 5, "fc1": 3, "fc2": 2}
    for name, mask in masks.items():
        layer = model.get_submodule(name)
        q = quantized_weight(layer)
        assert isinstance(q, QuantizedWeight)
        w = layer.weight.detach()
        k = 2 ** expected_bits[name]
        assert q.codebook.numel() == k, "a full codebook: every centroid for kept weights"
        assert torch.equal(w == 0, ~mask), "exactly the pruned positions are zero"
        assert torch.unique(w[w != 0]).numel() <= k
        assert torch.equal(get_mask(layer), mask)
        assert bool((q.indices[~mask] == 0).all()), "pruned positions carry index 0"
        assert int(q.indices.max()) < k and int(q.indices.min()) >= 0
        assert report[name].kept == int(mask.sum()) and report[name].distinct <= k
    assert model(x).shape == (4, 10)


def test_clusters_only_the_kept_weights(pruned_lenet5) -> None:
    """The codebook is the k-means of the kept weights: zeros are not a cluster (with 1 bit
    the two centroids are the means of the negative and the positive kept weights, not 0
    and something else)."""
    model, masks = pruned_lenet5
    kept = model.fc1.weight.detach()[masks["fc1"]].double().numpy()
    quantize_(model, QuantizeConfig(bits={"*": 8, "fc1": 1}, init="optimal"))
    codebook = model.fc1.parametrizations.weight[0].codebook.detach().double().numpy()
    # Independent check: the best 2-split of sorted data, by brute force over split points.
    xs = np.sort(kept)
    costs = [xs[:i].var() * i + xs[i:].var() * (xs.size - i) for i in range(1, xs.size)]
    i = int(np.argmin(costs)) + 1
    np.testing.assert_allclose(codebook, [xs[:i].mean(), xs[i:].mean()], rtol=1e-5)
    assert codebook[0] < 0 < codebook[1]


def test_centroid_gradient_by_hand() -> None:
    """d loss / d centroid = sum of d loss / d w over the weights assigned to it.

    W = codebook[indices] * mask is 2x2, y = W @ x with x = (1, 2), loss = sum(y), so
    d loss / d W[i, j] = x[j] = [[1, 2], [1, 2]]. With indices [[0, 1], [1, 0]] and the
    bottom-right weight pruned: centroid 0 gets W[0,0] only -> 1; centroid 1 gets W[0,1]
    and W[1,0] -> 2 + 1 = 3; the pruned W[1,1] (index 0) contributes nothing.
    """
    layer = nn.Linear(2, 2, bias=False)
    codebook = torch.tensor([0.5, -0.25])
    indices = torch.tensor([[0, 1], [1, 0]])
    mask = torch.tensor([[True, True], [True, False]])
    parametrize.register_parametrization(
        layer, "weight", QuantizedWeight(codebook, indices, mask), unsafe=True
    )
    layer(torch.tensor([1.0, 2.0])).sum().backward()
    q = layer.parametrizations.weight[0]
    assert q.codebook.grad.tolist() == [1.0, 3.0]
    assert torch.equal(layer.weight, torch.tensor([[0.5, -0.25], [-0.25, 0.0]]))


def test_centroid_gradient_is_scatter_sum_of_weight_gradients(pruned_lenet5) -> None:
    """On a real layer: the codebook gradient equals the dense weight gradient of an
    equivalent plain layer, summed per cluster over kept positions."""
    model, _ = pruned_lenet5
    quantize_(model, QuantizeConfig(bits={"*": 4}))
    plain = strip_quantization_(copy.deepcopy(model))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    nn.functional.cross_entropy(plain(x), y).backward()
    for name in ("conv2", "fc1"):
        q = quantized_weight(model.get_submodule(name))
        g = plain.get_submodule(name).weight.grad
        expected = torch.zeros_like(q.codebook).index_add_(0, q.indices[q.mask].long(), g[q.mask])
        torch.testing.assert_close(q.codebook.grad, expected, rtol=1e-4, atol=1e-6)


def test_only_codebooks_and_biases_train(pruned_lenet5) -> None:
    model, _ = pruned_lenet5
    quantize_(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.endswith((".codebook", ".bias")) for n in trainable), trainable
    assert "fc1.parametrizations.weight.original" not in trainable


@pytest.mark.mnist
def test_finetuning_lowers_the_loss_and_keeps_assignments(mnist_small) -> None:
    train, test = mnist_small
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    fit(model, train, None, TrainConfig(epochs=1, seed=0), progress=False)
    masks = magnitude_prune_(model, {"fc1": 0.1, "fc2": 0.1, "fc3": 0.3})
    quantize_(model, QuantizeConfig(bits={"*": 2}))
    before = {n: (q.indices.clone(), q.codebook.detach().clone()) for n, q in _qs(model)}
    loss0 = evaluate(model, train)[0]
    fit(
        model,
        train,
        None,
        TrainConfig(epochs=2, optimizer="adam", lr=1e-3, weight_decay=0.0),
        progress=False,
    )
    loss1 = evaluate(model, train)[0]
    assert loss1 < 0.9 * loss0, (loss0, loss1)
    for name, q in _qs(model):
        assert torch.equal(q.indices, before[name][0]), "assignments stay fixed"
        assert not torch.equal(q.codebook.detach(), before[name][1]), "centroids trained"
        w = model.get_submodule(name).weight
        assert torch.equal(w == 0, ~masks[name]) and torch.unique(w[w != 0]).numel() <= 4


def _qs(model: nn.Module):
    for name in ("fc1", "fc2", "fc3"):
        yield name, quantized_weight(model.get_submodule(name))


def test_quantization_only_mode() -> None:
    """An unpruned model: every weight is kept and clustered (all-True mask)."""
    torch.manual_seed(1)
    model = build_model("lenet-300-100")
    report = quantize_(model, QuantizeConfig(bits={"*": 3}))
    for q in report.layers:
        assert q.kept == q.weights and q.codebook_size == 8 and q.distinct == 8
        w = model.get_submodule(q.name).weight
        assert bool(get_mask(model.get_submodule(q.name)).all())
        assert torch.unique(w).numel() == 8


def test_checkpoint_roundtrip(tmp_path: Path, pruned_lenet5) -> None:
    model, masks = pruned_lenet5
    quantize_(model)
    save_checkpoint(tmp_path / "q.safetensors", model, {"model": {"name": "lenet-5"}})
    loaded, _ = load_model(tmp_path / "q.safetensors")
    model.eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert quantization_report(loaded) == quantization_report(model)
    assert torch.equal(get_mask(loaded.fc1), masks["fc1"])


def test_strip_quantization(pruned_lenet5) -> None:
    model, masks = pruned_lenet5
    quantize_(model, QuantizeConfig(bits={"*": 4}))
    model.eval()
    x = torch.randn(3, 1, 28, 28)
    out = model(x)
    plain = strip_quantization_(copy.deepcopy(model))
    assert not any("parametrizations" in k for k in plain.state_dict())
    assert type(plain.fc1) is nn.Linear and plain.fc1.weight.requires_grad
    assert torch.equal(plain(x), out)
    assert quantization_report(plain).layers == ()
    kept = strip_quantization_(copy.deepcopy(model), keep_mask=True)
    assert torch.equal(get_mask(kept.fc1), masks["fc1"])
    assert isinstance(kept.fc1.parametrizations.weight[0], PruningMask)
    # The source model (whose parametrized class the copies shared) still works.
    assert torch.equal(model(x), out)


def test_deep_copies_stay_independent(pruned_lenet5) -> None:
    """torch shares the generated parametrized class between deep copies; quantizing a
    copy must not break the original pruned model."""
    model, masks = pruned_lenet5
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    out = model(x)
    quantize_(copy.deepcopy(model))
    assert torch.equal(model(x), out)
    assert isinstance(model.fc1.parametrizations.weight[0], PruningMask)


def test_requantize_to_fewer_bits(pruned_lenet5) -> None:
    model, masks = pruned_lenet5
    quantize_(model, QuantizeConfig(bits={"*": 5}))
    quantize_(model, QuantizeConfig(bits={"*": 2}))
    for name, mask in masks.items():
        layer = model.get_submodule(name)
        assert len(layer.parametrizations.weight) == 1
        w = layer.weight
        assert torch.equal(w == 0, ~mask) and torch.unique(w[mask]).numel() <= 4


def test_few_distinct_values_and_empty_layers() -> None:
    """Fewer distinct kept values than 2**bits: the codebook is exactly those values. A
    fully pruned layer: a one-entry codebook and an all-zero weight."""
    model = build_model("lenet-300-100")
    with torch.no_grad():
        model.fc3.weight.copy_(torch.tensor([-0.5, 0.25, 1.0]).repeat(334)[:1000].view(10, 100))
    parametrize.register_parametrization(
        model.fc2, "weight", PruningMask(torch.zeros(100, 300, dtype=torch.bool))
    )
    report = quantize_(model, QuantizeConfig(bits={"*": 4}))
    q3 = quantized_weight(model.fc3)
    assert q3.codebook.tolist() == [-0.5, 0.25, 1.0]
    assert report["fc3"].mse == 0.0 and report["fc3"].codebook_size == 3
    assert report["fc3"].index_bits == 2
    q2 = quantized_weight(model.fc2)
    assert q2.codebook.numel() == 1 and not bool(model.fc2.weight.any())
    assert report["fc2"].kept == 0 and report["fc2"].nonzero == 0


def test_report_by_hand() -> None:
    layer_model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        layer_model[0].weight.copy_(torch.tensor([[1.0, 1.2, 5.0], [0.0, -3.0, 4.8]]))
    parametrize.register_parametrization(
        layer_model[0],
        "weight",
        PruningMask(torch.tensor([[True, True, True], [False, True, True]])),
    )
    report = quantize_(layer_model, QuantizeConfig(bits={"*": 1}, init="optimal"))
    q = report["0"]
    # Kept, sorted: -3, 1, 1.2, 4.8, 5. Of the four 2-splits, {-3, 1, 1.2} | {4.8, 5} has
    # the least squared error (11.25; next best {-3} | {1, 1.2, 4.8, 5}: 14.48).
    c0, c1 = (-3 + 1 + 1.2) / 3, 4.9
    codebook = quantized_weight(layer_model[0]).codebook.tolist()
    assert codebook == pytest.approx([c0, c1])
    sq = [(1 - c0) ** 2, (1.2 - c0) ** 2, (5 - c1) ** 2, (-3 - c0) ** 2, (4.8 - c1) ** 2]
    assert sum(sq) == pytest.approx(11.25, abs=0.01)
    assert q.mse == pytest.approx(sum(sq) / 5)
    norm = np.sqrt(1 + 1.44 + 25 + 9 + 4.8**2)
    assert q.relative_error == pytest.approx(np.sqrt(sum(sq)) / norm)
    cells = [c.strip() for c in report.table({"0": 1}).splitlines()[2].split("|")[1:-1]]
    assert cells == [
        "0",
        "6",
        "5",
        "1",
        "2",
        "1",
        "2",
        f"{q.mse:.3g}",
        f"{100 * q.relative_error:.2f}%",
    ]
    assert report.to_dict()["0"]["kept"] == 5
    assert (q.weights, q.kept, q.nonzero, q.codebook_size, q.index_bits, q.distinct) == (
        6,
        5,
        5,
        2,
        1,
        2,
    )


@pytest.mark.parametrize("bits", [0, 17, -1, 2.5, True, "4"])
def test_bits_outside_range_rejected(bits) -> None:
    with pytest.raises(ConfigError, match=r"quantize.bits\['fc1'\] must be an integer in 1..16"):
        QuantizeConfig(bits={"*": 5, "fc1": bits})


def test_bits_patterns_checked() -> None:
    model = build_model("lenet-300-100")
    with pytest.raises(ConfigError, match="key 'fc4' matches no layer"):
        quantize_(model, QuantizeConfig(bits={"*": 5, "fc4": 3}))
    with pytest.raises(ConfigError, match="key 'type:Conv2d' matches no layer"):
        quantize_(model, QuantizeConfig(bits={"type:Conv2d": 3}))
    # Layers no key matches get the paper's defaults by type: 8 for conv, 5 otherwise.
    assert layer_bits(model, QuantizeConfig(bits={"fc1": 3})) == {"fc1": 3, "fc2": 5, "fc3": 5}
    assert layer_bits(model, QuantizeConfig()) == {"fc1": 5, "fc2": 5, "fc3": 5}
    assert layer_bits(build_model("lenet-5"), QuantizeConfig()) == {
        "conv1": 8,
        "conv2": 8,
        "fc1": 5,
        "fc2": 5,
    }
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


def test_finetune_on_synthetic_data_runs_with_fit() -> None:
    """fit() trains a quantized model through the codebook (no MNIST needed)."""
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    quantize_(model, QuantizeConfig(bits={"*": 2}))
    x = torch.randn(256, 1, 28, 28)
    y = model(x).argmax(1).roll(1)  # labels the quantized model gets wrong
    split = Split(x, y)
    loss0 = evaluate(model, split)[0]
    fit(
        model,
        split,
        None,
        TrainConfig(epochs=5, optimizer="adam", lr=1e-2, weight_decay=0.0),
        progress=False,
    )
    assert evaluate(model, split)[0] < loss0
    assert torch.unique(model.fc1.weight).numel() <= 4
