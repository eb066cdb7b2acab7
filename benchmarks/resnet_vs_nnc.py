"""No retraining on CIFAR-10 ResNets: .dcz (rate-distortion quantization) against NNCodec.

    PYTHONPATH=$PWD/src /work/main/.venv/bin/python benchmarks/resnet_vs_nnc.py \\
        [--depths 44 32] [--nnc-python /work/nnc-venv/bin/python]

For each published CIFAR-10 ResNet (``--models``: the akamaster checkpoints, 3x3
convolutions with BatchNorm, built by ``examples/models.py:resnet``), in one run:

* **NNCodec** (the MPEG NNC reference encoder: uniform quantization with dependent/trellis
  quantization, parameter optimisation, DeepCABAC), with and without its per-layer QP
  adjustment ``opt_qp``, at every QP of ``--qps``, run by ``benchmarks/nnc_driver.py``
  under NNCodec's own environment on the dense state dict; its decoded tensors are
  evaluated here. For the smallest setting within ``--points`` of dense, every weight
  tensor is also encoded *alone* at that QP to get its bytes per layer.
* **.dcz without retraining** (:func:`deep_compression.no_retrain.rd_quantize_`) at a grid
  of ``lam`` per importance (``weights``: one relative trade for every layer, what
  ``compress --no-retrain`` picked on ResNet-44; ``measured``: each layer's relative error
  weighted by its measured effect on the output), with ``--calibration`` training images
  (bias correction; the sensitivity measurement). Each candidate is serialised to real
  ``.dcz`` bytes, decoded by the numpy decoder and evaluated; per layer, its segment bytes.

Every reconstruction is evaluated by one function (:func:`predict`) on one fixed seeded
half (seed 0) of the CIFAR-10 test JPEGs (``--images``). Wall times: NNCodec's encoder per
setting, the .dcz quantizer per candidate, the sensitivity measurement once.

Writes ``benchmarks/results/resnet_vs_nnc.{csv,md,png}`` and ``resnet_vs_nnc_layers.csv``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = Path("/work/shared/models/cifar10-resnet")
DATA = "/work/shared/data/cifar10-jpeg"
CKPT = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
        56: "resnet56-4bfd9763.th"}  # fmt: skip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from no_retrain import as_codebooks  # noqa: E402

from deep_compression.data import DatasetConfig, in_memory, load_data  # noqa: E402
from deep_compression.dcz import decode, open_dcz, to_bytes  # noqa: E402
from deep_compression.encode import file_metadata, model_tensors  # noqa: E402
from deep_compression.loading import load_model  # noqa: E402
from deep_compression.no_retrain import NoRetrainConfig, rd_quantize_  # noqa: E402
from deep_compression.prune.schedule import calibration_batch  # noqa: E402
from deep_compression.train.evaluation import predict  # noqa: E402

QPS = ["-30", "-28", "-26", "-24", "-22", "-20", "-26:opt", "-24:opt", "-22:opt"]
LAMS = {
    "weights": [3e-7, 5e-7, 7e-7, 9e-7, 1.2e-6],
    "measured": [4e-8, 6e-8, 8e-8, 1e-7, 1.3e-7, 1.7e-7],
}
FIELDS = ["model", "method", "setting", "bytes", "accuracy", "kept_fraction", "seconds"]

# Runs inside NNCodec's environment: each tensor of IN.npz alone at one QP -> its bytes.
PER_TENSOR = r"""
import contextlib, io, json, sys
import numpy as np
from nncodec import nnc
qp, opt = int(sys.argv[2]), sys.argv[3] == "opt"
with np.load(sys.argv[1], allow_pickle=False) as f:
    params = {k: np.ascontiguousarray(f[k], dtype=np.float32) for k in f.files}
sizes = {}
for k, v in params.items():
    if v.ndim < 2:
        continue
    with contextlib.redirect_stdout(io.StringIO()):
        bs = nnc.compress({k: v}, bitstream_path=None, qp=qp, use_dq=True, param_opt=True,
                          opt_qp=opt, return_bitstream=True, verbose=False)
    sizes[k] = len(bs)
