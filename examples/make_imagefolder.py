"""Write a built-in dataset (MNIST, Fashion-MNIST) as an image folder of PNGs.

    python examples/make_imagefolder.py fashion-mnist runs/data/fashion-png [--limit N]

gives ``OUT/train/<class>/00000.png`` and ``OUT/test/<class>/00000.png`` (classes named by
their index, 0..9, in sorted order), the layout ``--dataset OUT`` and recipes'
``dataset = "OUT"`` read. ``--limit`` keeps the first N images of each split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from deep_compression.data import find_dataset_dir, get_spec, read_idx
from deep_compression.data.idx import idx_file  # the IDX file of a role, gz or raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=("mnist", "fashion-mnist"))
    p.add_argument("out", type=Path)
    p.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    p.add_argument("--data-dir", default=None, help="where the IDX files are")
    args = p.parse_args(argv)
    if args.out.exists():
        print(f"{args.out} exists; choose a new directory", file=sys.stderr)
        return 1
    spec = get_spec(args.dataset)
    directory = find_dataset_dir(args.dataset, args.data_dir)
    for split in ("train", "test"):
        stem, md5 = spec.files[f"{split}-images"]
        images = read_idx(idx_file(directory, stem), md5)
        stem, md5 = spec.files[f"{split}-labels"]
        labels = read_idx(idx_file(directory, stem), md5)
        n = len(labels) if args.limit is None else min(args.limit, len(labels))
        for c in range(spec.num_classes):
            (args.out / split / str(c)).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.asarray(images[i], np.uint8)).save(
                args.out / split / str(int(labels[i])) / f"{i:05d}.png"
            )
        print(f"{split}: {n} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
