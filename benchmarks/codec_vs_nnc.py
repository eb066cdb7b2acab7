"""Per layer, on identical arrays: our .dcz (format v2) against NNCodec and xz.

For each model file (default: the version-1 test vectors of the shipped LeNets, which hold
exactly the shipped arrays), the decoded arrays are coded three ways, and each result is
decoded again and checked equal:

* **.dcz**: the records re-encoded in the current format with ``coder="best"``; per tensor
  the bytes of its segments, and the whole file (header, metadata, CRC included);
* **NNCodec** (Fraunhofer HHI's reference software of MPEG NNC, ISO/IEC 15938-17, from
  PyPI) run in its own environment ``/work/nnc-venv`` (or ``--nnc-python``) as a
  subprocess, with arrays passed through an ``.npz`` (no pickle). NNCodec codes int32
  tensors exactly, so each float32 tensor is mapped to integers losslessly, in the better
  (per tensor, measured) of two ways: (a) ``value / 2**e`` with the largest power-of-two
  step that makes every value an integer below 2**31 (+1 byte for ``e``); (b) for at most
  2**16 distinct values, the *signed rank*: 0 for +0.0, ``+1, +2, ...`` for the positive
  values and ``-1, -2, ...`` for the negative ones in order of magnitude (what NNCodec's
  own codebook mode codes: small integers around 0), plus the codebook itself at 2 bytes a
  value if every value is float16-exact, else 4. Per tensor: a bitstream of that tensor
  alone; total: one bitstream of the whole model with the same per-tensor choices, plus
  the side bytes;
* **xz -9e** of the tensor's raw little-endian float32 bytes (per tensor), and of a
  safetensors file of all arrays (total).

If the NNCodec environment is missing, its columns say "skipped" and the rest still runs.
Results: ``benchmarks/results/codec_vs_nnc.{csv,md}``.

    PYTHONPATH=src python benchmarks/codec_vs_nnc.py [FILE.dcz ...] [--nnc-python PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import lzma
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save as save_numpy

from deep_compression.dcz import decode, open_dcz, to_bytes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_FILES = [ROOT / "tests/data/lenet-300-100.v1.dcz", ROOT / "tests/data/lenet-5.v1.dcz"]
DEFAULT_NNC = Path("/work/nnc-venv/bin/python")

# Runs inside the NNCodec environment: reads ints.npz, writes JSON sizes to stdout.
DRIVER = r"""
import contextlib, io, json, sys
import numpy as np
from nncodec import nnc
data = np.load(sys.argv[1], allow_pickle=False)
arrays = {k: data[k] for k in data.files}

def run(d):
    with contextlib.redirect_stdout(io.StringIO()):
        bs = nnc.compress(d, bitstream_path=sys.argv[2], return_bitstream=True, verbose=False)
        out = nnc.decompress(bytearray(bs), verbose=False)
    for k in d:
        assert out[k].dtype == d[k].dtype and np.array_equal(out[k], d[k]), k
    return len(bs)

sizes = {k: run({k: v}) for k, v in arrays.items()}
print(json.dumps({"per_tensor": sizes, "total": run(arrays)}))
"""


def to_ints(a: np.ndarray) -> tuple[np.ndarray, int | None]:
    """``(int32 array, e)`` with ``a == ints * 2**e`` exactly; ``e = None``: bit patterns."""
    x = np.asarray(a, dtype=np.float64).reshape(a.shape)
    nz = x[x != 0]
    if nz.size == 0:
        return np.zeros(a.shape, np.int32), 0
    if not np.isfinite(nz).all() or np.signbit(x[x == 0]).any():  # -0.0 has no int form
        return np.asarray(a, np.float32).view(np.int32), None
    _, exps = np.frexp(nz)
    for e in range(int(exps.max()), int(exps.min()) - 60, -1):  # the largest step first
        ints = np.ldexp(x, -e)
        if np.all(ints == np.round(ints)):
            if np.abs(ints).max() < 2**31:
                return ints.astype(np.int32), e
            break
    return np.asarray(a, np.float32).view(np.int32), None


def signed_rank(a: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(int32 ranks, codebook bytes)`` for a few-valued array, else ``None``."""
    bits = np.ascontiguousarray(a, "<f4").view("<u4")
    uniq = np.unique(bits[bits != 0])
    if uniq.size > 2**16 or not np.isfinite(uniq.view("<f4")).all():
        return None
    vals = uniq.view("<f4")
    neg = np.sort(vals[vals < 0])[::-1]  # by magnitude: -1 is the negative closest to 0
    pos = np.sort(vals[~(vals < 0)])
    rank = np.zeros(a.shape, np.int32)
    flat = np.asarray(a, np.float32)
    for i, v in enumerate(pos):
        rank[flat.view("<u4") == np.float32(v).view("<u4")] = i + 1
    for i, v in enumerate(neg):
        rank[flat.view("<u4") == np.float32(v).view("<u4")] = -(i + 1)
    f16 = vals.astype("<f2").astype("<f4").view("<u4")
    width = 2 if np.array_equal(f16, uniq) else 4
    return rank, width * uniq.size


