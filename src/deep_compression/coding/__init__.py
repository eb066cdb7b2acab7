"""Pure-numpy coding algorithms for the compressed file (no torch).

* :mod:`~deep_compression.coding.gaps`: relative-index sparse coding with fillers;
* :mod:`~deep_compression.coding.huffman`: canonical, length-limited Huffman, decoded in
  lockstep chunks (the code itself built by :mod:`~deep_compression.coding.huffman_codes`);
* :mod:`~deep_compression.coding.ans`: rANS from integer counts, numpy only (constriction's bits;
  the lane arithmetic in :mod:`~deep_compression.coding.ans_lanes`);
* :mod:`~deep_compression.coding.bits`: fixed-width bit packing and varints;
* :mod:`~deep_compression.coding.context`: context-adaptive binary arithmetic coding of
  positions and cluster indices (format version 2, ``ctx``);
* :mod:`~deep_compression.coding.coders`: the one table of stream coders;
* :mod:`~deep_compression.coding.streams`: encode/decode streams through that table.
"""

from deep_compression.coding.gaps import decode_gaps, encode_gaps, filler_symbol
from deep_compression.coding.streams import (
    CODERS,
    StreamRef,
    decode_streams,
    encode_stream,
    entropy_bits,
)

__all__ = [
    "CODERS",
    "StreamRef",
    "decode_gaps",
    "decode_streams",
    "encode_gaps",
    "encode_stream",
    "entropy_bits",
    "filler_symbol",
]
