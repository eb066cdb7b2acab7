"""Re-encode ``.dcz`` files losslessly into the current format version; print old/new bytes.

    PYTHONPATH=src python benchmarks/reencode.py models/lenet-300-100.dcz models/lenet-5.dcz
    PYTHONPATH=src python benchmarks/reencode.py models/*.dcz --in-place   # rewrite them

The records (positions, indices, codebooks, dense data) and the metadata are read back and
written again with ``coder="best"`` (order-0 coders or ctx, per stream, whichever is
smaller) and the file's chunk size; the decoded arrays are checked bit for bit before
anything is written. Without ``--in-place`` nothing is written (``-o DIR`` writes copies).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from deep_compression.dcz import decode, open_dcz, to_bytes
from deep_compression.dcz.format import VERSION


def reencode(path: Path) -> tuple[bytes, int, int]:
    """``(new file bytes, old version, old size)``; raises if any array would change."""
    f = open_dcz(path)
    old = f.decode()
    blob = to_bytes(f.records(), f.metadata, coder="best", chunk=f.chunk)
    new, meta = decode(blob)
    same = list(old) == list(new) and all(
        old[k].dtype == new[k].dtype
        and old[k].shape == new[k].shape
        and np.array_equal(np.ascontiguousarray(old[k]).view(np.uint8),
                           np.ascontiguousarray(new[k]).view(np.uint8))
        for k in old
    )  # fmt: skip
    if not same or meta != f.metadata:
        raise SystemExit(f"{path}: re-encoding would change the arrays; nothing written")
    return blob, f.version, f.size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--in-place", action="store_true", help="overwrite each file")
    parser.add_argument("-o", "--out-dir", type=Path, help="write copies into this folder")
    args = parser.parse_args(argv)
    for path in args.files:
        blob, version, size = reencode(path)
        print(f"{path}: v{version} {size:,} B -> v{VERSION} {len(blob):,} B "
              f"({100 * (len(blob) / size - 1):+.1f}%)")  # fmt: skip
        target = path if args.in_place else (args.out_dir / path.name if args.out_dir else None)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
