"""Rounding codebooks and biases to float16 values: small change, lossless 2-byte storage."""

from __future__ import annotations

import numpy as np
import torch

from deep_compression.encode import model_tensors
from deep_compression.models import build_model
from deep_compression.quantize import QuantizeConfig, quantize_, round_float16_


def test_round_float16_changes_little_and_makes_values_exact() -> None:
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    quantize_(model, QuantizeConfig(bits={"*": 4}))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    changed = round_float16_(model)
    assert changed > 0
    for name, p in model.named_parameters():
        if name in before:
            rel = (p.detach() - before[name]).abs() / before[name].abs().clamp_min(1e-30)
            assert float(rel.max()) <= 2.0**-11  # binary16 rounding, nothing more
            assert torch.equal(p, p.half().float())  # exactly representable now
    assert round_float16_(model) == 0  # idempotent


def test_writer_stores_rounded_payloads_in_two_bytes() -> None:
    from deep_compression.dcz import open_dcz
    from deep_compression.dcz.writer import to_bytes

    torch.manual_seed(1)
    model = build_model("lenet-300-100")
    quantize_(model, QuantizeConfig(bits={"*": 3}))
    size32 = len(to_bytes(model_tensors(model), {}, coder="huffman"))
    round_float16_(model)
    blob = to_bytes(model_tensors(model), {}, coder="huffman")
    f = open_dcz(blob)
    assert all(t.half for t in f.tensors)  # three codebooks and three biases
    saved = 2 * (3 * 8 + 300 + 100 + 10)  # 2 bytes per codebook entry and bias
    assert size32 - len(blob) >= saved - 16  # minus a few header bytes for "store"
    decoded = f.decode()
    assert np.array_equal(decoded["fc1.bias"], model.fc1.bias.detach().numpy())