print(json.dumps(sizes))
"""


def accuracy(model: torch.nn.Module, test) -> float:
    """Top-1 accuracy in percent: the one evaluation every reconstruction goes through."""
    return 100.0 * predict(model, test).accuracy


def with_arrays(dense: torch.nn.Module, arrays: dict[str, np.ndarray]) -> torch.nn.Module:
    model = copy.deepcopy(dense)
    state = model.state_dict()
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v)).to(state[k].dtype) for k, v in arrays.items()}
    )
    return model.eval()


def weight_stats(model: torch.nn.Module) -> float:
    ws = [p for n, p in model.state_dict().items() if n.endswith("weight") and p.ndim > 1]
    return sum(int((p != 0).sum()) for p in ws) / sum(p.numel() for p in ws)


def run_nncodec(name, dense, meta, test, python, qps, rows, tmp: Path) -> None:
    src = tmp / f"{name}.npz"
    np.savez(src, **{k: v.detach().numpy() for k, v in dense.state_dict().items()})
    cmd = [python, str(ROOT / "benchmarks" / "nnc_driver.py"), str(src), str(tmp), *qps]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"NNCodec failed:\n{proc.stderr[-2000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            with np.load(r["path"], allow_pickle=False) as f:
                model = with_arrays(dense, {k: f[k] for k in f.files})
            rows.append(dict(model=name, method="nncodec",
                             setting=f"qp={r['qp']}" + (" opt_qp" if r["opt_qp"] else ""),
                             bytes=r["bytes"], accuracy=accuracy(model, test),
                             kept_fraction=round(weight_stats(model), 4),
                             seconds=r["seconds"]))  # fmt: skip
            print(rows[-1], flush=True)
            # Diagnostic: NNCodec's reconstruction (its quantizer) coded by .dcz (the
            # distinct non-zero values of each weight as its codebook): how much of the
            # difference is the coding of the same values.
            blob = dcz_bytes(as_codebooks(model), meta)
            rows.append({**rows[-1], "method": "nncodec values, .dcz coder",
                         "bytes": len(blob), "seconds": ""})  # fmt: skip


def nncodec_layers(name, dense, python, setting: str, tmp: Path) -> dict[str, int]:
    """NNCodec's bytes for each weight tensor encoded alone at ``setting`` ("qp=Q[ opt_qp]")."""
    src, drv = tmp / f"{name}-w.npz", tmp / "per_tensor.py"
    np.savez(src, **{k: v.detach().numpy() for k, v in dense.state_dict().items()})
    drv.write_text(PER_TENSOR)
    qp = setting.split()[0].removeprefix("qp=")
    opt = "opt" if "opt_qp" in setting else "-"
    proc = subprocess.run([python, str(drv), str(src), qp, opt], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"NNCodec (per tensor) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dcz_bytes(model: torch.nn.Module, meta) -> bytes:
    header = file_metadata(model, meta).to_dict()
    return to_bytes(model_tensors(model, "auto", "best"), header, coder="best")


def run_dcz(name, dense, meta, test, calib, mode, lams, rows, layers) -> None:
    cache: dict = {}
    for lam in lams:
        model = copy.deepcopy(dense)
        t0 = time.perf_counter()
        report = rd_quantize_(model, NoRetrainConfig(lam=lam, importance=mode), calib,
                              cache=cache)  # fmt: skip
        seconds = time.perf_counter() - t0
        blob = dcz_bytes(model, meta)
        arrays, _ = decode(blob)  # evaluate what the file holds, decoded by numpy
        setting = f"lam={lam:g}"
        rows.append(dict(model=name, method=f"dcz {mode}", setting=setting, bytes=len(blob),
                         accuracy=accuracy(with_arrays(dense, arrays), test),
                         kept_fraction=round(report.kept_fraction, 4),
                         seconds=round(seconds, 1)))  # fmt: skip
        print(rows[-1], flush=True)
        layers[(f"dcz {mode}", setting)] = {
            s.name: (s.bytes, s.kept, s.k) for s in open_dcz(blob).stats()
        }


def best_within(rows, model, method, floor):
    ok = [r for r in rows if r["model"] == model and r["method"] == method
          and r["accuracy"] >= floor]  # fmt: skip
    return min(ok, key=lambda r: r["bytes"]) if ok else None


def plot(rows, dense_acc, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dense_acc)
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        for method in sorted({r["method"] for r in rows if r["model"] == name}):
            pts = sorted((r["bytes"] / 1e3, r["accuracy"]) for r in rows
                         if r["model"] == name and r["method"] == method)  # fmt: skip
            ax.plot(*zip(*pts, strict=True), "o-", label=method, ms=4)
        ax.axhline(dense_acc[name], color="k", lw=0.8, label="dense")
        ax.axhline(dense_acc[name] - 1, color="k", lw=0.8, ls=":", label="dense - 1 point")
        ax.set(title=name, xlabel="file bytes (KB)", ylabel="test accuracy (%, 5,000 images)")
        ax.set_ylim(dense_acc[name] - 4, dense_acc[name] + 0.5)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def layer_table(name, dense, best, layers, nnc_layers) -> list[dict]:
    """Per weight tensor: NNCodec's bytes (alone) and .dcz's segment bytes of each best."""
    out = []
    for key, p in dense.state_dict().items():
        if not (key.endswith("weight") and p.ndim > 1):
            continue
        row = {"model": name, "tensor": key, "weights": p.numel(),
               "nncodec_bytes_alone": nnc_layers.get(key, "")}  # fmt: skip
        for method, r in best.items():
            if method.startswith("dcz") and r is not None:
                b, kept, k = layers[(method, r["setting"])][key]
                row[f"{method} bytes"] = b
                row[f"{method} kept"] = round(kept / p.numel(), 3)
                row[f"{method} k"] = k
        out.append(row)
    return out


def write(rows, dense_acc, tables, meta_lines, prefix: Path) -> None:
    with open(f"{prefix}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    flat = [r for t in tables for r in t]
    keys = list(dict.fromkeys(k for r in flat for k in r))
    with open(f"{prefix}_layers.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
    lines = ["# No retraining on CIFAR-10 ResNets: .dcz vs NNCodec (resnet_vs_nnc)", "",
             *meta_lines, "",
             "Smallest file within 1 point of dense test accuracy (same images, same code):", "",
             "| model | dense | method | setting | bytes | accuracy | x NNCodec |",
             "|:--|--:|:--|:--|--:|--:|--:|"]  # fmt: skip
    for name, acc in dense_acc.items():
        nnc = best_within(rows, name, "nncodec", acc - 1)
        for method in sorted({r["method"] for r in rows if r["model"] == name}):
            b = best_within(rows, name, method, acc - 1)
            if b is None:
                lines.append(f"| {name} | {acc:.2f}% | {method} | none within 1 point | | | |")
                continue
            ratio = f"{b['bytes'] / nnc['bytes']:.3f}" if nnc else ""
            lines.append(f"| {name} | {acc:.2f}% | {method} | {b['setting']} | "
                         f"{b['bytes']:,} | {b['accuracy']:.2f}% | {ratio} |")  # fmt: skip
    lines += ["", "All candidates:", "", "| " + " | ".join(FIELDS) + " |",
              "|" + "--|" * len(FIELDS)]  # fmt: skip
    lines += ["| " + " | ".join(str(r[f]) for f in FIELDS) + " |" for r in rows]
    for t in tables:
        if not t:
            continue
        keys = list(t[0])
        lines += [
            "",
            f"Per layer, {t[0]['model']} (bytes of each best file above):",
            "",
            "| " + " | ".join(keys[1:]) + " |",
            "|" + "--|" * (len(keys) - 1),
        ]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys[1:]) + " |" for r in t]
        sums = {k: sum(r[k] for r in t if isinstance(r.get(k), int)) for k in keys[2:]
                if k.endswith("bytes") or k.endswith("alone")}  # fmt: skip
        lines.append("| sum | | " + " | ".join(str(sums.get(k, "")) for k in keys[3:]) + " |")
    Path(f"{prefix}.md").write_text("\n".join(lines) + "\n")
    plot(rows, dense_acc, Path(f"{prefix}.png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[44, 32])
    ap.add_argument("--nnc-python", default="/work/nnc-venv/bin/python")
    ap.add_argument("--qps", nargs="+", default=QPS)
    ap.add_argument("--modes", nargs="+", default=list(LAMS))
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--calibration", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "resnet_vs_nnc")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cfg = DatasetConfig(format="imagefolder", root=DATA, mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225))  # fmt: skip
    data = load_data(cfg)
    half = np.random.default_rng(0).permutation(len(data.test))[: args.images]
    test = in_memory(torch.utils.data.Subset(data.test, half.tolist()))
    calib = calibration_batch(data.train, args.calibration, 0)
    rows: list[dict] = []
    dense_acc: dict[str, float] = {}
    tables, meta_lines = [], [f"- command: `python benchmarks/resnet_vs_nnc.py "
                              f"{' '.join(sys.argv[1:])}`"]  # fmt: skip
    for depth in args.depths:
        name = f"resnet{depth}"
        dense, meta = load_model(MODELS / CKPT[depth], model=f"{ROOT}/examples/models.py:resnet",
                                 model_args={"depth": depth}, allow_code=True)  # fmt: skip
        dense_acc[name] = accuracy(dense, test)
        print(name, "dense", dense_acc[name], flush=True)
        layers: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            run_nncodec(name, dense, meta, test, args.nnc_python, args.qps, rows, Path(tmp))
            for mode in args.modes:
                t0 = time.perf_counter()
                run_dcz(name, dense, meta, test, calib, mode, LAMS[mode], rows, layers)
                meta_lines.append(f"- {name} dcz {mode}: {len(LAMS[mode])} candidates in "
                                  f"{time.perf_counter() - t0:.0f} s (sensitivity and "
                                  "calibration statistics once, then cached)")  # fmt: skip
            best = {m: best_within(rows, name, m, dense_acc[name] - 1)
                    for m in {r["method"] for r in rows if r["model"] == name}}  # fmt: skip
            nnc_layers = (nncodec_layers(name, dense, args.nnc_python, best["nncodec"]["setting"],
                                         Path(tmp)) if best.get("nncodec") else {})  # fmt: skip
        tables.append(layer_table(name, dense, best, layers, nnc_layers))
        write(rows, dense_acc, tables, meta_lines, args.out)
    meta_lines.append(f"- total {time.perf_counter() - t_start:.0f} s, {args.threads} thread(s)")
    write(rows, dense_acc, tables, meta_lines, args.out)


if __name__ == "__main__":
    main()
