"""The torch side: parametrized models -> .dcz -> plain models, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import kmeans1d
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.dcz import decode, open_dcz
from deep_compression.encode import EncodeConfig, encode_model, model_tensors, plain_state_dict
from deep_compression.errors import ConfigError, FormatError
from deep_compression.loading import load_any, load_dcz
from deep_compression.models import build_model
from deep_compression.prune import PruningMask
from deep_compression.quantize import QuantizedWeight


def quantize_layer_(layer: nn.Module, keep: float, k: int, seed: int = 0) -> None:
    """Magnitude-prune ``layer.weight`` to ``keep`` and share it with 1-D k-means (test stand-in
    for the real pruning and quantization stages)."""
    w = layer.weight.detach()
    threshold = w.abs().flatten().kthvalue(max(1, int(w.numel() * (1 - keep)))).values
    mask = w.abs() > threshold
    labels, centroids = kmeans1d.cluster(w[mask].double().numpy(), k)
    indices = torch.zeros(w.shape, dtype=torch.int32)
    indices[mask] = torch.tensor(labels, dtype=torch.int32)
    qw = QuantizedWeight(torch.tensor(centroids, dtype=torch.float32), indices, mask)
    parametrize.register_parametrization(layer, "weight", qw, unsafe=True)


def prune_layer_(layer: nn.Module, keep: float) -> None:
    w = layer.weight.detach()
    mask = w.abs() > w.abs().flatten().kthvalue(int(w.numel() * (1 - keep))).values
    with torch.no_grad():
        layer.weight.mul_(mask)
    parametrize.register_parametrization(layer, "weight", PruningMask(mask))


@pytest.fixture(scope="module")
def lenet5() -> nn.Module:
    """LeNet-5 with every kind of layer: quantized conv and fc, pruned-only fc, plain conv."""
    torch.manual_seed(0)
    model = build_model("lenet-5")
    quantize_layer_(model.conv2, keep=0.2, k=256)
    quantize_layer_(model.fc1, keep=0.08, k=32)
    prune_layer_(model.fc2, keep=0.3)
    model.eval()
    return model


META = {"model": {"name": "lenet-5", "kwargs": {}}, "dataset": "mnist"}


def test_tensors_are_classified_by_their_parametrization(lenet5) -> None:
    kinds = {type(r).__name__: [] for r in model_tensors(lenet5)}
    for r in model_tensors(lenet5):
        kinds[type(r).__name__].append(r.name)
    assert kinds == {
        "DenseTensor": ["conv1.weight", "conv1.bias", "conv2.bias", "fc1.bias", "fc2.bias"],
        "QuantizedTensor": ["conv2.weight", "fc1.weight"],
        "SparseTensor": ["fc2.weight"],
    }


def test_decoded_weights_are_the_in_memory_weights(lenet5, tmp_path: Path) -> None:
    path = tmp_path / "m.dcz"
    report = encode_model(lenet5, path, metadata=META)
    arrays, meta = decode(path)
    expected = plain_state_dict(lenet5)
    assert list(arrays) == list(expected)
    for name, tensor in expected.items():
        # Exact float32 equality (pruned zeros may be -0.0 in memory, +0.0 decoded).
        assert np.array_equal(arrays[name], tensor.numpy()), name
    q = lenet5.fc1.parametrizations.weight[0]
    want = (q.codebook[q.indices.long()] * q.mask).detach().numpy()
    assert np.array_equal(arrays["fc1.weight"], want)
    assert meta["model"]["name"] == "lenet-5"  # the raw metadata of dcz.decode
    assert report.file_bytes == path.stat().st_size
    assert report.original_bytes == 4 * 431_080
    assert report.rate == pytest.approx(report.original_bytes / report.file_bytes)


def test_outputs_match_after_load(lenet5, tmp_path: Path) -> None:
    path = tmp_path / "m.dcz"
    encode_model(lenet5, path, EncodeConfig(coder="ans"), metadata=META)
    rebuilt, _ = load_dcz(path)  # built-in model from the metadata
    mine, _ = load_dcz(path, build_model("lenet-5"))  # into a user's plain model
    also, _ = load_any(path)
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = lenet5(x)
        for model in (rebuilt, mine, also):
            assert not model.training
            assert torch.equal(model(x), want)


def test_gap_bits_defaults_and_overrides(lenet5, tmp_path: Path) -> None:
    def gap_bits(**kw) -> dict[str, int]:
        encode_model(lenet5, tmp_path / "g.dcz", EncodeConfig(**kw), metadata=META)
        return {t.name: t.gap_bits for t in open_dcz(tmp_path / "g.dcz").tensors if t.gap_bits}

    # A named coder where no key applies: the paper's widths (the default coder, best,
    # chooses them: tests/dcz/test_dcz_default_coding.py).
    paper = EncodeConfig("huffman")
    assert gap_bits(coder="huffman") == {"conv2.weight": 8, "fc1.weight": 5, "fc2.weight": 5}
    four = {"conv2.weight": 4, "fc1.weight": 4, "fc2.weight": 4}
    assert gap_bits(coder="huffman", gap_bits=4) == four
    assert gap_bits(coder="ans", gap_bits=4) == four
    assert gap_bits(coder="huffman", gap_bits={"fc*": 3, "fc2": 6}) == {
        "conv2.weight": 8, "fc1.weight": 3, "fc2.weight": 6,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="'fc9' matches no layer"):
        gap_bits(gap_bits={"fc9": 3})
    with pytest.raises(ConfigError, match="must be an integer in 1..16"):
        gap_bits(gap_bits={"fc1": "five"})
    paper_size = encode_model(lenet5, tmp_path / "d.dcz", paper, metadata=META).file_bytes
    auto = gap_bits(coder="huffman", gap_bits="auto")
    assert set(auto) == {"conv2.weight", "fc1.weight", "fc2.weight"}
    assert (tmp_path / "g.dcz").stat().st_size <= paper_size
    assert gap_bits(coder="huffman", gap_bits={"*": 5, "fc1": "auto"})["fc2.weight"] == 5


def test_same_model_same_bytes(lenet5, tmp_path: Path) -> None:
    encode_model(lenet5, tmp_path / "a.dcz", metadata=META)
    encode_model(lenet5, tmp_path / "b.dcz", metadata=META)
    assert (tmp_path / "a.dcz").read_bytes() == (tmp_path / "b.dcz").read_bytes()


def test_load_errors(lenet5, tmp_path: Path) -> None:
    path = tmp_path / "m.dcz"
    encode_model(lenet5, path, metadata=META)
    with pytest.raises(FormatError, match="do not fit"):
        load_dcz(path, build_model("lenet-300-100"))
    with pytest.raises(ConfigError, match="plain model"):
        load_dcz(path, lenet5)
    with pytest.raises(FormatError, match="model must be an object with a 'name'"):
        encode_model(lenet5, path, metadata={})
    encode_model(lenet5, path)  # no metadata: the class is recorded, never imported
    assert open_dcz(path).metadata["model"]["name"] == "deep_compression.models:LeNet5"
    with pytest.raises(ConfigError, match="is Python code.*--allow-code"):
        load_dcz(path)
    load_dcz(path, build_model("lenet-5"))


@pytest.mark.mnist
def test_accuracy_survives_the_file(mnist, tmp_path: Path) -> None:
    from deep_compression.train import TrainConfig, evaluate, fit, seed_everything

    torch.set_num_threads(1)
    train, test = mnist
    seed_everything(0)
    model = build_model("lenet-300-100")
    fit(model, train, test, TrainConfig(epochs=1, lr=0.05, seed=0))
    for name, keep in (("fc1", 0.08), ("fc2", 0.09), ("fc3", 0.26)):
        quantize_layer_(getattr(model, name), keep=keep, k=64)
    _, before = evaluate(model, test)
    path = tmp_path / "l.dcz"
    report = encode_model(model, path, metadata={"model": {"name": "lenet-300-100", "kwargs": {}}})
    decoded, _ = load_dcz(path)
    _, after = evaluate(decoded, test)
    assert after == before > 0.8
    assert report.rate > 30  # 8% kept, 6-bit indices, Huffman: the paper reports 40x
    json.dumps(open_dcz(path).metadata)