def _run_nnc(python: Path, ints: dict[str, np.ndarray]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        npz, drv = Path(tmp) / "ints.npz", Path(tmp) / "driver.py"
        np.savez(npz, **ints)
        drv.write_text(DRIVER)
        proc = subprocess.run(
            [str(python), str(drv), str(npz), str(Path(tmp) / "b.nnc")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"NNCodec failed: {proc.stderr[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def nncodec_sizes(arrays: dict[str, np.ndarray], python: Path) -> dict | None:
    if not python.exists():
        return None
    key = {k: k.replace(".", "_") for k in arrays}  # npz keys: plain names
    scaled = {key[k]: to_ints(v)[0] for k, v in arrays.items()}
    ranked = {key[k]: signed_rank(v) for k, v in arrays.items()}
    a = _run_nnc(python, scaled)["per_tensor"]
    b = _run_nnc(python, {k: r[0] for k, r in ranked.items() if r is not None})["per_tensor"]
    choice, side, per = {}, 0, {}
    for k, kk in key.items():
        cost_a = a[kk] + 1
        cost_b = b[kk] + ranked[kk][1] if kk in b else None
        if cost_b is not None and cost_b < cost_a:
            choice[kk], per[k] = ranked[kk][0], (cost_b, "rank+codebook")
            side += ranked[kk][1]
        else:
            choice[kk], per[k] = scaled[kk], (cost_a, "value/2^e")
            side += 1
    total = _run_nnc(python, choice)["total"] + side
    return {"per_tensor": per, "total": total}


def xz(data: bytes) -> int:
    return len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES)
    parser.add_argument("--nnc-python", type=Path, default=DEFAULT_NNC)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for path in args.files:
        f = open_dcz(path)
        arrays, meta = decode(path)
        blob = to_bytes(f.records(), meta, coder="best", chunk=f.chunk)
        again, _ = decode(blob)
        assert all(
            np.array_equal(again[k].view(np.uint8), arrays[k].view(np.uint8)) for k in arrays
        )
        g = open_dcz(blob)
        stats = {s.name: s for s in g.stats()}
        coders = {t.name: "/".join(s.coder for s in t.streams.values()) or "raw" for t in g.tensors}
        nnc = nncodec_sizes(arrays, args.nnc_python)
        model = path.name.split(".")[0]
        for name, a in arrays.items():
            rows.append({
                "model": model, "tensor": name, "shape": "x".join(map(str, a.shape)),
                "dcz_bytes": stats[name].bytes, "dcz_coders": coders[name],
                "nncodec_bytes": nnc["per_tensor"][name][0] if nnc else "skipped",
                "nncodec_mapping": nnc["per_tensor"][name][1] if nnc else "",
                "xz_bytes": xz(np.ascontiguousarray(a, "<f4").tobytes()),
            })  # fmt: skip
        rows.append({
            "model": model, "tensor": "TOTAL (whole file)", "shape": "",
            "dcz_bytes": len(blob), "dcz_coders": f"v{g.version}, header {g.header_bytes} B",
            "nncodec_bytes": nnc["total"] if nnc else "skipped",
            "nncodec_mapping": "one bitstream + side bytes",
            "xz_bytes": xz(save_numpy(arrays)),
        })  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    with open(args.results / "codec_vs_nnc.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = (
        "| model | tensor | shape | .dcz B | .dcz coders | NNCodec B | NNCodec mapping | xz -9e B |"
    )
    lines = [
        "# .dcz (format v2) vs NNCodec vs xz on identical arrays (codec_vs_nnc)",
        "",
        f"- command: `python benchmarks/codec_vs_nnc.py {' '.join(sys.argv[1:])}`".rstrip(),
        "- per tensor: .dcz = its segments (no header); NNCodec = a bitstream of that tensor "
        "alone + its side bytes (exponent, or codebook); xz = raw float32 bytes of the tensor",
        "- TOTAL: the whole .dcz file (header, metadata, CRC); one NNCodec bitstream of all "
        "tensors (no metadata) + side bytes; xz -9e of a safetensors file of all arrays",
        "",
        head,
        "|:--|:--|:--|--:|:--|--:|:--|--:|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(
            f"{v:,}" if isinstance(v, int) else str(v) for v in r.values()) + " |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (args.results / "codec_vs_nnc.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
