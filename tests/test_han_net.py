"""Han's .net layout: the reader against his decode.py's algorithm, validation, import CLI."""

from __future__ import annotations

import numpy as np
import pytest

from deep_compression.errors import FormatError
from deep_compression.han_net import bits_for, read_han_net, write_han_net

LAYERS = [("conv1", (4, 3, 3, 3), 4), ("fire2/conv1x1_1", (6, 4, 1, 1), 6), ("fc6", (10, 40), 10)]


def make_layers(seed: int, density: float = 0.3):
    rng = np.random.default_rng(seed)
    out = []
    for name, shape, bias in LAYERS:
        k = 2 ** bits_for(name)
        codes = rng.integers(1, k, size=shape) * (rng.random(shape) < density)
        codes.reshape(-1)[-1] = 1  # his layout cannot hold an empty layer
        codebook = np.concatenate([[0.0], rng.normal(size=k - 1)]).astype(np.float32)
        out.append((name, codes, codebook, rng.normal(size=bias).astype(np.float32)))
    return out


def his_decode(blob: bytes, layers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """songhan/SqueezeNet-Deep-Compression decode.py, step for step (Python 2 integer
    division written as //), on numpy arrays instead of a Caffe net."""
    pos = 0

    def fromfile(dtype, count):
        nonlocal pos
        a = np.frombuffer(blob, dtype=dtype, count=count, offset=pos)
        pos += a.nbytes
        return a

    nz_num = fromfile(np.uint32, len(layers))
    out = {}
    for idx, (layer, shape, bias_size) in enumerate(layers):
        bits = 8 if "conv" in layer else 4
        codebook = fromfile(np.float32, 2**bits)
        bias = fromfile(np.float32, bias_size)
        num_nz = int(nz_num[idx])
        spm_stream = fromfile(np.uint8, (num_nz - 1) // (8 // bits) + 1)
        ind_stream = fromfile(np.uint8, (num_nz - 1) // 2 + 1)
        code = np.zeros(int(np.prod(shape)), np.uint8)
        spm = np.zeros(num_nz, np.uint8)
        ind = np.zeros(num_nz, np.uint8)
        if bits == 4:
            spm[np.arange(0, num_nz, 2)] = spm_stream % (2**4)
            spm[np.arange(1, num_nz, 2)] = spm_stream[: num_nz // 2] // (2**4)
        else:
            spm = spm_stream
        ind[np.arange(0, num_nz, 2)] = ind_stream % (2**4)
        ind[np.arange(1, num_nz, 2)] = ind_stream[: num_nz // 2] // (2**4)
        ind = np.cumsum(ind + 1) - 1
        code[ind] = spm
        out[layer] = (np.reshape(codebook[code], shape), bias)
    assert pos == len(blob)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_reader_matches_his_decoder_bit_for_bit(seed: int) -> None:
    layers = make_layers(seed, density=[0.02, 0.3, 0.9][seed % 3])  # long gaps: fillers
    blob = write_han_net(layers)
    ours = read_han_net(blob, LAYERS)
    his = his_decode(blob, LAYERS)
    for name, _, _ in LAYERS:
        for a, b in zip(ours[name], his[name]):
            assert a.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    for name, codes, codebook, _ in layers:  # and what the writer meant
        assert np.array_equal(ours[name][0], codebook[codes])


def test_bad_files_are_rejected_before_allocating() -> None:
    blob = write_han_net(make_layers(0))
    for bad, message in [
        (blob[:-1], "need"),
        (blob + b"\0", "need"),
        (blob[:5], "cannot hold"),
        (b"\xff\xff\xff\x7f" + blob[4:], "outside"),  # a count far above the layer's size
        (b"\0\0\0\0" + blob[4:], "outside"),
    ]:
        with pytest.raises(FormatError, match=message):
            read_han_net(bad, LAYERS)
    # Relative indices that run past the layer: all 15s (advance 16 each).
    n = int(np.frombuffer(blob, "<u4", 1)[0])
    start = 12 + 4 * 256 + 4 * 4 + n
    bad = bytearray(blob)
    bad[start : start + (n + 1) // 2] = b"\xff" * ((n + 1) // 2)
    with pytest.raises(FormatError, match="run past"):
        read_han_net(bytes(bad), LAYERS)


def test_import_cli_squeezenet(tmp_path, run_cli, monkeypatch) -> None:
    from deep_compression.coding import context

    # ctx (pure Python, ~1 us per element) on small layers only, to keep this test fast.
    monkeypatch.setattr(context, "TRY_CTX_ELEMENTS", 1 << 12)
    cli = run_cli
    from deep_compression.caffe_models import caffe_layers
    from deep_compression.dcz import decode, open_dcz
    from deep_compression.models import build_model

    model = build_model("squeezenet-1.0")
    assert sum(p.numel() for p in model.parameters()) == 1_248_424
    specs = caffe_layers(model)
    assert [c for c, *_ in specs][:4] == [
        "conv1", "fire2/conv1x1_1", "fire2/conv1x1_2", "fire2/conv3x3_2"
    ] and specs[-1][0] == "conv_final"  # fmt: skip
    rng = np.random.default_rng(0)
    layers = []
    for caffe, _, shape, bias in specs:
        codes = rng.integers(1, 256, size=shape) * (rng.random(shape) < 0.05)
        codebook = np.concatenate([[0.0], np.linspace(-1, 1, 255)]).astype(np.float32)
        layers.append((caffe, codes, codebook, rng.normal(size=bias).astype(np.float32)))
    src = tmp_path / "sq.net"
    src.write_bytes(write_han_net(layers))
    out = tmp_path / "sq.dcz"
    argv = ["import", str(src), "--format", "han-net", "--model", "squeezenet-1.0", "-o", str(out)]
    assert cli(*argv).returncode == 0
    arrays, meta = decode(out)
    assert meta["details"]["source"]["format"] == "han-net" and open_dcz(out).version == 2
    for caffe, path, _, _ in specs:
        w = next(codebook[codes] for c, codes, codebook, _ in layers if c == caffe)
        assert np.array_equal(arrays[f"{path}.weight"], w)
    assert out.stat().st_size < src.stat().st_size
    result = cli(*argv)
    assert result.returncode != 0 and "--force" in result.stderr  # no silent overwrite
    assert cli(*argv, "--force").returncode == 0


def test_alexnet_shapes() -> None:
    import torch

    from deep_compression.caffe_models import caffe_layers
    from deep_compression.models import build_model

    model = build_model("alexnet")
    assert sum(p.numel() for p in model.parameters()) == 60_965_224
    assert [c for c, *_ in caffe_layers(model)] == [
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"
    ]  # fmt: skip
    assert model.eval()(torch.zeros(1, 3, 227, 227)).shape == (1, 1000)
    sq = build_model("squeezenet-1.0").eval()
    assert sq(torch.zeros(1, 3, 227, 227)).shape == (1, 1000)
