"""The default coding of every command that writes a .dcz: the smallest one (coder "best",
gap widths "auto"); the paper's Huffman coding stays a named choice, bit for bit."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from deep_compression.coding.gaps import best_gap_bits
from deep_compression.dcz import QuantizedTensor, SparseTensor, decode, open_dcz
from deep_compression.encode import EncodeConfig, model_tensors
from deep_compression.errors import ConfigError
from deep_compression.models import build_model
from deep_compression.quantize import QuantizedWeight
from deep_compression.recipe import load_any_recipe

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def test_config_defaults_to_the_smallest_coding() -> None:
    assert EncodeConfig() == EncodeConfig("best", "auto") == EncodeConfig("best", {"*": "auto"})
    assert EncodeConfig().to_dict()["gap_bits"] == {"*": "auto"}
    # A named coder keeps the paper's widths (an empty table), so the paper recipes' tables
    # (and their digests, stored in the shipped files) are what they always were.
    assert dict(EncodeConfig("huffman").gap_bits) == {}
    assert dict(EncodeConfig("best", {"fc1": 4}).gap_bits) == {"*": "auto", "fc1": 4}
    assert dict(EncodeConfig("best", 5).gap_bits) == {"*": 5}  # an explicit width wins
    with pytest.raises(ConfigError, match="encode.coder"):
        EncodeConfig("zip")


@pytest.fixture(scope="module")
def quantized() -> torch.nn.Module:
    """LeNet-300-100 with random masks (fc1 8%, fc2 9%, fc3 26% kept) and 5-bit indices."""
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    for name, keep in (("fc1", 0.08), ("fc2", 0.09), ("fc3", 0.26)):
        layer = getattr(model, name)
        mask = torch.rand(layer.weight.shape) < keep
        idx = torch.randint(0, 32, layer.weight.shape, dtype=torch.int32) * mask
        qw = QuantizedWeight(torch.linspace(-1, 1, 32), idx, mask)
        parametrize.register_parametrization(layer, "weight", qw, unsafe=True)
    return model


def _widths(records) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {r.name: r.gap_bits for r in records if isinstance(r, QuantizedTensor | SparseTensor)}


def test_default_widths_are_chosen_per_layer(quantized) -> None:  # type: ignore[no-untyped-def]
    records = model_tensors(quantized)  # default coder "best", widths "auto"
    want = {
        r.name: best_gap_bits(r.positions, "best")
        for r in records
        if isinstance(r, QuantizedTensor)
    }
    assert _widths(records) == want and len(want) == 3
    assert _widths(model_tensors(quantized, dict(EncodeConfig().gap_bits), "best")) == want
    paper = {"fc1.weight": 5, "fc2.weight": 5, "fc3.weight": 5}
    for coder in ("huffman", "ans", "fixed"):  # a named coder: the paper's widths
        assert _widths(model_tensors(quantized, None, coder)) == paper
    # ctx sizes its fallback gap stream with the order-0 coders (it used to raise KeyError)
    assert _widths(model_tensors(quantized, "auto", "ctx")) == want


def _plain(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights as a plain model (what ``decode`` writes and ``encode`` reads)."""
    from deep_compression.encode import plain_state_dict

    plain = build_model("lenet-300-100")
    plain.load_state_dict(plain_state_dict(model))
    return plain


def test_plain_weights_take_the_gap_widths_too(quantized) -> None:  # type: ignore[no-untyped-def]
    plain = _plain(quantized)
    records = model_tensors(plain, None, "huffman")
    assert set(_widths(records)) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    # Nothing set: the width whose gap stream under the coder is smallest.
    by_name = {r.name: r for r in records}
    for name, bits in _widths(records).items():
        assert bits == best_gap_bits(by_name[name].positions, "huffman"), name
    assert set(_widths(model_tensors(plain, {"*": 4, "fc3": 7}, "huffman")).values()) == {4, 7}
    assert _widths(model_tensors(plain, {"fc3": 7}, "huffman"))["fc3.weight"] == 7
    with pytest.raises(ConfigError, match="'fc9' matches no layer"):
        model_tensors(plain, {"fc9": 3}, "huffman")


