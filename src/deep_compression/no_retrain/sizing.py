"""How a candidate of the search is sized: by its real encoding, in memory
(:func:`encoded_size`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from deep_compression.dcz import to_bytes
from deep_compression.encode import file_metadata, model_tensors

__all__ = ["encoded_size"]


def encoded_size(
    model: nn.Module,
    *,
    coder: str = "best",
    gap_bits: int | str | Mapping[str, int | str] | None = "auto",
    metadata: dict[str, Any] | None = None,
) -> int:
    """Bytes of the ``.dcz`` file ``model`` would be written as (encoded in memory).

    The same records as :func:`deep_compression.encode.encode_model` writes, serialised by
    :func:`deep_compression.dcz.to_bytes`; pass the metadata the real file will hold for
    an exact count (it is part of the zlib-compressed header).
    """
    records = model_tensors(model, gap_bits, coder)
    meta = file_metadata(model, metadata).to_dict()
    return len(to_bytes(records, meta, coder=coder))
