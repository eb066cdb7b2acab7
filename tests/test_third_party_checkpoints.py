"""Checkpoints as others publish them load as they are: each test writes one the way its
writer does (old PyTorch, Lightning, DataParallel, Hugging Face shards, half precision,
torch.compile, a GPU) and checks the loaded model's outputs against the original's. Bad
shard indexes are one-line FormatErrors."""

from __future__ import annotations

import copy
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from deep_compression.checkpoint import read_meta, read_state
from deep_compression.checkpoint.sharded import MAX_INDEX_BYTES
from deep_compression.errors import FormatError
from deep_compression.loading import load_model
from deep_compression.models import make_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "models.py"
SPEC = f"{EXAMPLES}:resnet"
ARGS = {"depth": 8, "width": 4}
# The published checkpoints sit beside the repository: /work/main/tests -> /work/shared.
PUBLISHED = Path(__file__).resolve().parents[2] / "shared" / "models" / "cifar10-resnet"


@pytest.fixture
def model() -> nn.Module:
    """A ResNet-8 of width 4 in eval mode, BatchNorm statistics made non-trivial (so a
    BatchNorm tensor loaded wrongly changes the outputs)."""
    torch.manual_seed(0)
    net = make_model(SPEC, ARGS, allow_code=True)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)
    return net.eval()


def _load(path: Path) -> nn.Module:
    net, meta = load_model(path, model=SPEC, model_args=ARGS, allow_code=True)
    assert meta.stage == "dense" and not net.training
    return net


def _assert_same_outputs(want: nn.Module, got: nn.Module) -> None:
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(got(x), want(x), rtol=0, atol=0)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_old_pytorch_checkpoint_without_batchnorm_counters(model, tmp_path: Path) -> None:
    """Before PyTorch 0.4.1 BatchNorm had no num_batches_tracked: zero counters fill in."""
    old = {f"module.{k}": v for k, v in _state(model).items() if "num_batches" not in k}
    torch.save({"state_dict": old, "best_prec1": 91.2}, tmp_path / "old.th")
    loaded = _load(tmp_path / "old.th")
    _assert_same_outputs(model, loaded)
    counter = loaded.bn1.num_batches_tracked
    assert counter.dtype == torch.long and counter.item() == 0


def test_other_missing_keys_stay_an_error(model, tmp_path: Path) -> None:
    state = {k: v for k, v in _state(model).items() if "num_batches" not in k}
    del state["conv1.weight"], state["linear.bias"]
    torch.save(state, tmp_path / "part.pt")
    with pytest.raises(FormatError, match=r"missing conv1\.weight, linear\.bias$") as info:
        _load(tmp_path / "part.pt")
    assert "num_batches_tracked" not in str(info.value) and "\n" not in str(info.value)


