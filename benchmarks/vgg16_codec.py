"""The codec at the paper's largest scale, end to end: VGG-16 pruned, quantized, encoded, decoded.

Deep Compression's biggest result is VGG-16: 138M parameters, 552 MB -> 11.3 MB (49x).
No ImageNet weights are on hand, so this script builds the real architecture
(``build_model("vgg-16")``, ImageNet shapes, 138,357,544 parameters) and gives it random
weights with a realistic distribution, then runs the project's own stages on it:

1. **init**: every weight Laplace-distributed with the He-normal standard deviation of
   its layer, ``sqrt(2 / fan_in)`` (so the Laplace scale is ``sqrt(1 / fan_in)``); biases
   normal with std 0.01. Why Laplace: trained conv and fc weights are peaked at zero with
   heavier tails than a normal (Han et al. 2015, Fig. 4 show it for AlexNet; Laplace is
   the usual model in the quantization literature), and the tails are what the paper's
   linear centroid initialisation is about. Why He's scale: it is the variance a trained
   ReLU network keeps per layer to order of magnitude. Time and memory depend on counts,
   not values; the values only move the entropy-coded sizes a little.
2. **prune_**: magnitude pruning (``KeepFraction``) to the paper's per-layer kept
   fractions (Han et al. 2015, Table 5: conv 22%-58%, fc6/fc7 4%, fc8 23%; 7.5% overall).
3. **k-means on fc6 alone**: the ~4.1M surviving fc6 weights, 32 clusters, for each
   initialisation (linear, density, forgy, optimal via ``kmeans1d``), with the squared
   error of each relative to the optimal one.
4. **quantize_**: conv 8 bits, fc 5 bits, linear initialisation, Lloyd to its fixed point;
   no centroid fine-tuning (there is no data).
5. **encode_model**: the ``.dcz`` file with Huffman (the paper) and with ANS, each verified
   bit for bit against the model by ``encode_model`` itself.
6. **decode** (numpy only, ``deep_compression.dcz.decode``) and **load_dcz** into torch,
   dense and ``sparse=True``, each in a fresh subprocess, so its peak memory is its own.

Per phase: wall and CPU seconds (CPU includes the kernel's page-fault work; the machine is
shared, so CPU time is the steadier figure), the peak resident set size (``VmHWM`` from
``/proc/self/status``, reset at the start of the phase by writing ``5`` to
``/proc/self/clear_refs``) as a multiple of the dense float32 model (553,430,176 bytes),
both absolute and above the RSS the phase started from (the main process holds the model
between phases), and for the numpy-only decoder the tracemalloc peak (numpy reports its
buffers to tracemalloc; torch does not, so it is not used on torch phases).

Targets from the issue: decode to dense arrays < 10 s, encode < 60 s, peak memory < 3x the
dense model, k-means on fc6 in seconds.

    .venv/bin/python benchmarks/vgg16_codec.py                 # ~75 s here (35 s: optimal k-means)
    .venv/bin/python benchmarks/vgg16_codec.py --profile runs/vgg/prof   # cProfile each phase
    .venv/bin/python benchmarks/vgg16_codec.py --baseline benchmarks/results/vgg16_codec_before.csv

``vgg16_codec_before.{md,csv}`` is this script run on the code before the issue-7 hot-spot
fixes (an exported copy of that commit's ``src/`` first on ``PYTHONPATH``); its ``.md``
gives the exact command.

``--threads`` defaults to 1 (the machine is shared). Results go to
``benchmarks/results/vgg16_codec.{md,csv}`` (``--results DIR``, ``--name``); with
``--profile`` nothing is saved there (profiled times are not the real ones): the top
functions of each phase are printed and the ``.prof`` files written to the given folder.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import datetime as dt
import inspect
import io
import json
import os
import pstats
import shlex
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_name, load_average  # benchmarks/machine.py

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
DENSE_PARAMS = 138_357_544
DENSE_BYTES = 4 * DENSE_PARAMS  # float32: the paper's "552 MB"

# Kept fraction per layer after pruning: Han et al. 2015, Table 5 (the same list as
# benchmarks/dcz_speed.py's VGG16).
KEEP = {
    "conv1_1": 0.58, "conv1_2": 0.22, "conv2_1": 0.34, "conv2_2": 0.36,
    "conv3_1": 0.53, "conv3_2": 0.24, "conv3_3": 0.42, "conv4_1": 0.32,
    "conv4_2": 0.27, "conv4_3": 0.34, "conv5_1": 0.35, "conv5_2": 0.29,
    "conv5_3": 0.36, "fc6": 0.04, "fc7": 0.04, "fc8": 0.23,
}  # fmt: skip
BITS = {"*": 5, "conv*": 8}  # the paper's: conv 8, fc 5
KMEANS_INITS = ("linear", "density", "forgy", "optimal")


# --------------------------------------------------------------------------- measuring


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak() -> None:
    """Make VmHWM restart from the current RSS (Linux: ``echo 5 > clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(
    fn: Callable[[], Any], profile: Path | None = None, name: str = "", repeats: int = 1
) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` ``repeats`` times: median (and range) of its wall and CPU seconds, the
    RSS before the first run and the peak RSS over all runs. Returns the last result."""
    _reset_peak()
    start_rss = _status()["VmRSS"]
    prof = cProfile.Profile() if profile else None
    walls, cpus = [], []
    result = None
    for _ in range(repeats):
        result = None  # free the previous run's output before the next run
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        result = fn()
        if prof:
            prof.disable()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    peak = _status()["VmHWM"]
    if prof and profile:
        profile.mkdir(parents=True, exist_ok=True)
        stem = name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        prof.dump_stats(str(profile / f"{stem}.prof"))
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
        body = text.getvalue()
        print(f"--- profile of {name} (by own time)\n{body[body.find('ncalls') - 3 :]}")
    return result, {
        "runs": repeats,
        "wall_s": statistics.median(walls),
        "wall_min": min(walls),
        "wall_max": max(walls),
        "cpu_s": statistics.median(cpus),
        "start_rss": start_rss,
        "peak_rss": peak,
    }


def code_version() -> str:
    """Which deep_compression ran: its folder, and the git commit it is (or is near)."""
    import deep_compression

    where = Path(deep_compression.__file__).resolve().parent
    if not where.is_relative_to(ROOT / "src"):
        return f"{where} (not this checkout's src/, e.g. an exported older version)"
    try:
        git = ["git", "-C", str(ROOT)]
        sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return str(where)
    state = "with uncommitted changes in src/" if dirty else "clean"
    return f"{where} (repository at {sha}, {state})"


# --------------------------------------------------------------------------- workers
#
# Decoding and loading each run in a fresh interpreter, so the peak RSS is the phase's
# own (plus the interpreter and its imports, reported as the start RSS). The decode worker
# never imports torch: that is the numpy-only decoder's real footprint.


def worker(kind: str, path: str, threads: int, repeats: int) -> dict[str, Any]:
    if kind in ("decode", "decode-tracemalloc"):
        from deep_compression.dcz import decode

        if kind == "decode":
            arrays, stats = measure(lambda: decode(path)[0], repeats=repeats)
        else:
            tracemalloc.start()
            arrays = decode(path)[0]
            stats = {"tracemalloc_peak": tracemalloc.get_traced_memory()[1]}
            tracemalloc.stop()
        stats["values"] = int(sum(a.size for a in arrays.values()))
        stats["torch_imported"] = "torch" in sys.modules
        return stats
    import torch

    from deep_compression.loading import load_dcz
    from deep_compression.sparse import sparse_layers

    torch.set_num_threads(threads)
    (model, _), stats = measure(
        lambda: load_dcz(path, sparse=True) if kind == "load-sparse" else load_dcz(path),
        repeats=repeats,
    )
    stats["sparse_layers"] = {n: round(m.density, 4) for n, m in sparse_layers(model).items()}
    # What the model holds: parameters and buffers (the CSR arrays are buffers).
    stats["model_bytes"] = sum(
        t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]
    )
    # A cheap check that the loaded model is the file's: fc8 on a fixed input.
    x = torch.linspace(-1, 1, 4096).unsqueeze(0)
    with torch.inference_mode():
        stats["fc8_checksum"] = float(model.fc8(x).double().sum())
    return stats


def run_worker(kind: str, path: Path, threads: int, repeats: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, str(path), "--threads", str(threads)]
    cmd += ["--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- stages


def init_weights_(model, seed: int) -> None:
    """Laplace weights with each layer's He-normal std; small normal biases. In place.

    Inverse-CDF sampling as ``torch.distributions.Laplace`` does it (``u`` uniform in
    ``(-1, 1)``, ``w = -b * sign(u) * log(1 - |u|)``), but in place, with one temporary
    the size of the layer instead of four.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    eps = torch.finfo(torch.float32).eps  # keeps |u| < 1, so the log stays finite
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                # std of Laplace(0, b) is b * sqrt(2); He-normal std is sqrt(2 / fan_in).
                scale = (1.0 / fan_in) ** 0.5
                w = module.weight.uniform_(eps - 1.0, 1.0, generator=gen)
                sign = torch.sign(w)
                w.abs_().neg_().log1p_().mul_(-scale).mul_(sign)
                del sign
                module.bias.normal_(0.0, 0.01, generator=gen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coders", nargs="+", default=["huffman", "ans"])
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each repeatable phase (encode, decode, load, k-means but optimal); "
        "the table gives the median (default 3)",
    )
    parser.add_argument(
        "--kmeans-inits",
        nargs="*",
        default=list(KMEANS_INITS),
        help="initialisations timed on fc6 alone (none: skip)",
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "vgg")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--name", default="vgg16_codec")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="CSV",
        help="an earlier run's CSV: adds its wall/CPU seconds per phase as 'before' columns",
    )
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.threads, args.repeats)))
        return

    import torch

    from deep_compression.encode import EncodeConfig, encode_model
    from deep_compression.loading import load_dcz
    from deep_compression.models import build_model, count_parameters
    from deep_compression.prune import KeepFraction, prune_
    from deep_compression.quantize import QuantizeConfig, quantize_
    from deep_compression.quantize.kmeans import inertia, kmeans_1d
    from deep_compression.table import format_table

    torch.set_num_threads(args.threads)
    command = "python benchmarks/vgg16_codec.py " + shlex.join(sys.argv[1:])
    started = dt.datetime.now(dt.UTC)
    load_start, t_start = load_average(), time.perf_counter()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    def record(phase: str, stats: dict[str, Any], note: str = "", **extra: Any) -> None:
        row = {
            "phase": phase,
            "runs": stats["runs"],
            "wall_s": round(stats["wall_s"], 2),
            "wall_range": f"{stats['wall_min']:.2f}-{stats['wall_max']:.2f}",
            "cpu_s": round(stats["cpu_s"], 2),
            "start_rss_mb": round(stats["start_rss"] / 1e6),
            "peak_rss_mb": round(stats["peak_rss"] / 1e6),
            "peak_x_dense": round(stats["peak_rss"] / DENSE_BYTES, 2),
            "phase_x_dense": round((stats["peak_rss"] - stats["start_rss"]) / DENSE_BYTES, 2),
            "tracemalloc_x_dense": extra.pop("tracemalloc_x_dense", ""),
            "note": note,
            "load": load_average().split("/")[0],
        }
        rows.append(row)
        print(
            f"{phase:<34} wall {row['wall_s']:7.2f} s  cpu {row['cpu_s']:7.2f} s  "
            f"peak RSS {row['peak_rss_mb']:6,} MB = {row['peak_x_dense']:.2f}x dense "
            f"({row['phase_x_dense']:+.2f}x in phase)  {note}",
            flush=True,
        )

    def phase(name: str, fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, dict[str, Any]]:
        return measure(fn, args.profile, name, repeats)

    # 1. the model
    def build():
        model = build_model("vgg-16")
        init_weights_(model, args.seed)
        return model

    model, stats = phase("build + Laplace init", build)
    assert count_parameters(model) == DENSE_PARAMS
    record("build + Laplace init", stats, f"{DENSE_PARAMS:,} parameters")

    # 2. pruning
    report, stats = phase(
        "prune_", lambda: prune_(model, {n: KeepFraction(k) for n, k in KEEP.items()})
    )
    kept = f"{report.kept:,} of {report.weights:,} weights kept ({100 * report.kept_fraction:.2f}%)"
    record("prune_ (KeepFraction, paper's densities)", stats, kept)

    # 3. k-means on fc6's survivors alone
    if args.kmeans_inits:
        with torch.no_grad():
            fc6 = model.fc6.weight[model.fc6.parametrizations.weight[0].mask]
        x = fc6.double().numpy()
        del fc6
        best = None
        results = {}
        for init in args.kmeans_inits:
            (centroids, labels), stats = phase(
                f"k-means fc6 {init}",
                lambda init=init: kmeans_1d(x, 32, init=init),
                1 if init == "optimal" else args.repeats,  # optimal: about a minute
            )
            sse = inertia(x, centroids, labels)
            results[init] = (stats, sse)
            best = sse if best is None else min(best, sse)
        for init, (stats, sse) in results.items():
            note = f"{x.size:,} weights, k=32, squared error {sse / best:.4f}x the best"
            record(f"k-means fc6 ({init})", stats, note)
        del x

    # 4. quantization
    config = QuantizeConfig(bits=BITS, init="linear")
    _, stats = phase("quantize_", lambda: quantize_(model, config))
    record("quantize_ (conv 8, fc 5 bits, linear)", stats, "k-means per layer, no fine-tuning")

    # 5. encoding
    meta = {"model": {"name": "vgg-16", "kwargs": {}}, "note": "random Laplace weights"}
    files = {}
    for coder in args.coders:
        path = args.work_dir / f"vgg16-{coder}.dcz"
        rep, stats = phase(
            f"encode_model {coder}",
            lambda path=path, coder=coder: encode_model(
                model, path, EncodeConfig(coder=coder), metadata=meta
            ),
            args.repeats,
        )
        files[coder] = (path, rep)
        record(
            f"encode_model ({coder}, + verify)",
            stats,
            f"{rep.file_bytes:,} bytes, {rep.rate:.1f}x; without verify {rep.seconds:.2f} s",
        )
    model = None  # free it: the decoding phases run in their own processes anyway

    # 6. decoding, each in a fresh process
    for coder, (path, _) in files.items():
        st = run_worker("decode", path, args.threads, args.repeats)
        tm = run_worker("decode-tracemalloc", path, args.threads, 1)
        assert st["values"] == DENSE_PARAMS and not st["torch_imported"]
        record(
            f"decode ({coder}, numpy only)",
            st,
            f"{path.stat().st_size:,} bytes -> {st['values']:,} float32 values",
            tracemalloc_x_dense=round(tm["tracemalloc_peak"] / DENSE_BYTES, 2),
        )
    first_path = next(iter(files.values()))[0]
    checks = set()
    kinds = ["load"]
    if "sparse" in inspect.signature(load_dcz).parameters:  # not in code before issue 7
        kinds.append("load-sparse")
    for kind in kinds:
        st = run_worker(kind, first_path, args.threads, args.repeats)
        checks.add(round(st["fc8_checksum"], 3))
        layers = ", ".join(f"{n} {100 * d:.0f}%" for n, d in st["sparse_layers"].items())
        note = f"model holds {st['model_bytes'] / DENSE_BYTES:.2f}x dense"
        if layers:
            note += f"; CSR: {layers}"
        record(f"load_dcz ({'sparse=True' if kind == 'load-sparse' else 'dense'}, torch)",
               st, note)  # fmt: skip
    assert len(checks) == 1, f"dense and sparse loads disagree on fc8: {checks}"

    # ------------------------------------------------------------------ report
    headers = ["phase", "runs", "wall s", "wall range", "CPU s", "start RSS MB", "peak RSS MB",
               "peak / dense", "phase peak / dense", "tracemalloc / dense", "note"]  # fmt: skip
    keys = ["phase", "runs", "wall_s", "wall_range", "cpu_s", "start_rss_mb", "peak_rss_mb",
            "peak_x_dense", "phase_x_dense", "tracemalloc_x_dense", "note"]  # fmt: skip
    baseline = {}
    if args.baseline:
        with open(args.baseline) as f:
            baseline = {r["phase"]: r for r in csv.DictReader(f)}
        headers[5:5] = ["wall s before", "CPU s before"]
    table_rows = []
    for r in rows:
        cells = [r[k] for k in keys]
        if args.baseline:
            b = baseline.get(r["phase"], {})
            cells[5:5] = [b.get("wall_s", "-"), b.get("cpu_s", "-")]
        table_rows.append(cells)
    table = format_table(headers, table_rows)

    def get(prefix: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["phase"].startswith(prefix)]

    decode_max = max(r["wall_s"] for r in get("decode"))
    encode_max = max(r["wall_s"] for r in get("encode_model"))
    fresh = get("decode") + get("load_dcz")
    encodes = get("encode_model")
    enc_start = max(r["start_rss_mb"] for r in encodes) * 1e6 / DENSE_BYTES
    enc_add = max(r["phase_x_dense"] for r in encodes)
    enc_abs = max(r["peak_x_dense"] for r in encodes)
    kmeans_lines = [f"{r['phase']}: {r['wall_s']} s" for r in get("k-means")]
    sizes = [
        f"{coder}: {rep.file_bytes:,} bytes = {rep.file_bytes / 1e6:.2f} MB, rate "
        f"{rep.rate:.1f}x over float32 ({rep.original_bytes:,} bytes)"
        for coder, (_, rep) in files.items()
    ]
    summary = [
        f"- files: {'; '.join(sizes)} (paper, trained weights: 552 MB -> 11.3 MB, 49x)",
        f"- decode to dense arrays: slowest {decode_max:.2f} s wall (target < 10 s)",
        f"- encode (with verification): slowest {encode_max:.2f} s wall (target < 60 s)",
        "- peak RSS in a fresh process (target < 3x dense): "
        + "; ".join(f"{r['phase']} {r['peak_x_dense']:.2f}x" for r in fresh),
        "- encoding runs in the process that holds the quantized model "
        f"({enc_start:.2f}x dense before encoding: float originals, int8/int16 indices, bool "
        f"masks); encoding adds at most {enc_add:.2f}x at its peak ({enc_abs:.2f}x in all)",
        f"- k-means on fc6 alone: {'; '.join(kmeans_lines) or 'not run'}",
    ]
    header = [
        "# VGG-16 codec at scale (vgg16_codec)",
        "",
        f"- command: `{command}`",
        f"- date (UTC): {started:%Y-%m-%d %H:%M}",
        f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
        f"numpy {np.__version__}; torch threads {args.threads}",
        f"- code: {code_version()}",
        f"- load average (1/5/15 min) at start: {load_start}; at end: {load_average()}; "
        f"total {time.perf_counter() - t_start:.0f} s",
        f"- dense float32 model: {DENSE_PARAMS:,} parameters = {DENSE_BYTES:,} bytes; "
        "'peak / dense' = peak RSS / that; 'phase peak / dense' = (peak RSS - RSS at the "
        "phase's start) / that",
        "- weights: Laplace with each layer's He std sqrt(2/fan_in), seed "
        f"{args.seed}; pruned to Han et al. 2015 Table 5's kept fractions; conv 8 / fc 5 bits",
        "- times: median of 'runs' runs (the range is min-max); build, prune_ and quantize_ "
        "change the model, so they run once",
    ]
    if args.baseline:
        header.append(
            f"- 'before' columns: median wall and CPU seconds of the same phase in "
            f"{args.baseline.name} (an earlier run of this script; its .md says which code)"
        )
    header.append("")
    text = "\n".join([*header, *summary, "", table, ""])
    print()
    print(text)
    if args.profile:
        print(f"(profiled run: results not saved; .prof files in {args.profile})")
        return
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text(text)
    with open(args.results / f"{args.name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"saved {args.results / args.name}.md and .csv")


if __name__ == "__main__":
    main()
