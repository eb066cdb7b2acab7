"""The package's face: ``import deep_compression as dc`` resolves every advertised name,
lazily (the package import and the ``.dcz`` reader never import torch), and a quickstart
through ``dc.`` names alone compresses a model to a file that decodes to its weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deep_compression as dc

SRC = Path(dc.__file__).parent
ERRORS = {"ConfigError", "DataError", "DeepCompressionError", "DistributedError", "FormatError"}
NUMPY_ONLY = {"__version__", "read", "open_dcz", *ERRORS}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))


def test_every_advertised_name_resolves() -> None:
    assert len(dc.__all__) == len(set(dc.__all__))
    assert set(dc.__all__) == set(dc._LAZY) | ERRORS | {"__version__"}
    for name in dc.__all__:
        assert getattr(dc, name) is not None, name
        assert name in dir(dc), name
    assert dc.write.__name__ == "encode_model" and dc.read.__name__ == "decode"
    assert issubclass(dc.FormatError, dc.DeepCompressionError)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        dc.no_such_name  # noqa: B018


def test_no_name_is_also_a_submodule() -> None:
    """Importing ``deep_compression.X`` sets the attribute ``X`` on the package: a face
    name equal to a submodule's would be replaced by that module."""
    submodules = {p.stem for p in SRC.glob("*.py")} | {
        p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()
    }
    assert not set(dc.__all__) & submodules, set(dc.__all__) & submodules


def test_the_package_import_is_lazy() -> None:
    """Nothing but the errors is imported with the package; torch only when a torch-side
    name is used."""
    proc = _run(
        "import sys\n"
        "import deep_compression as dc\n"
        "assert 'torch' not in sys.modules, 'package import'\n"
        "assert 'deep_compression.dcz' not in sys.modules, 'dcz imported eagerly'\n"
        "dc.prune_\n"
        "assert 'torch' in sys.modules, 'prune_ without torch?'\n"
        "print('ok')\n"
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_numpy_side_names_read_a_file_without_torch(tmp_path: Path) -> None:
    """With torch made unimportable, ``dc.read`` and ``dc.open_dcz`` decode a file that
    ``dc.write`` wrote, to the very arrays it holds."""
    model = _tiny()
    dc.prune_(model, dc.KeepFraction(0.5))
    dc.quantize_(model, dc.QuantizeConfig(bits={"*": 3}))
    path = tmp_path / "m.dcz"
    dc.write(model, path, dc.EncodeConfig(coder="huffman"))
    np.save(tmp_path / "w0.npy", model[0].weight.detach().numpy())
    proc = _run(
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now fails\n"
        "import numpy as np\n"
        "import deep_compression as dc\n"
        f"arrays, meta = dc.read({str(path)!r})\n"
        f"w0 = np.load({str(tmp_path / 'w0.npy')!r}, allow_pickle=False)\n"
        "assert arrays['0.weight'].shape == (16, 20) and arrays['2.weight'].shape == (4, 16)\n"
        "assert np.array_equal(arrays['0.weight'], w0)\n"
        f"f = dc.open_dcz({str(path)!r})\n"
        "kinds = {t.name: type(t).__name__ for t in f.records()}\n"
        "assert kinds['0.weight'] == 'QuantizedTensor' and kinds['0.bias'] == 'DenseTensor'\n"
        "try:\n"
        "    dc.read(b'not a dcz file at all')\n"
        "except dc.FormatError as e:\n"
        "    print('format error:', e)\n"
        "assert not [n for n, m in sys.modules.items() if n.startswith('torch') and m]\n"
        "print('ok')\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "ok", proc.stdout
    assert "format error: <bytes>: not a .dcz file" in proc.stdout


def test_quickstart_through_the_face(tmp_path: Path) -> None:
    """Prune, quantize, write, read back: the file holds the quantized model's weights
    exactly, and the model decoded from it computes what the quantized model does."""
    model = _tiny()
    x = torch.randn(8, 20)
    report = dc.prune_(model, {"*": dc.StdThreshold(0.5), "2": dc.KeepFraction(0.5)})
    dc.quantize_(model, dc.QuantizeConfig(bits={"*": 4, "2": 2}))
    written = dc.write(model, tmp_path / "model.dcz", dc.EncodeConfig(coder="best"))
    arrays, meta = dc.read(tmp_path / "model.dcz")
    decoded, _ = dc.load_model(tmp_path / "model.dcz", _tiny())

    assert 0 < report.kept_fraction < 1
    assert written.file_bytes == (tmp_path / "model.dcz").stat().st_size
    for i in (0, 2):
        w = model[i].weight.detach().numpy()
        assert np.array_equal(arrays[f"{i}.weight"], w)
        assert np.array_equal(arrays[f"{i}.bias"], model[i].bias.detach().numpy())
        assert len(np.unique(w[w != 0])) <= (16 if i == 0 else 4)  # 4 and 2 bits
    assert np.array_equal(arrays["2.weight"] != 0, model[2].parametrizations.weight[0].mask)
    assert (arrays["2.weight"] == 0).mean() >= 0.5  # KeepFraction(0.5), and zeros of k-means
    assert torch.equal(decoded(x), model.eval()(x))
    assert dc.sparsity_report(model).kept_fraction == pytest.approx(report.kept_fraction)
