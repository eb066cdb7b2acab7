"""``deep-compression encode / decode / info`` (and ``evaluate`` on a .dcz)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kmeans1d
import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from deep_compression.checkpoint import save_checkpoint
from deep_compression.cli import main
from deep_compression.data import get_spec
from deep_compression.loading import load_model
from deep_compression.models import build_model
from deep_compression.quantize import QuantizedWeight


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A LeNet-300-100 checkpoint with pruned, 6-bit quantized layers (untrained weights)."""
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    for name, keep in (("fc1", 0.08), ("fc2", 0.09), ("fc3", 0.26)):
        layer = getattr(model, name)
        w = layer.weight.detach()
        mask = w.abs() > w.abs().flatten().kthvalue(int(w.numel() * (1 - keep))).values
        labels, centroids = kmeans1d.cluster(w[mask].double().numpy(), 64)
        idx = torch.zeros(w.shape, dtype=torch.int32)
        idx[mask] = torch.tensor(labels, dtype=torch.int32)
        qw = QuantizedWeight(torch.tensor(centroids, dtype=torch.float32), idx, mask)
        parametrize.register_parametrization(layer, "weight", qw, unsafe=True)
    path = tmp_path_factory.mktemp("ckpt") / "q.safetensors"
    meta = {
        "stage": "quantized",
        "model": {"name": "lenet-300-100", "kwargs": {}},
        "dataset": "mnist",
        "preprocessing": get_spec("mnist").preprocessing,
        "test_accuracy": 0.5,
        "test_error": 0.5,
    }
    save_checkpoint(path, model, meta)
    return path


def test_encode_info_decode(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.dcz"
    assert main(["encode", str(checkpoint), "-o", str(out), "--skip-eval"]) == 0
    text = capsys.readouterr().out
    assert "bit-identical" in text and "| fc1.weight |" in text and "P+Q+H" in text

    assert main(["info", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["file_bytes"] == out.stat().st_size
    assert summary["metadata"]["details"]["test_error_from"] == "checkpoint"
    assert [r["name"] for r in summary["layers"]] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    stages = summary["stages"]
    assert stages["P"]["bytes"] > stages["P+Q"]["bytes"] > stages["P+Q+H"]["bytes"]
    assert stages["P+Q+H"]["bytes"] == summary["file_bytes"]  # this file is the Huffman one

    assert main(["info", str(out)]) == 0
    assert "over entropy" in capsys.readouterr().out

    plain = tmp_path / "m.safetensors"
    assert main(["decode", str(out), "-o", str(plain)]) == 0
    model, meta = load_model(plain)
    original, _ = load_model(checkpoint)
    assert meta.stage == "decoded" and meta.details["decoded_from"] == "m.dcz"
    for name in ("fc1", "fc2", "fc3"):
        assert np.array_equal(
            getattr(model, name).weight.detach().numpy(),
            getattr(original, name).weight.detach().numpy(),
        )


def test_coder_and_gap_bits_options(checkpoint: Path, tmp_path: Path, capsys) -> None:
    sizes = {}
    for coder in ("fixed", "huffman", "ans"):
        out = tmp_path / f"{coder}.dcz"
        args = ["encode", str(checkpoint), "-o", str(out), "--skip-eval", "--coder", coder]
        assert main([*args, "--gap-bits", "*=4", "--gap-bits", "fc3=6"]) == 0
        sizes[coder] = out.stat().st_size
    capsys.readouterr()
    # (On these untrained, nearly uniform weights ANS's count tables can cost more than
    # its coding gain; the entropy-coded files are still well below the fixed-width one.)
    assert sizes["fixed"] > max(sizes["huffman"], sizes["ans"])
    from deep_compression.dcz import open_dcz

    bits = {t.name: t.gap_bits for t in open_dcz(tmp_path / "ans.dcz").tensors if t.gap_bits}
    assert bits == {"fc1.weight": 4, "fc2.weight": 4, "fc3.weight": 6}


def test_bad_files_give_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(b"\x89DCZ\x01\x00\x00\x00garbage")
    for args, message in (
        (["info", str(bad)], "truncated"),
        (["decode", str(bad), "-o", str(tmp_path / "x.safetensors")], "truncated"),
        (["encode", str(checkpoint), "-o", str(tmp_path / "x.zip")], "expected a .dcz file"),
    ):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit):
        main(["encode", str(checkpoint), "-o", "x.dcz", "--gap-bits", "fc1=0"])
    assert "[1, 16]" in capsys.readouterr().err
    # End to end through the console entry point: one line, no traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "deep_compression", "evaluate", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "truncated" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.mnist
def test_encode_measures_accuracy_and_evaluate_reads_dcz(
    mnist, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "m.dcz"
    assert main(["encode", str(checkpoint), "-o", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "from the decoded file, equal to" in text
    assert main(["evaluate", str(out)]) == 0
    line = capsys.readouterr().out
    from deep_compression.dcz import open_dcz

    stored = open_dcz(out).metadata["test_error"]
    assert f"error {100 * stored:.2f}%" in line
