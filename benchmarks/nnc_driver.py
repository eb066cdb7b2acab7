"""Run NNCodec (the MPEG NNC reference encoder) on dense weights; for benchmarks/no_retrain.py.

Runs under NNCodec's own virtual environment (it needs numpy<2 and its own torch), as a
subprocess: ``/work/nnc-venv/bin/python benchmarks/nnc_driver.py IN.npz OUT_DIR QP[:opt] ...``

IN.npz holds the model's float32 state-dict tensors (``np.savez``; read without pickle).
For each setting ``QP`` (or ``QP:opt`` for NNCodec's per-layer QP adjustment ``opt_qp``),
the tensors are compressed with NNCodec's uniform quantizer and dependent (trellis)
quantization (``use_dq``), its parameter optimisation (``param_opt``) and DeepCABAC; the
bitstream is decoded again and the decoded tensors written to ``OUT_DIR/nnc_<QP>[_opt].npz``.
One JSON line per setting goes to stdout: ``{"qp", "opt_qp", "bytes", "seconds", "path"}``.
Tensors with one dimension (biases) get NNCodec's default ``nonweight_qp = -75``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def main(argv: list[str]) -> None:
    from nncodec import nnc

    src, out_dir, settings = argv[0], argv[1], argv[2:]
    with np.load(src, allow_pickle=False) as f:
        params = {k: np.ascontiguousarray(f[k], dtype=np.float32) for k in f.files}
    os.makedirs(out_dir, exist_ok=True)
    for setting in settings:
        qp_text, _, flag = setting.partition(":")
        qp, opt = int(qp_text), flag == "opt"
        t0 = time.perf_counter()
        bitstream = nnc.compress(
            dict(params),
            bitstream_path=None,
            qp=qp,
            use_dq=True,
            param_opt=True,
            opt_qp=opt,
            return_bitstream=True,
            verbose=False,
        )
        seconds = time.perf_counter() - t0
        decoded = nnc.decompress(bytearray(bitstream), verbose=False)
        path = os.path.join(out_dir, f"nnc_{qp}{'_opt' if opt else ''}.npz")
        np.savez(
            path,
            **{
                k: np.asarray(decoded[k], dtype=np.float32).reshape(params[k].shape) for k in params
            },
        )
        print(
            json.dumps(
                {
                    "qp": qp,
                    "opt_qp": opt,
                    "bytes": len(bitstream),
                    "seconds": round(seconds, 3),
                    "path": path,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
