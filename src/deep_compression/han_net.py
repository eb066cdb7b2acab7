"""Song Han's binary ``.net`` layout (his released Deep-Compressed SqueezeNet and AlexNet).

The layout, as his ``decode.py`` (songhan/SqueezeNet-Deep-Compression and
songhan/Deep-Compression-AlexNet) reads it, for the network's layers ``0 .. L-1`` whose
Caffe names contain ``conv``, ``fc`` or ``ip``, in the network's order:

    L x u32 LE       nz[i]: entries stored for layer i (kept weights plus fillers)
    then per layer i, with b = 8 bits if "conv" is in its name, else 4:
      2**b x f32 LE  codebook
      B x f32 LE     bias (B = the layer's bias size)
      ceil(nz / (8/b)) bytes   codes, b bits each; with b = 4 two per byte, the first
                               in the low nibble
      ceil(nz / 2) bytes       relative indices, 4 bits each, low nibble first

Decoding a layer: ``pos = cumsum(rel + 1) - 1`` (so a relative index r means "r + 1
positions after the previous entry", the first counted from -1); ``code`` is an all-zero
``uint8`` array of the weight's size with ``code[pos] = codes``; the weight is
``codebook[code]`` reshaped. Positions not listed, and the filler entries a writer inserts
when a gap exceeds 16 (with code 0), take ``codebook[0]``, which is 0.0 in his files; so
the dense weight is exactly what this reader returns, whatever ``codebook[0]`` is.

His decoder computes the byte counts as ``(nz - 1) / (8/b) + 1`` and ``(nz - 1) / 2 + 1``
in Python 2 integer arithmetic, i.e. the ceilings above for ``nz >= 1``; ``nz = 0`` is
rejected here (his decoder would read a wrapped-around count). numpy only; every size is
checked against the file length before anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from deep_compression.errors import FormatError

__all__ = ["LayerSpec", "bits_for", "read_han_net", "write_han_net"]

# (Caffe layer name, weight shape, bias size)
LayerSpec = tuple[str, tuple[int, ...], int]


def bits_for(caffe_name: str) -> int:
    """Code width of a layer, his rule: 8 bits for convolutions, 4 for the rest."""
    return 8 if "conv" in caffe_name else 4


def _layer_bytes(spec: LayerSpec, nz: int) -> int:
    name, _, bias = spec
    b = bits_for(name)
    return 4 * (2**b) + 4 * bias + -(-nz // (8 // b)) + -(-nz // 2)


def read_han_net(
    blob: bytes, layers: Sequence[LayerSpec], where: str = "<bytes>"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode a ``.net`` file into ``{caffe name: (weight, bias)}`` float32 arrays.

    Args:
        blob: the file's bytes.
        layers: the network's layers with ``conv``/``fc``/``ip`` in their names, in Caffe
            order (see :func:`deep_compression.caffe_models.caffe_layers`).

    Raises:
        FormatError: a file whose size disagrees with its counts and the network, a count
            above a layer's size, or relative indices that run past a layer.
    """
    layers = [s for s in layers if any(k in s[0] for k in ("conv", "fc", "ip"))]
    head = 4 * len(layers)
    if len(blob) < head:
        raise FormatError(f"{where}: {len(blob)} bytes cannot hold {len(layers)} layer counts")
    nz = np.frombuffer(blob, dtype="<u4", count=len(layers)).astype(np.int64)
    expected = head
    for spec, n in zip(layers, nz.tolist()):
        numel = math.prod(spec[1])
        if not 1 <= n <= numel:
            raise FormatError(
                f"{where}: layer {spec[0]!r} stores {n} entries, outside [1, {numel}]"
            )
        expected += _layer_bytes(spec, n)
    if expected != len(blob):
        raise FormatError(
            f"{where}: the counts and the network need {expected} bytes, the file has "
            f"{len(blob)} (wrong --model, or not a .net file of this layout)"
        )
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pos = head
    for (name, shape, bias_size), n in zip(layers, nz.tolist()):
        b = bits_for(name)
        k = 2**b
        codebook = np.frombuffer(blob, "<f4", k, pos).astype(np.float32)
        pos += 4 * k
        bias = np.frombuffer(blob, "<f4", bias_size, pos).astype(np.float32)
        pos += 4 * bias_size
        n_code = -(-n // (8 // b))
        raw = np.frombuffer(blob, np.uint8, n_code, pos)
        pos += n_code
        codes = _nibbles(raw, n) if b == 4 else raw.copy()
        n_rel = -(-n // 2)
        rel = _nibbles(np.frombuffer(blob, np.uint8, n_rel, pos), n)
        pos += n_rel
        positions = np.cumsum(rel.astype(np.int64) + 1) - 1
        numel = math.prod(shape)
        if positions[-1] >= numel:
            raise FormatError(
                f"{where}: layer {name!r}: relative indices run past its {numel} weights"
            )
        code = np.zeros(numel, dtype=np.uint8)
        code[positions] = codes
        out[name] = (codebook[code].reshape(shape), bias)
    return out


def _nibbles(raw: np.ndarray, n: int) -> np.ndarray:
    """``n`` 4-bit values, low nibble of each byte first."""
    pair = np.empty((raw.size, 2), dtype=np.uint8)
    pair[:, 0] = raw & 0x0F
    pair[:, 1] = raw >> 4
    return pair.reshape(-1)[:n]


def write_han_net(layers: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """A ``.net`` file in Han's layout (for tests and synthetic estimates).

    Args:
        layers: ``(caffe name, codes, codebook, bias)`` per layer, in Caffe order:
            ``codes`` the dense code array (any shape, ints in ``[0, 2**b)``, 0 = pruned),
            ``codebook`` ``(2**b,)`` float32 with ``codebook[0]`` the pruned value.

    Gaps longer than 16 get filler entries of code 0 every 16 positions, as his encoder
    does (the paper's filler zero).
    """
    counts, bodies = [], []
    for name, codes, codebook, bias in layers:
        b = bits_for(name)
        flat = np.asarray(codes).reshape(-1).astype(np.int64)
        kept = np.flatnonzero(flat)
        gaps = np.diff(kept, prepend=-1)  # >= 1
        fillers, last = np.divmod(gaps - 1, 16)
        n = int(kept.size + fillers.sum())
        rel = np.full(n, 15, dtype=np.uint8)
        code = np.zeros(n, dtype=np.uint8)
        at = np.cumsum(fillers + 1) - 1  # each kept entry follows its fillers
        rel[at] = last
        code[at] = flat[kept]
        counts.append(n)
        body = [np.asarray(codebook, "<f4").tobytes(), np.asarray(bias, "<f4").tobytes()]
        body.append(_pack_nibbles(code) if b == 4 else code.tobytes())
        body.append(_pack_nibbles(rel))
        bodies.append(b"".join(body))
    return np.asarray(counts, "<u4").tobytes() + b"".join(bodies)


def _pack_nibbles(values: np.ndarray) -> bytes:
    v = np.zeros(2 * (-(-values.size // 2)), dtype=np.uint8)
    v[: values.size] = values
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8).tobytes()