@pytest.fixture(scope="module")
def lenet_plain(tmp_path_factory) -> Path:
    """The shipped LeNet-300-100's exact arrays as a plain state dict (``decode``'s output)."""
    from deep_compression.cli import main

    out = tmp_path_factory.mktemp("plain") / "lenet-300-100.safetensors"
    assert main(["decode", str(DATA / "lenet-300-100.v1.dcz"), "-o", str(out)]) == 0
    return out


def test_encode_without_flags_is_best_auto(lenet_plain: Path, tmp_path: Path, run_cli) -> None:
    files = {}
    for name, flags in (
        ("default", ()),
        ("best-auto", ("--coder", "best", "--gap-bits", "auto")),
        ("huffman", ("--coder", "huffman")),
    ):
        files[name] = tmp_path / f"{name}.dcz"
        argv = ["encode", str(lenet_plain), "-o", str(files[name]), "--skip-eval", *flags]
        assert run_cli(*argv).returncode == 0
    blobs = {name: path.read_bytes() for name, path in files.items()}
    assert blobs["default"] == blobs["best-auto"]
    assert len(blobs["default"]) < len(blobs["huffman"])
    want, _ = decode(DATA / "lenet-300-100.v1.dcz")
    for name, path in files.items():
        got, _ = decode(path)
        assert got.keys() == want.keys()
        for key, a in want.items():  # bit for bit, every array
            assert np.array_equal(got[key].view(np.uint32), a.view(np.uint32)), (name, key)
    coders = {s.coder for t in open_dcz(files["huffman"]).stats() for s in t.streams.values()}
    assert coders <= {"huffman", "raw"}, coders


# The shipped models and the recipes that wrote them: the recipe's digest is in the file's
# metadata, so a change of the defaults that changed a shipped recipe would show here.
SHIPPED = {
    "lenet-300-100": "lenet-300-100.toml",
    "lenet-5": "lenet-5.toml",
    "lenet-300-100-record": "records/lenet-300-100-record.toml",
    "lenet-5-record": "records/lenet-5-record.toml",
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_recipes_keep_their_digests(name: str) -> None:
    meta = open_dcz(ROOT / "models" / f"{name}.dcz").metadata
    recipe = load_any_recipe(ROOT / "recipes" / SHIPPED[name])
    assert meta["details"]["recipe_digest"] == recipe.digest()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_files_are_rewritten_byte_for_byte(name: str, tmp_path: Path) -> None:
    """The pipeline's last step (encode_model with the recipe's [encode] table, on the
    quantized model) gives the shipped file again: rebuilt here from the file's own
    records, so a change of the coding defaults that touched it fails here."""
    from deep_compression.encode import encode_model
    from deep_compression.loading import load_dcz

    path = ROOT / "models" / f"{name}.dcz"
    f = open_dcz(path)
    model, _ = load_dcz(path)
    modules = dict(model.named_modules())
    for r in f.records():
        if not isinstance(r, QuantizedTensor):
            continue
        mask = np.zeros(int(np.prod(r.shape)), bool)
        mask[r.positions] = True
        idx = np.zeros(mask.size, np.int32)
        idx[r.positions] = r.indices
        qw = QuantizedWeight(torch.from_numpy(np.asarray(r.codebook, np.float32).copy()),
                             torch.from_numpy(idx.reshape(r.shape)),
                             torch.from_numpy(mask.reshape(r.shape)))  # fmt: skip
        module_name, _, tensor = r.name.rpartition(".")
        parametrize.register_parametrization(modules[module_name], tensor, qw, unsafe=True)
    config = load_any_recipe(ROOT / "recipes" / SHIPPED[name]).encode
    encode_model(model, tmp_path / "again.dcz", config, metadata=f.metadata)
    assert (tmp_path / "again.dcz").read_bytes() == path.read_bytes()


def test_shipped_recipes_state_their_coder() -> None:
    """Every shipped recipe that writes a .dcz names its coder: none depends on the
    default, so changing it changes no shipped file (the paper's say "huffman")."""
    recipes = sorted((ROOT / "recipes").rglob("*.toml"))
    writers = 0
    for path in recipes:
        table = tomllib.loads(path.read_text())
        if "quantize" not in table and "no_retrain" not in table:
            continue  # a [prune]-only recipe writes no .dcz
        writers += 1
        assert "coder" in table.get("encode", {}), path
        if path.stem.endswith("-paper"):
            assert table["encode"] == {"coder": "huffman"}, path
    assert writers >= 10
