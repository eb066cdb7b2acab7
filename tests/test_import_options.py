"""``deep-compression import`` takes ``encode``'s coding options, with the same default
(the smallest coding: ``--coder best``, gap widths ``auto``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deep_compression.caffe_models import caffe_layers
from deep_compression.dcz import decode, open_dcz
from deep_compression.han_net import write_han_net
from deep_compression.models import build_model


@pytest.fixture(scope="module")
def han_file(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A synthetic SqueezeNet v1.0 in Han's .net layout (5% kept, 8-bit codes) and the
    weights it holds, by state-dict name."""
    rng = np.random.default_rng(0)
    codebook = np.concatenate([[0.0], np.linspace(-1, 1, 255)]).astype(np.float32)
    layers, weights = [], {}
    for caffe, path, shape, bias in caffe_layers(build_model("squeezenet-1.0")):
        codes = rng.integers(1, 256, size=shape) * (rng.random(shape) < 0.05)
        layers.append((caffe, codes, codebook, rng.normal(size=bias).astype(np.float32)))
        weights[f"{path}.weight"] = codebook[codes]
    src = tmp_path_factory.mktemp("han") / "sq.net"
    src.write_bytes(write_han_net(layers))
    return src, weights


def test_import_coding_options(han_file, tmp_path: Path, run_cli, monkeypatch) -> None:
    from deep_compression.coding import context

    # ctx (pure Python, ~1 us per element) on small layers only, to keep this test fast.
    monkeypatch.setattr(context, "TRY_CTX_ELEMENTS", 1 << 12)
    src, weights = han_file
    files = {}
    for name, flags in (
        ("default", ()),
        ("best-auto", ("--coder", "best", "--gap-bits", "auto")),
        ("huffman", ("--coder", "huffman")),
        ("huffman-4", ("--coder", "huffman", "--gap-bits", "4", "--chunk", "4096")),
    ):
        files[name] = tmp_path / f"{name}.dcz"
        argv = ["import", str(src), "--format", "han-net", "--model", "squeezenet-1.0"]
        assert run_cli(*argv, "-o", str(files[name]), *flags).returncode == 0, name
    assert files["default"].read_bytes() == files["best-auto"].read_bytes()
    assert files["default"].stat().st_size < files["huffman"].stat().st_size
    for name, path in files.items():
        arrays, _ = decode(path)
        for key, w in weights.items():
            assert np.array_equal(arrays[key], w), (name, key)
    stats = {name: open_dcz(path).stats() for name, path in files.items()}
    huffman = {s.coder for t in stats["huffman"] for s in t.streams.values()}
    assert huffman == {"huffman"}, huffman
    assert {s.coder for t in stats["default"] for s in t.streams.values()} != {"huffman"}
    assert {t.gap_bits for t in stats["huffman-4"] if t.kept < t.numel} == {4}
    assert open_dcz(files["huffman-4"]).chunk == 4096


def test_import_rejects_bad_coding_options(han_file, tmp_path: Path, run_cli) -> None:
    src, _ = han_file
    argv = ["import", str(src), "--format", "han-net", "--model", "squeezenet-1.0"]
    out = str(tmp_path / "x.dcz")
    bad = run_cli(*argv, "-o", out, "--coder", "zip")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    typo = run_cli(*argv, "-o", out, "--gap-bits", "fire99*=4")
    assert typo.returncode == 1 and "matches no layer" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 1 and not Path(out).exists()
