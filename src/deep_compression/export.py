"""Export a decoded model to other runtimes: ONNX (checked in onnxruntime) or a plain
safetensors state dict, BatchNorm optionally folded into the preceding layers."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deep_compression.batchnorm import fold_batchnorm_
from deep_compression.checkpoint import save_state
from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write
from deep_compression.records import CheckpointMeta

__all__ = ["FORMATS", "ExportReport", "export_model", "onnx_bytes"]

FORMATS = ("onnx", "safetensors")
_OPSET = 17


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote; ``max_abs_diff`` compares the exported model's
    outputs (run by onnxruntime for ONNX) with PyTorch's on a random batch, when checked."""

    path: Path
    bytes: int
    folded: tuple[str, ...]
    max_abs_diff: float | None


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """``model`` as an ONNX file (opset 17) in memory, traced on ``example`` ``(1, ...)``;
    input ``input`` and output ``logits``, both with a dynamic batch axis."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter needs only the onnx package (the newer one also needs
        # onnxscript); its deprecation notice is not the user's concern.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=_OPSET,
        )
    return buffer.getvalue()


def _onnx_diff(blob: bytes, model: nn.Module, x: torch.Tensor) -> float | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    return float(np.abs(got - want).max())


def export_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    fmt: str,
    meta: CheckpointMeta,
    *,
    fold_bn: bool = False,
    check: bool = True,
) -> ExportReport:
    """Write the plain ``model`` (a decoded file) as ``fmt`` to ``path``, atomically.

    Args:
        model: a plain model (no parametrizations), changed in place when ``fold_bn``.
        path: the output file.
        fmt: ``"onnx"`` (opset 17, dynamic batch; needs the ``onnx`` package) or
            ``"safetensors"`` (the state dict with ``meta``, as ``decode`` writes it).
        meta: the model's metadata; its ``preprocessing.input_shape`` gives the ONNX
            input shape.
        fold_bn: fold BatchNorm into the preceding convolution or linear layer first.
        check: for ONNX, run the file in onnxruntime (if installed) and compare.

    Raises:
        ConfigError: unknown format, no input shape for ONNX, or a missing package.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model.eval()
    folded = tuple(fold_batchnorm_(model)) if fold_bn else ()
    path = Path(path)
    if fmt == "safetensors":
        details = {**meta.details, "bn_folded": list(folded)} if folded else meta.details
        save_state(path, model.state_dict(), replace(meta, details=details))
        return ExportReport(path, path.stat().st_size, folded, None)
    shape = (meta.preprocessing or {}).get("input_shape")
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigError("the file does not record its input shape; ONNX export needs it")
    try:
        import onnx  # noqa: F401  (torch's exporter imports it; fail with our message)
    except ImportError:
        raise ConfigError(
            "ONNX export needs the onnx package: pip install onnx onnxruntime"
        ) from None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, *shape, generator=gen)
    blob = onnx_bytes(model, x[:1])
    atomic_write(path, blob)
    diff = _onnx_diff(blob, model, x) if check else None
    return ExportReport(path, len(blob), folded, diff)
