"""``load_dcz(..., sparse=True)``: pruned fully connected layers decoded straight into CSR.

The reference is the same file loaded dense: the CSR weights must be its weights exactly,
and the outputs equal to float tolerance (a sparse product sums in another order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deep_compression.checkpoint import save_checkpoint
from deep_compression.cli import main
from deep_compression.dcz import open_dcz
from deep_compression.encode import encode_model
from deep_compression.errors import FormatError
from deep_compression.loading import load_any, load_dcz
from deep_compression.models import build_model
from deep_compression.prune import KeepFraction, prune_
from deep_compression.quantize import QuantizeConfig, quantize_
from deep_compression.sparse import SparseLinear, sparse_layers


def _lenet5(path: Path) -> Path:
    """LeNet-5 pruned to the paper's kept fractions, conv 8 / fc 5 bits: all quantized."""
    torch.manual_seed(0)
    model = build_model("lenet-5")
    keep = {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}
    prune_(model, {k: KeepFraction(v) for k, v in keep.items()})
    quantize_(model, QuantizeConfig(bits={"*": 5, "conv*": 8}))
    encode_model(model, path, metadata={"model": {"name": "lenet-5", "kwargs": {}}})
    return path


def _lenet300(path: Path) -> Path:
    """LeNet-300-100 pruned only (``sparse`` encoding); fc3 keeps 60%, too dense to swap."""
    torch.manual_seed(1)
    model = build_model("lenet-300-100")
    prune_(model, {"fc1": KeepFraction(0.08), "fc2": KeepFraction(0.09), "fc3": KeepFraction(0.6)})
    encode_model(model, path, metadata={"model": {"name": "lenet-300-100", "kwargs": {}}})
    return path


# file builder, layers expected as SparseLinear, layers expected to stay as they are
CASES = {
    "lenet-5": (_lenet5, ["fc1", "fc2"], {"conv1": nn.Conv2d, "conv2": nn.Conv2d}),
    "lenet-300-100": (_lenet300, ["fc1", "fc2"], {"fc3": nn.Linear}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory) -> tuple[Path, list[str], dict[str, type]]:
    build, sparse, kept_as_is = CASES[request.param]
    return build(tmp_path_factory.mktemp("sparse") / "m.dcz"), sparse, kept_as_is


def test_the_right_layers_become_sparse_with_the_file_weights(case) -> None:
    path, expected_sparse, kept_as_is = case
    dense, _ = load_dcz(path)
    model, meta = load_dcz(path, sparse=True)
    assert not model.training and meta.model.name in CASES
    assert list(sparse_layers(model)) == expected_sparse
    for name, cls in kept_as_is.items():
        assert type(model.get_submodule(name)) is cls, name
    kept = {t.name: t.kept for t in open_dcz(path).tensors}
    for name in expected_sparse:
        layer, ref = model.get_submodule(name), dense.get_submodule(name)
        assert isinstance(layer, SparseLinear)
        assert layer.nnz == kept[f"{name}.weight"] == int(torch.count_nonzero(ref.weight))
        assert layer.col_indices.dtype == torch.int32  # MKL's index type (see sparse.py)
        assert torch.equal(layer.to_dense(), ref.weight.detach())
        assert torch.equal(layer.bias, ref.bias.detach())
    # Everything that was not swapped loads exactly as without sparse=True.
    sparse_keys = {f"{n}.{t}" for n in expected_sparse for t in ("weight", "bias")}
    for key, value in dense.state_dict().items():
        if key not in sparse_keys:
            assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("batch", [1, 64])
def test_outputs_equal_the_dense_decoded_model(case, batch: int) -> None:
    path, _, _ = case
    dense, meta = load_dcz(path)
    model, _ = load_dcz(path, sparse=True)
    shape = (batch, 1, 28, 28)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(batch))
    with torch.inference_mode():
        want, got = dense(x), model(x)
    assert got.shape == want.shape == (batch, 10)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(want, torch.zeros_like(want))


def test_into_a_user_model_and_through_load_any(case) -> None:
    path, expected_sparse, _ = case
    name = open_dcz(path).metadata["model"]["name"]
    mine, _ = load_dcz(path, build_model(name), sparse=True)
    also, _ = load_any(path, sparse=True)
    plain, _ = load_any(path)
    assert list(sparse_layers(mine)) == list(sparse_layers(also)) == expected_sparse
    assert sparse_layers(plain) == {}


def test_a_model_the_file_does_not_fit_is_a_format_error(tmp_path: Path) -> None:
    path = _lenet5(tmp_path / "m.dcz")
    with pytest.raises(FormatError, match="do not fit"):
        load_dcz(path, build_model("lenet-300-100"), sparse=True)
    narrow = build_model("lenet-5")
    narrow.fc1 = nn.Linear(800, 400)  # the swapped layer itself has the wrong shape
    with pytest.raises(FormatError, match=r"fc1.weight has shape \(500, 800\)"):
        load_dcz(path, narrow, sparse=True)
    extra = build_model("lenet-5")
    extra.fc9 = nn.Linear(10, 10)  # a key the file does not hold
    with pytest.raises(FormatError, match=r"missing fc9.bias, fc9.weight$"):
        load_dcz(path, extra, sparse=True)


@pytest.mark.mnist
def test_evaluation_is_the_same_sparse_or_dense(mnist_small, mnist, tmp_path: Path, capsys) -> None:
    from deep_compression.data import get_spec
    from deep_compression.train import TrainConfig, evaluate, fit, seed_everything

    torch.set_num_threads(1)
    train, _ = mnist_small
    _, test = mnist
    seed_everything(0)
    model = build_model("lenet-300-100")
    fit(model, train, None, TrainConfig(epochs=1, lr=0.05, seed=0), progress=False)
    prune_(model, {"fc1": KeepFraction(0.08), "fc2": KeepFraction(0.09), "fc3": KeepFraction(0.26)})
    ckpt = tmp_path / "p.safetensors"
    meta = {
        "model": {"name": "lenet-300-100", "kwargs": {}},
        "dataset": "mnist",
        "preprocessing": get_spec("mnist").preprocessing,
    }
    save_checkpoint(ckpt, model, meta)
    quantize_(model, QuantizeConfig(bits={"*": 6}))
    path = tmp_path / "q.dcz"
    encode_model(model, path, metadata=meta)

    dense, _ = load_dcz(path)
    sparse, _ = load_dcz(path, sparse=True)
    assert list(sparse_layers(sparse)) == ["fc1", "fc2", "fc3"]
    loss_d, acc_d = evaluate(dense, test)
    loss_s, acc_s = evaluate(sparse, test)
    assert acc_s == acc_d > 0.5
    assert loss_s == pytest.approx(loss_d, rel=1e-5)

    def cli(*args: str) -> str:
        assert main(["evaluate", *args, "--threads", "1"]) == 0
        return capsys.readouterr().out

    plain, csr = cli(str(path)), cli(str(path), "--sparse")
    assert "sparse (CSR) layers: fc1 (8.0% kept), fc2 (9.0% kept), fc3 (26.0% kept)" in csr
    assert f"error {100 * (1 - acc_d):.2f}%" in plain
    assert plain.splitlines()[-1] == csr.splitlines()[-1]  # the same error line
    # A checkpoint with pruning masks goes through sparsify_.
    assert "fc1 (8.0% kept)" in cli(str(ckpt), "--sparse")
    assert np.isfinite(loss_s)
