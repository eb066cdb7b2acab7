"""The encoding phase: the ``.dcz`` file, checked from the bytes written, decoded once."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from deep_compression import distributed as dist
from deep_compression.dcz import DczFile, open_dcz
from deep_compression.encode import EncodeConfig, EncodeReport, encode_to_bytes
from deep_compression.errors import DeepCompressionError
from deep_compression.loading import load_dcz
from deep_compression.phases.context import Log, pct
from deep_compression.progress import log as default_log
from deep_compression.prune import strip_pruning_
from deep_compression.quantize import strip_quantization_
from deep_compression.records import CheckpointMeta

__all__ = ["EncodeOutcome", "encode_phase", "plain_copy"]


@dataclass(frozen=True)
class EncodeOutcome:
    """What :func:`encode_phase` wrote, and the errors of the model decoded from it.

    Attributes:
        report: sizes and per-tensor statistics.
        file: the file as written, opened from its bytes: its records, stages and
            summary need no second read.
        errors: what ``measure`` found on the decoded model (empty without one).
        seconds: wall time (encoding, checking, decoding, measuring).
    """

    report: EncodeReport
    file: DczFile
    errors: Mapping[str, float]
    seconds: float

    @property
    def test_error(self) -> float | None:
        return self.errors.get("test_error")

    @property
    def val_error(self) -> float | None:
        return self.errors.get("val_error")


def encode_phase(
    model: nn.Module,
    path: str | os.PathLike[str],
    config: EncodeConfig,
    meta: CheckpointMeta,
    *,
    measure: Callable[[nn.Module], Mapping[str, float]] | None = None,
    log: Log = default_log,
) -> EncodeOutcome:
    """Write ``model`` to the ``.dcz`` file ``path`` with ``meta``, checked once, from the
    bytes written: every decoded tensor equals the model's, bit for bit.

    With ``measure`` (``model -> {"test_error": ...}``, e.g. :meth:`PhaseContext.errors`)
    the model decoded from those bytes is measured too, and its test error must equal
    ``meta.test_error`` when that was measured on the same split.

    Raises:
        DeepCompressionError: the decoded model's error differs from the model's.
    """
    t0 = time.perf_counter()
    # Rank 0 writes (and verifies) the file; under torchrun the other ranks read it back.
    written = dist.run_on_main(
        lambda: encode_to_bytes(model, path, config, metadata=meta), f"writing {path}"
    )
    dist.barrier(f"after writing {path}")
    if written is None:
        f = open_dcz(path)
        report = EncodeReport(
            Path(path), f.size, f.header_bytes, f.original_bytes, config.coder, 0.0, f.stats()
        )
    else:
        f, report = written
    errors: Mapping[str, float] = {}
    if measure is not None:
        decoded, _ = load_dcz(f, plain_copy(model))
        errors = measure(decoded)
        error = errors.get("test_error")
        if meta.test_error is not None and error != meta.test_error:
            raise DeepCompressionError(
                f"{path}: the decoded model's test error {pct(error or 0.0)} differs from "
                f"the model's {pct(meta.test_error)}"
            )
    name, size = Path(path).name, report.file_bytes
    log(f"[encode] {name}: {size:,} bytes, {report.rate:.1f}x ({config.coder})")
    return EncodeOutcome(report, f, errors, time.perf_counter() - t0)


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without parametrizations, to decode a file into: works for any
    architecture, built-in or not, without importing anything the file names."""
    plain = copy.deepcopy(model)
    strip_quantization_(plain)
    strip_pruning_(plain)
    return plain
