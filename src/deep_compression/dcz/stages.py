"""The one definition of the paper's three storage stages, P, P+Q and P+Q+H.

Each stage is a complete ``.dcz`` file built from the records of a final file (the same
tensors, positions and metadata), so every stage decodes to the same model and only the
storage differs, which is what the paper's per-stage columns measure:

* **P** (pruning): every pruned tensor ``sparse`` (relative-index gaps + values), gaps in
  fixed-width fields, every float value in 4 bytes (float32, as the paper counts a pruned
  network; no float16 shortcut);
* **P+Q** (plus quantization): cluster indices and gaps in fixed-width fields
  (``ceil(log2 k)`` and ``gap_bits`` bits), codebooks and dense tensors as the file
  stores them;
* **P+Q+H** (plus entropy coding): the final file itself, byte for byte.

``deep-compression info``, the ``compress`` report and the benchmarks all call
:func:`stage_blobs`; a test checks that they agree. numpy only.
"""

from __future__ import annotations

from deep_compression.dcz.reader import DczFile
from deep_compression.dcz.writer import QuantizedTensor, SparseTensor, to_bytes

__all__ = ["STAGE_NAMES", "stage_blobs"]

STAGE_NAMES = ("P", "P+Q", "P+Q+H")


def stage_blobs(f: DczFile) -> dict[str, bytes]:
    """The bytes of the P, P+Q and P+Q+H files of the final file ``f``, in that order."""
    records = f.records()
    # The writer adds its own tool_version; the rest of the metadata is the final file's.
    meta = {k: v for k, v in f.metadata.items() if k != "tool_version"}
    compress = f.header_bytes != f.header_json_bytes
    p_records = [
        SparseTensor(r.name, r.shape, r.positions, r.codebook[r.indices], r.gap_bits)
        if isinstance(r, QuantizedTensor)
        else r
        for r in records
    ]
    return {
        "P": to_bytes(
            p_records, meta, coder="fixed", chunk=f.chunk, compress_header=compress, float16=False
        ),
        "P+Q": to_bytes(records, meta, coder="fixed", chunk=f.chunk, compress_header=compress),
        "P+Q+H": f.to_bytes(),
    }
