"""Version-1 test vectors: the LeNet files shipped before format version 2 keep decoding
to the same arrays, and re-encode losslessly (and smaller) as version 2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from deep_compression.dcz import decode, open_dcz, to_bytes

DATA = Path(__file__).parent.parent / "data"
# SHA-256 over (name, C-order bytes) of every decoded array, computed when the files were
# copied from models/ (format version 1, written by the version-1 writer).
DIGESTS = {
    "lenet-300-100": "952da7297126b9032b88898f9e82350f8279b7493b745e988e177bc0472fdaa9",
    "lenet-5": "d7ee6269517a162c7a21156a71c048a3941a6b4dd1081c2c6a4e91741abc559f",
}


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name, a in arrays.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_v1_vectors_decode_to_the_same_arrays(name: str) -> None:
    path = DATA / f"{name}.v1.dcz"
    assert open_dcz(path).version == 1
    arrays, meta = decode(path)
    assert digest(arrays) == DIGESTS[name]
    v2 = to_bytes(open_dcz(path).records(), meta, coder="best")
    assert open_dcz(v2).version == 2 and len(v2) < path.stat().st_size
    assert digest(decode(v2)[0]) == DIGESTS[name]
    assert to_bytes(open_dcz(v2).records(), meta, coder="best") == v2  # deterministic