def test_lightning_checkpoint(model, tmp_path: Path) -> None:
    """Lightning: the weights under "state_dict" with the module's attribute name as a
    prefix, the optimizer's tensors (momentum buffers, same shapes) beside them."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    optimizer.step()  # fills the momentum buffers: optimizer_states then holds tensors
    optimizer.zero_grad()
    ckpt = {
        "epoch": 3,
        "global_step": 10,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {f"model.{k}": v for k, v in _state(model).items()},
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hyper_parameters": {"lr": 0.1, "depth": 8},
    }
    torch.save(ckpt, tmp_path / "epoch=3-step=10.ckpt")
    state, meta = read_state(tmp_path / "epoch=3-step=10.ckpt")
    assert meta is None and set(state) == {f"model.{k}" for k in model.state_dict()}
    _assert_same_outputs(model, _load(tmp_path / "epoch=3-step=10.ckpt"))


def test_dataparallel_checkpoint(model, tmp_path: Path) -> None:
    torch.save(nn.DataParallel(model).state_dict(), tmp_path / "dp.pth")
    _assert_same_outputs(model, _load(tmp_path / "dp.pth"))


@pytest.mark.parametrize(
    "prefix", ["_orig_mod.", "module._orig_mod.", "net._orig_mod.", "module.model."]
)
def test_compiled_and_nested_wrappers(model, tmp_path: Path, prefix: str) -> None:
    """torch.compile(model).state_dict() names every key "_orig_mod.<key>" (the compiled
    module's attribute; written by hand here: importing torch._dynamo takes seconds)."""
    torch.save({prefix + k: v for k, v in _state(model).items()}, tmp_path / "c.pt")
    _assert_same_outputs(model, _load(tmp_path / "c.pt"))


def test_compiled_submodule(model, tmp_path: Path) -> None:
    """model.layer2 = torch.compile(model.layer2): "_orig_mod" in the middle of keys."""
    state = {k.replace("layer2.", "layer2._orig_mod."): v for k, v in _state(model).items()}
    torch.save(state, tmp_path / "c.pt")
    _assert_same_outputs(model, _load(tmp_path / "c.pt"))


class Wrapper(nn.Module):
    """A model whose own layers sit under "model." (as a user's wrapper class has them)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = make_model(SPEC, ARGS, allow_code=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def test_prefix_removed_only_when_it_fits_better(tmp_path: Path) -> None:
    """A model whose own keys start with "model." keeps them; a Lightning module around it
    ("model.model.") loses one level, not two; unrelated names are not renamed."""
    from deep_compression.checkpoint.fit import match_keys

    own = Wrapper().state_dict()
    same, removed = match_keys(own, own.keys())
    assert removed is None and list(same) == list(own)
    outer = {f"model.{k}": v for k, v in own.items()}
    fitted, removed = match_keys(outer, own.keys())
    assert removed == "model." and list(fitted) == list(own)
    torch.save({"model.head.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(FormatError, match=r"\): tensors do not fit the model: missing "
                       r".*; unexpected model\.head\.weight$"):  # fmt: skip
        _load(tmp_path / "other.pt")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_cast_and_said_once(
    model, tmp_path: Path, dtype: torch.dtype, capsys: pytest.CaptureFixture[str]
) -> None:
    half = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _state(model).items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    # The reference: the same model with its weights rounded to the file's precision.
    rounded = copy.deepcopy(model)
    rounded.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    capsys.readouterr()
    loaded = _load(tmp_path / "half.safetensors")
    _assert_same_outputs(rounded, loaded)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    counter = loaded.bn1.num_batches_tracked
    assert counter.dtype == torch.long and counter.item() == 7  # integers are not touched
    floats = sum(v.is_floating_point() for v in half.values())
    name = str(dtype).removeprefix("torch.")
    lines = [line for line in capsys.readouterr().err.splitlines() if "cast" in line]
    assert len(lines) == 1 and lines[0].endswith(f": cast {floats} {name} tensors to float32")


def _as_if_saved_on_gpu(path: Path) -> None:
    """Rewrite a torch.save file as one saved from CUDA tensors: the pickle names each
    storage's device ("cpu" -> "cuda:0"); the zip is otherwise unchanged."""
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(info.filename, data)
    path.write_bytes(out.getvalue())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_saved_checkpoint_loads_on_cpu(model, tmp_path: Path) -> None:
    path = tmp_path / "gpu.pt"
    torch.save({"state_dict": _state(model), "epoch": 1}, path)
    _as_if_saved_on_gpu(path)
    with pytest.raises(RuntimeError, match="CUDA"):  # the file does name a GPU
        torch.load(path, weights_only=True)
    _assert_same_outputs(model, _load(path))


def _write_shards(state: dict[str, torch.Tensor], folder: Path, kind: str) -> Path:
    """``state`` split in two shards plus an index, as Hugging Face's save_pretrained
    writes them (``kind``: "safetensors" or "bin"); returns the index's path."""
    keys = list(state)
    halves = (keys[: len(keys) // 2], keys[len(keys) // 2 :])
    stem = "model" if kind == "safetensors" else "pytorch_model"
    weight_map = {}
    for i, part in enumerate(halves, 1):
        name = f"{stem}-{i:05d}-of-00002.{kind}"
        tensors = {k: state[k].contiguous() for k in part}
        if kind == "safetensors":
            save_file(tensors, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(tensors, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = folder / f"{stem}.{kind}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_checkpoint(model, tmp_path: Path, kind: str) -> None:
    index = _write_shards(_state(model), tmp_path, kind)
    assert read_meta(index) is None
    _assert_same_outputs(model, _load(index))
    with pytest.raises(FormatError, match=f"is a directory.*: pass its {index.name}$"):
        _load(tmp_path)


def _index(folder: Path, weight_map: object) -> Path:
    path = folder / "model.safetensors.index.json"
    path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        ("../x.safetensors", "not a plain file name"),
        ("sub/x.safetensors", "not a plain file name"),
        ("..\\x.safetensors", "not a plain file name"),
        ("ABSOLUTE", "not a plain file name"),
        ("..", "not a plain file name"),
        (7, "not a plain file name"),
        ("x.json", "is not one of .bin, .ckpt"),
    ],
)
def test_index_may_not_name_files_elsewhere(tmp_path: Path, shard: object, message: str) -> None:
    (tmp_path / "sub" / "sub").mkdir(parents=True)
    # Real files where each name points: refused by the name, not for being absent.
    for real in (tmp_path / "x.safetensors", tmp_path / "sub" / "sub" / "x.safetensors"):
        save_file({"a": torch.zeros(1)}, str(real))
    shard = str(tmp_path / "x.safetensors") if shard == "ABSOLUTE" else shard
    with pytest.raises(FormatError, match=message) as info:
        read_state(_index(tmp_path / "sub", {"a": shard}))
    assert "\n" not in str(info.value)


def test_missing_shard_or_key(model, tmp_path: Path) -> None:
    state = _state(model)
    index = _write_shards(state, tmp_path, "safetensors")
    doc = json.loads(index.read_text())
    # A key the map names but its shard lacks.
    doc["weight_map"]["bogus.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"bogus\.weight not in model-00001-of-00002"):
        read_state(index)
    # A shard that is not there.
    doc["weight_map"]["bogus.weight"] = "model-00003-of-00003.safetensors"
    index.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"shard model-00003-of-00003\.safetensors .*missing"):
        read_state(index)
    # A key the model needs that no shard holds.
    del doc["weight_map"]["bogus.weight"], doc["weight_map"]["linear.weight"]
    index.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"tensors do not fit the model: missing linear\.weight$"):
        _load(index)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not a valid JSON shard index"),
        ('{"weight_map": {"a": "x.bin", "a": "y.bin"}}', "'a' is named twice"),
        ('{"metadata": {}}', 'no "weight_map"'),
        ('{"weight_map": {}}', 'no "weight_map"'),
        ('["x.bin"]', 'no "weight_map"'),
        (b"\xff\xfe{}", "not a valid JSON shard index"),
        # Names from the file are quoted: a newline in one cannot break the one-line error.
        (
            '{"weight_map": {"a\\nb": "gone.bin"}}',
            r"shard gone\.bin \(holding 'a\\nb'\) is missing",
        ),
    ],
)
def test_malformed_index(tmp_path: Path, text: str | bytes, message: str) -> None:
    path = tmp_path / "pytorch_model.bin.index.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(FormatError, match=message) as info:
        read_state(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_oversized_index(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors.index.json"
    with path.open("wb") as f:  # sparse: no 16 MiB written
        f.truncate(MAX_INDEX_BYTES + 1)
    with pytest.raises(FormatError, match="larger than 16,777,216 bytes"):
        read_state(path)


def test_no_weights_names_the_entries(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "net": {"lr": 0.1}, "optimizer": {}}, tmp_path / "x.pt")
    with pytest.raises(FormatError, match=r"no state dict of tensors \(entries: epoch, net, "):
        read_state(tmp_path / "x.pt")


# --------------------------------------------------------------------- a real published file


@pytest.fixture
def published() -> Path:
    path = PUBLISHED / "resnet32-d509ac18.th"
    if not path.is_file():
        pytest.skip(f"the published CIFAR-10 ResNets are not here ({PUBLISHED})")
    return path


def test_published_resnet32_matches_a_hand_load(published: Path) -> None:
    """The file as released (GPU-saved, module. prefix, no BatchNorm counters) against
    the hand patching a user would otherwise write."""
    loaded, _ = load_model(published, model=SPEC, model_args={"depth": 32}, allow_code=True)
    raw = torch.load(published, map_location="cpu", weights_only=True)["state_dict"]
    by_hand = make_model(SPEC, {"depth": 32}, allow_code=True)
    result = by_hand.load_state_dict({k.removeprefix("module."): v for k, v in raw.items()},
                                     strict=False)  # fmt: skip
    assert not result.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), by_hand.eval()(x), rtol=0, atol=0)


def test_evaluate_published_resnet32_through_the_cli(published: Path, tmp_path: Path,
                                                      run_cli) -> None:  # fmt: skip
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(10):
            (tmp_path / "data" / split / f"class{c}").mkdir(parents=True)
            px = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(px).save(tmp_path / "data" / split / f"class{c}" / "0.png")
    cwd = os.getcwd()
    os.chdir(EXAMPLES.parents[1])  # the spec as a user types it, relative to the checkout
    try:
        proc = run_cli("evaluate", str(published), "--model", "examples/models.py:resnet",
                       "--model-arg", "depth=32", "--dataset", str(tmp_path / "data"),
                       "--threads", "1")  # fmt: skip
    finally:
        os.chdir(cwd)
    assert proc.returncode == 0, proc.stderr
    assert "on data test: error" in proc.stdout and "10 images" in proc.stdout
