"""Selection on held-out images: whether a compressed candidate keeps an accuracy budget,
decided by comparing it with the dense model on the same images
(:mod:`~deep_compression.selection.paired`, pure numpy), a growing prefix at a time
(:mod:`~deep_compression.selection.judge`).

Where the images come from is :class:`~deep_compression.data.ValidationConfig`'s
``source``: for a model trained elsewhere, a seeded part of the test set, the rest kept
for the report."""

from deep_compression.selection.judge import (
    LOOKS,
    PairedJudge,
    Verdict,
    per_image_errors,
)
from deep_compression.selection.paired import (
    PairedIncrease,
    images_needed,
    paired_increase,
    z_of,
)

__all__ = [
    "LOOKS",
    "PairedIncrease",
    "PairedJudge",
    "Verdict",
    "images_needed",
    "paired_increase",
    "per_image_errors",
    "z_of",
]
