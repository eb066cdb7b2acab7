"""Compression without retraining: .dcz (rate-distortion quantization) against NNCodec.

    PYTHONPATH=$PWD/src DEEP_COMPRESSION_DATA=/work/shared/data \\
        /work/main/.venv/bin/python benchmarks/no_retrain.py            # --quick: smoke run

For each dense checkpoint (``--ckpt-dir``/``<model>-mnist.safetensors``: trained by
``deep-compression train`` with its default validation hold-out, as ``benchmarks/budget.py``
makes them), in one run:

* **NNCodec** (the MPEG NNC reference encoder: uniform quantization with dependent/trellis
  quantization, parameter optimisation, DeepCABAC; with and without its per-layer QP
  adjustment ``opt_qp``) at every QP of a range, run by ``benchmarks/nnc_driver.py`` under
  NNCodec's own virtual environment (``--nnc-python``) on the same dense tensors (exported
  to ``.npz``). Its decoded tensors come back as ``.npz`` and are evaluated here.
* **.dcz without retraining** (:func:`deep_compression.no_retrain.rd_quantize_`) at a
  grid of ``lam``: data-free (``importance = "weights"``), the same with the calibration
  images' bias correction (kept per layer only where it helps), and calibrated
  (``"gptq-fisher"``, ``"gptq"``), with ``--calibration`` training images (2,048, as the
  CLI). Each candidate is serialised to ``.dcz`` bytes in memory (``coder = "best"``,
  ``gap_bits = "auto"``), *decoded from those bytes* with the numpy decoder and evaluated.
* **the search** :func:`compress_without_retraining` with a budget of ``--budget`` points
  on the validation split the checkpoint recorded it held out (the images it never
  trained on; the calibration images come from the rest), as ``compress --no-retrain``
  runs it: with calibration (``importance = "auto"``: calibrated and data-free weighting,
  the smaller file within budget) and data-free. Its pick is measured on the test set once.

Every reconstruction is evaluated by the same function on the 10,000 MNIST test images;
the grid rows show the validation error too. Also times the data-free quantizer on
VGG-16's shapes (random weights).

Writes ``benchmarks/results/no_retrain.{csv,md,png}`` (``--quick``: ``no_retrain_quick.*``).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402

from deep_compression.budget import starting_recipe  # noqa: E402
from deep_compression.data import Split, carve_validation, load_data  # noqa: E402
from deep_compression.dcz import decode, to_bytes  # noqa: E402
from deep_compression.encode import file_metadata, model_tensors  # noqa: E402
from deep_compression.loading import load_model  # noqa: E402
from deep_compression.models import build_model  # noqa: E402
from deep_compression.no_retrain import (  # noqa: E402
    NoRetrainConfig,
    compress_without_retraining,
    rd_quantize_,
    validation_noise,
)
from deep_compression.no_retrain.config import CALIBRATION_IMAGES  # noqa: E402
from deep_compression.prune.schedule import calibration_batch  # noqa: E402
from deep_compression.train import evaluate  # noqa: E402

# Settings per model (the LeNets' lam scales were found with a coarse sweep; "weights" and
# "gptq" lam are relative output error per bit, "gptq-fisher" lam is loss per bit).
_QPS = [*(str(q) for q in range(-36, -17)), *(f"{q}:opt" for q in range(-36, -19))]
QPS = {"lenet-300-100": _QPS, "lenet-5": _QPS}
_W = [1e-8, 3e-8, 1e-7, 2e-7, 3e-7, 4e-7, 5e-7, 7e-7, 1e-6, 1.2e-6, 1.4e-6, 1.6e-6, 2e-6]
LAMS = {
    "weights": _W,
    "weights+bias": _W,
    "gptq": [3e-8, 5e-8, 7e-8, 1e-7, 1.5e-7, 2e-7, 3e-7, 5e-7],
    "gptq-fisher": [3e-10, 5e-10, 7e-10, 1e-9, 1.5e-9, 2e-9, 3e-9, 4e-9, 5e-9, 7e-9, 1e-8],
}
METHODS = {
    "weights": "dcz data-free",
    "weights+bias": "dcz data-free weights, calibrated biases",
    "gptq": "dcz calibrated (gptq)",
    "gptq-fisher": "dcz calibrated (gptq-fisher)",
}
FIELDS = [
    "model",
    "method",
    "setting",
    "bytes",
    "test_error",
    "val_error",
    "kept_fraction",
    "seconds",
]


def error_pct(model: torch.nn.Module, split: Split) -> float:
    """Test (or validation) error in percent: the one evaluation both methods go through."""
    return 100.0 * (1.0 - evaluate(model, split)[1])


def from_arrays(name: str, arrays: dict[str, np.ndarray]) -> torch.nn.Module:
    model = build_model(name)
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}
    )
    return model.eval()


def dcz_bytes(model: torch.nn.Module, meta: dict) -> bytes:
    # The header as the writer (and the search's sizing) normalises it.
    header = file_metadata(model, meta).to_dict()
    return to_bytes(model_tensors(model, "auto", "best"), header, coder="best")


def as_codebooks(model: torch.nn.Module) -> torch.nn.Module:
    """Install QuantizedWeight parametrizations holding exactly the model's weights: the
    distinct non-zero values of each layer as its codebook, float16 biases and codebooks
    when exact (NNCodec's values are multiples of a power-of-two step)."""
    from deep_compression.no_retrain.quantize import install_quantized_
    from deep_compression.prune import prunable_layers

    for layer in prunable_layers(model).values():
        w = layer.weight.detach().numpy().astype(np.float64)
        mask = w != 0
        values = np.unique(w[mask])
        idx = np.where(mask, np.searchsorted(values, w), 0)
        install_quantized_(layer, values, idx.reshape(-1), mask.reshape(-1), w.shape)
    return model


def run_nncodec(
    name: str,
    dense: torch.nn.Module,
    meta: dict,
    test: Split,
    nnc_python: str,
    qps: list[str],
    rows: list[dict],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dense.npz"
        np.savez(src, **{k: v.detach().numpy() for k, v in dense.state_dict().items()})
        cmd = [nnc_python, str(ROOT / "benchmarks" / "nnc_driver.py"), str(src), tmp, *qps]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"NNCodec failed:\n{proc.stderr[-2000:]}")
        for line in proc.stdout.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            with np.load(r["path"], allow_pickle=False) as f:
                model = from_arrays(name, {k: f[k] for k in f.files})
            fc_zero = sum(
                int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight")
            )
            total = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
            setting = f"qp={r['qp']}" + (" opt_qp" if r["opt_qp"] else "")
            err = error_pct(model, test)
            rows.append(
                dict(
                    model=name,
                    method="nncodec",
                    setting=setting,
                    bytes=r["bytes"],
                    test_error=err,
                    val_error="",
                    kept_fraction=1 - fc_zero / total,
                    seconds=r["seconds"],
                )
            )
            print(rows[-1], flush=True)
            # Diagnostic: NNCodec's reconstruction (its quantizer) written as a .dcz (our
            # coder): the distinct non-zero values of each weight become its codebook.
            rows.append(
                dict(
                    model=name,
                    method="nncodec quantizer, .dcz coder",
                    setting=setting,
                    bytes=len(dcz_bytes(as_codebooks(model), meta)),
                    test_error=err,
                    val_error="",
                    kept_fraction=1 - fc_zero / total,
                    seconds="",
                )
            )


def run_dcz(
    name: str,
    dense: torch.nn.Module,
    meta: dict,
    data,
    calib: torch.Tensor,
    mode: str,
    lams: list[float],
    rows: list[dict],
) -> None:
    importance = mode.removesuffix("+bias")
    for lam in lams:
        model = copy.deepcopy(dense)
        t0 = time.perf_counter()
        report = rd_quantize_(
            model,
            NoRetrainConfig(lam=lam, importance=importance),
            None if mode == "weights" else calib,
        )
        seconds = time.perf_counter() - t0
        blob = dcz_bytes(model, meta)
        arrays, _ = decode(blob)  # evaluate what the file holds, decoded by numpy
        decoded = from_arrays(name, arrays)
        rows.append(
            dict(
                model=name,
                method=METHODS[mode],
                setting=f"lam={lam:g}",
                bytes=len(blob),
                test_error=error_pct(decoded, data.test),
                val_error=round(error_pct(decoded, data.val), 3),
                kept_fraction=report.kept_fraction,
                seconds=round(seconds, 2),
            )
        )
        print(rows[-1], flush=True)


def run_search(
    name: str,
    dense: torch.nn.Module,
    meta: dict,
    data,
    calib: torch.Tensor,
    budget: float,
    rows: list[dict],
) -> None:
    for label, cal in (("calibrated", calib), ("data-free", None)):
        t0 = time.perf_counter()
        # What compress --no-retrain runs: importance "auto" (with calibration inputs:
        # gptq-fisher and weights, the smaller file), the default schedule, the noise
        # allowance of the split's size.
        dense_val = error_pct(dense, data.val)
        res = compress_without_retraining(
            dense,
            lambda m: error_pct(m, data.val),
            budget,
            calibration=cal,
            metadata=meta,
            tolerance=validation_noise(dense_val, len(data.val)),
            dense_error=dense_val,
        )
        blob = dcz_bytes(res.model, meta)
        assert len(blob) == res.file_bytes
        decoded = from_arrays(name, decode(blob)[0])
        rows.append(
            dict(
                model=name,
                method=f"dcz search {label} (val +{budget:g})",
                setting=f"{res.config.importance} lam={res.config.lam:.3g} "
                f"({len(res.trials)} trials)",
                bytes=len(blob),
                test_error=error_pct(decoded, data.test),
                val_error=round(res.val_error, 3),
                kept_fraction=res.report.kept_fraction,
                seconds=round(time.perf_counter() - t0, 1),
            )
        )
        print(rows[-1], f"dense val {res.dense_val_error:.2f}", flush=True)


def time_vgg(lam: float) -> tuple[float, float, float]:
    """Wall and CPU seconds of the data-free rd_quantize_ on VGG-16 (random init), and
    the kept fraction. CPU time too: the machine is shared, wall time depends on its load."""
    torch.manual_seed(0)
    model = build_model("vgg-16")
    t0, c0 = time.perf_counter(), time.process_time()
    report = rd_quantize_(model, NoRetrainConfig(lam=lam))
    return time.perf_counter() - t0, time.process_time() - c0, report.kept_fraction


def summary(rows: list[dict], dense_err: dict[str, float], tol: float) -> list[str]:
    lines = []
    for name, d in dense_err.items():
        lines.append(
            f"\n**{name}**: dense test error {d:.2f}%; target {d + tol:.2f}% (dense + {tol:g})\n"
        )
        lines.append("| method | smallest file within target | test error | setting |")
        lines.append("|:--|--:|--:|:--|")
        for method in dict.fromkeys(r["method"] for r in rows if r["model"] == name):
            ok = [
                r
                for r in rows
                if r["model"] == name
                and r["method"] == method
                and r["test_error"] <= d + tol + 1e-9
            ]
            if ok:
                b = min(ok, key=lambda r: r["bytes"])
                lines.append(
                    f"| {method} | {b['bytes']:,} B | {b['test_error']:.2f}% | {b['setting']} |"
                )
            else:
                lines.append(f"| {method} | none | | |")
    return lines


def plot(rows: list[dict], dense_err: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dense_err)
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for method in dict.fromkeys(r["method"] for r in rows if r["model"] == name):
            pts = sorted(
                (r["bytes"], r["test_error"])
                for r in rows
                if r["model"] == name and r["method"] == method
            )
            style = "*" if "search" in method else "o-"
            ax.plot(
                [p[0] / 1000 for p in pts],
                [p[1] for p in pts],
                style,
                label=method,
                markersize=10 if "search" in method else 4,
            )
        ax.axhline(dense_err[name], color="k", lw=0.8, ls=":", label="dense")
        ax.axhline(dense_err[name] + 0.1, color="r", lw=0.8, ls="--", label="dense + 0.1")
        ax.set_xscale("log")
        ax.set_ylim(dense_err[name] - 0.3, dense_err[name] + 1.2)
        ax.set_xlabel("file size (KB, log)")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{name}: no retraining")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lenet-300-100", "lenet-5"])
    ap.add_argument("--ckpt-dir", type=Path, default=ROOT / "runs" / "budget" / "dense")
    ap.add_argument("--data-dir", default=None, help="datasets (default: the usual search)")
    ap.add_argument("--nnc-python", default="/work/nnc-venv/bin/python")
    ap.add_argument("--budget", type=float, default=0.1, help="search budget, points")
    ap.add_argument(
        "--calibration", type=int, default=CALIBRATION_IMAGES, help="calibration images"
    )
    ap.add_argument("--vgg-lam", type=float, default=1e-9)
    ap.add_argument("--skip-vgg", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--search-only",
        action="store_true",
        help="only the dense rows and the search (writes no_retrain_search.*)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the results files (no_retrain_<tag>.*)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "no_retrain_quick" if args.quick else "no_retrain"
    stem = "no_retrain_search" if args.search_only else stem
    stem = f"{stem}_{args.tag}" if args.tag else stem
    rows: list[dict] = []
    dense_err: dict[str, float] = {}
    t_start = time.perf_counter()
    for name in args.models:
        ckpt = args.ckpt_dir / f"{name}-mnist.safetensors"
        # The validation split the checkpoint says it held out; calibration images from
        # the rest of the training images, seeded as the CLI does.
        recipe = starting_recipe(ckpt, log=lambda *a: None)
        data = carve_validation(load_data(recipe.dataset, args.data_dir), recipe.validation)
        calib = calibration_batch(data.train, args.calibration, recipe.seed)
        dense, meta = load_model(ckpt)
        meta = {"model": meta.model.to_dict(), "dataset": meta.dataset or "mnist"}
        dense_err[name] = error_pct(dense, data.test)
        rows.append(
            dict(
                model=name,
                method="dense float32",
                setting="",
                bytes=4 * sum(p.numel() for p in dense.state_dict().values()),
                test_error=dense_err[name],
                val_error=round(error_pct(dense, data.val), 3),
                kept_fraction=1.0,
                seconds=0,
            )
        )
        if not args.search_only:
            qps = QPS[name][::4] if args.quick else QPS[name]
            run_nncodec(name, dense, meta, data.test, args.nnc_python, qps, rows)
            for mode, lams in LAMS.items():
                run_dcz(
                    name, dense, meta, data, calib, mode, lams[::3] if args.quick else lams, rows
                )
        if not args.quick:
            run_search(name, dense, meta, data, calib, args.budget, rows)
    vgg = None if args.skip_vgg or args.quick or args.search_only else time_vgg(args.vgg_lam)
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    md = [
        "# Compression without retraining: .dcz vs NNCodec\n",
        f"`{' '.join(sys.argv)}`; {time.perf_counter() - t_start:.0f} s; "
        f"{machine.cpu_name()}, load {machine.load_average()}, {args.threads} thread(s).\n",
        "Bytes: the whole file (.dcz: `coder=best`, `gap_bits=auto`, header included; "
        "NNCodec: its bitstream). Test error of the decoded model; validation error on "
        "the split the checkpoint held out (the searches decide on it).\n",
        *summary([r for r in rows if r["method"] != "dense float32"], dense_err, 0.1),
        "",
        "## All points\n",
        "| model | method | setting | bytes | test error | val error | kept |",
        "|:--|:--|:--|--:|--:|--:|--:|",
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {r['method']} | {r['setting']} | {r['bytes']:,} | "
            f"{r['test_error']:.2f}% | {r['val_error']} | {r['kept_fraction']:.3f} |"
        )
    if vgg is not None:
        md.append(
            f"\nVGG-16 shapes (random init, data-free, lam={args.vgg_lam:g}): "
            f"rd_quantize_ took {vgg[0]:.1f} s wall, {vgg[1]:.1f} s CPU "
            f"({vgg[2]:.3f} of the weights kept; load {machine.load_average()})."
        )
    (RESULTS / f"{stem}.md").write_text("\n".join(md) + "\n")
    plot(rows, dense_err, RESULTS / f"{stem}.png")
    print("\n".join(md))


if __name__ == "__main__":
    main()
