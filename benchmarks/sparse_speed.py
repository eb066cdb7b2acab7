"""Dense vs sparse (CSR) fully connected layers on this CPU: is batch 1 faster when pruned?

Deep Compression (Han et al. 2016, section 6.3) reports that pruned fully connected layers
run about 3x faster at batch size 1 as sparse matrix-vector products (VGG-16 fc6 on their
CPU: 35,023 us dense vs 3,774 us sparse), and that dense wins again at batch 64. This
script measures the same thing here:

- ``layers`` (default): the VGG-16 and AlexNet fc6/fc7/fc8 shapes at 4%, 7%, 10% density
  and at the paper's own density for that layer, batch sizes 1, 8, 64, with torch's
  default thread count and with 1 thread. Dense is ``torch.nn.functional.linear`` with the
  pruned weight as an ordinary float32 tensor (zeros included); sparse is
  :class:`deep_compression.sparse.SparseLinear` (CSR, int32 indices, ``torch.addmm``).
- ``breakeven`` (default): one 4096x4096 and one 300x784 layer from 5% to 50% density:
  where sparse stops paying, which is what ``sparsify_(min_sparsity=...)`` is about.
- ``models`` (default): LeNet-300-100 pruned to the paper's 8% / 9% / 26% and LeNet-5 to
  66% / 12% / 8% / 19% (random masks: time does not depend on the values), whole forward
  pass, dense vs ``sparsify_``; ``--vgg16-model`` adds VGG-16 (fc 4% / 4% / 23%, slow).
- ``--kernels``: the candidate kernels at one shape (CSR int32 / int64, COO, CSC, dense @
  CSR of the transpose, and scipy.sparse if installed), the measurements behind the
  choice of kernel in :mod:`deep_compression.sparse`.

Timing: every callable of a group (dense and each density) is warmed up, then called in
rotation, one sample each per round, so a change in machine load hits all of them alike;
a sample of a fast callable is the mean of enough back-to-back calls to last ~1 ms.
Reported: median, inter-quartile range and minimum (microseconds), and speedup = dense
median / sparse median. The machine's load average and the thread count are written
with the results: other jobs on the same cores make every number slower and noisier, so
re-run when the machine is quiet. Each sparse layer's output is checked against the dense
one (largest absolute difference, relative to the largest output).

    .venv/bin/python benchmarks/sparse_speed.py                        # 2-3 minutes here
    .venv/bin/python benchmarks/sparse_speed.py --repeats 51 --threads 1 2 --name quiet
    .venv/bin/python benchmarks/sparse_speed.py --only layers --shapes vgg16-fc6 --batches 1
    .venv/bin/python benchmarks/sparse_speed.py --only kernels --kernel-shape vgg16-fc6

Writes ``benchmarks/results/<name>.md`` (all tables, with the machine and the command),
``<name>_layers.csv``, ``<name>_breakeven.csv``, ``<name>_models.csv``,
``<name>_kernels.csv`` (for the parts that ran) and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu_name, load_average  # benchmarks/machine.py
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.models import build_model
from deep_compression.prune.mask import PruningMask
from deep_compression.sparse import SparseLinear, sparsify_
from deep_compression.table import format_table

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (out_features, in_features, kept fraction after pruning in the paper):
# AlexNet fc6 / fc7 / fc8 9% / 9% / 25%, VGG-16 4% / 4% / 23% (Han et al. 2015, 2016).
SHAPES: dict[str, tuple[int, int, float]] = {
    "vgg16-fc6": (4096, 25088, 0.04),
    "vgg16-fc7": (4096, 4096, 0.04),
    "vgg16-fc8": (1000, 4096, 0.23),
    "alexnet-fc6": (4096, 9216, 0.09),
    "alexnet-fc7": (4096, 4096, 0.09),
    "alexnet-fc8": (1000, 4096, 0.25),
}
BREAKEVEN_SHAPES = {"vgg16-fc7": (4096, 4096), "lenet300-fc1": (300, 784)}
BREAKEVEN_DENSITIES = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50)
# Paper's kept fractions per prunable layer, in module order (PAPER.md).
MODEL_DENSITIES = {
    "lenet-300-100": {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26},
    "lenet-5": {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19},
    "vgg-16": {"fc6": 0.04, "fc7": 0.04, "fc8": 0.23},
}
MODEL_INPUT = {"lenet-300-100": (1, 28, 28), "lenet-5": (1, 28, 28), "vgg-16": (3, 224, 224)}
PAPER_FC6 = (35_023.0, 3_774.0)  # us, dense and sparse, VGG-16 fc6, batch 1, their CPU


# --------------------------------------------------------------------------- timing


def _calls_per_sample(fn: Callable[[], object], target_s: float = 1e-3) -> int:
    """Back-to-back calls per sample so one sample lasts about ``target_s``."""
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    return max(1, min(1000, int(target_s / max(once, 1e-7))))


def interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int,
    max_seconds: float,
    min_repeats: int = 5,
) -> dict[str, list[float]]:
    """Seconds per call of each function: ``repeats`` samples each, taken in rotation.

    Rounds stop early (but not before ``min_repeats``) once ``max_seconds`` have gone.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    number = {k: _calls_per_sample(fn) for k, fn in fns.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    start = time.perf_counter()
    for r in range(repeats):
        # Rotate the order so no callable always runs right after the same other one.
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            fn, n = fns[k], number[k]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[k].append((time.perf_counter() - t0) / n)
        if r + 1 >= min_repeats and time.perf_counter() - start > max_seconds:
            break
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    """Median, quartiles and minimum in microseconds."""
    us = sorted(s * 1e6 for s in samples)
    q1, _, q3 = statistics.quantiles(us, n=4, method="inclusive") if len(us) > 1 else us * 3
    return {"median": statistics.median(us), "q1": q1, "q3": q3, "min": us[0], "n": len(us)}


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest reference output."""
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


# --------------------------------------------------------------------------- data


def random_pruned(
    out_f: int, in_f: int, density: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(out, in)`` float32 weight with Bernoulli(``density``) kept entries, and a bias."""
    keep = torch.rand(out_f, in_f, generator=gen) < density
    weight = torch.randn(out_f, in_f, generator=gen).mul_(in_f**-0.5).mul_(keep)
    return weight, torch.randn(out_f, generator=gen).mul_(0.1)


def as_layers(weight: torch.Tensor, bias: torch.Tensor) -> tuple[SparseLinear, float]:
    """The SparseLinear of ``weight`` and its output error against the dense product."""
    sparse = SparseLinear(weight, bias)
    x = torch.randn(8, weight.shape[1], generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return sparse, rel_error(sparse(x), F.linear(x, weight, bias))


# --------------------------------------------------------------------------- parts


def run_layers(args: argparse.Namespace, threads: list[int]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for shape_name in args.shapes:
        out_f, in_f, paper = SHAPES[shape_name]
        densities = sorted(set(args.densities) | (set() if args.no_paper_density else {paper}))
        gen = torch.Generator().manual_seed(args.seed)
        layers: dict[float, tuple[SparseLinear, float]] = {}
        dense_weight: torch.Tensor | None = None
        for d in densities:
            weight, bias = random_pruned(out_f, in_f, d, gen)
            layers[d] = as_layers(weight, bias)
            if dense_weight is None:
                # The dense product's time does not depend on the values, so one dense
                # weight (the sparsest one, stored densely) serves every density.
                dense_weight, dense_bias = weight, bias
            del weight
        for t in threads:
            torch.set_num_threads(t)
            for batch in args.batches:
                x = torch.randn(batch, in_f, generator=gen)
                fns: dict[str, Callable[[], object]] = {
                    "dense": partial(F.linear, x, dense_weight, dense_bias)
                }
                for d, (layer, _) in layers.items():
                    fns[f"{d}"] = partial(layer, x)
                before = load_average()
                with torch.inference_mode():
                    samples = interleaved(
                        fns, repeats=args.repeats, warmup=args.warmup, max_seconds=args.max_seconds
                    )
                dense = summary(samples["dense"])
                for d, (layer, err) in layers.items():
                    sp = summary(samples[f"{d}"])
                    row = {
                        "layer": shape_name,
                        "out": out_f,
                        "in": in_f,
                        "density_pct": round(100 * d, 1),
                        "paper_density": d == paper,
                        "nnz": layer.nnz,
                        "batch": batch,
                        "threads": t,
                        **comparison(dense, sp, err, before),
                    }
                    rows.append(row)
                    print(
                        f"{shape_name:12s} {100 * d:4.1f}% batch {batch:2d} threads {t}: "
                        f"dense {dense['median']:9.0f} us  sparse {sp['median']:9.0f} us  "
                        f"{row['speedup']:6.2f}x  (load {row['load']})",
                        flush=True,
                    )
        del layers, dense_weight
    return rows


def comparison(
    dense: dict[str, float], sparse: dict[str, float], err: float, load_before: str
) -> dict[str, object]:
    """The result columns shared by the layer and model tables: both summaries in us, the
    speedups, the output error and the load average around the measurement."""
    return {
        "repeats": sparse["n"],
        **{f"dense_{k}_us": round(v, 1) for k, v in dense.items() if k != "n"},
        **{f"sparse_{k}_us": round(v, 1) for k, v in sparse.items() if k != "n"},
        "speedup": round(dense["median"] / sparse["median"], 3),
        # Ratio of the fastest samples: what a quiet machine would approach.
        "speedup_of_min": round(dense["min"] / sparse["min"], 3),
        "rel_err": f"{err:.1e}",
        "load": f"{load_before} -> {load_average()}",
    }


def run_breakeven(args: argparse.Namespace, threads: list[int]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, (out_f, in_f) in BREAKEVEN_SHAPES.items():
        gen = torch.Generator().manual_seed(args.seed)
        layers = {d: as_layers(*random_pruned(out_f, in_f, d, gen))[0] for d in BREAKEVEN_DENSITIES}
        weight, bias = random_pruned(out_f, in_f, 1.0, gen)
        for t in threads:
            torch.set_num_threads(t)
            for batch in sorted({1, max(args.batches)}):
                x = torch.randn(batch, in_f, generator=gen)
                fns: dict[str, Callable[[], object]] = {"dense": partial(F.linear, x, weight, bias)}
                for d, layer in layers.items():
                    fns[f"{d}"] = partial(layer, x)
                before = load_average()
                with torch.inference_mode():
                    samples = interleaved(
                        fns, repeats=args.repeats, warmup=args.warmup, max_seconds=args.max_seconds
                    )
                dense = summary(samples["dense"])
                row: dict[str, object] = {
                    "layer": f"{name} {out_f}x{in_f}",
                    "batch": batch,
                    "threads": t,
                    "dense_us": round(dense["median"], 1),
                }
                for d in layers:
                    row[f"{100 * d:.0f}%"] = round(
                        dense["median"] / summary(samples[f"{d}"])["median"], 2
                    )
                row["load"] = f"{before} -> {load_average()}"
                rows.append(row)
                print("breakeven", row, flush=True)
    return rows


def pruned_model(name: str, seed: int) -> nn.Module:
    """``name`` with random masks at the paper's kept fractions, then made plain.

    The masks are removed again (``leave_parametrized=True``: the weights keep their
    zeros), so the dense model pays nothing for the mask multiply and is the fair
    baseline; ``sparsify_`` then finds the layers by their exact zeros.
    """
    torch.manual_seed(seed)
    model = build_model(name).eval()
    gen = torch.Generator().manual_seed(seed)
    for layer_name, density in MODEL_DENSITIES[name].items():
        layer = model.get_submodule(layer_name)
        n = layer.weight.numel()
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=gen)[: round(density * n)]] = True
        parametrize.register_parametrization(
            layer, "weight", PruningMask(keep.view_as(layer.weight)), unsafe=True
        )
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return model


def run_models(args: argparse.Namespace, threads: list[int]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    names = ["lenet-300-100", "lenet-5"] + (["vgg-16"] if args.vgg16_model else [])
    for name in names:
        dense = pruned_model(name, args.seed)
        sparse = sparsify_(copy.deepcopy(dense), min_sparsity=args.min_sparsity)
        swapped = [n for n, m in sparse.named_modules() if isinstance(m, SparseLinear)]
        batches = [1] if name == "vgg-16" else sorted({1, max(args.batches)})
        for t in threads:
            torch.set_num_threads(t)
            for batch in batches:
                x = torch.randn(
                    batch, *MODEL_INPUT[name], generator=torch.Generator().manual_seed(2)
                )
                before = load_average()
                with torch.inference_mode():
                    err = rel_error(sparse(x), dense(x))
                    samples = interleaved(
                        {"dense": partial(dense, x), "sparse": partial(sparse, x)},
                        repeats=min(args.repeats, 11) if name == "vgg-16" else args.repeats,
                        warmup=1 if name == "vgg-16" else args.warmup,
                        max_seconds=args.max_seconds,
                        min_repeats=3 if name == "vgg-16" else 5,
                    )
                d, s = summary(samples["dense"]), summary(samples["sparse"])
                row = {
                    "model": name,
                    "kept": " / ".join(f"{100 * v:g}%" for v in MODEL_DENSITIES[name].values()),
                    "sparse_layers": " ".join(swapped),
                    "batch": batch,
                    "threads": t,
                    **comparison(d, s, err, before),
                }
                rows.append(row)
                print("model", row, flush=True)
    return rows


def kernel_candidates(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    shipped: SparseLinear,
    csr64: torch.Tensor,
    coo: torch.Tensor,
    csc: torch.Tensor,
    csr_t: torch.Tensor,
    sp_w: object | None,
) -> dict[str, Callable[[], torch.Tensor]]:
    """Ways to compute ``x @ W.T + bias`` (``x`` is ``(N, in)``), each returning ``(N, out)``."""
    xt = x.t().contiguous()  # (in, N)
    b = bias.unsqueeze(1)
    csr32 = shipped.weight
    fns: dict[str, Callable[[], torch.Tensor]] = {
        "dense F.linear": lambda: F.linear(x, weight, bias),
        "SparseLinear (shipped)": lambda: shipped(x),
        "CSR int32 addmm": lambda: torch.addmm(b, csr32, xt).t(),
        "CSR int64 addmm": lambda: torch.addmm(b, csr64, xt).t(),
    }
    if x.shape[0] == 1:
        fns["CSR int32 addmv"] = lambda: torch.addmv(bias, csr32, x[0]).unsqueeze(0)
        fns["CSR int64 addmv"] = lambda: torch.addmv(bias, csr64, x[0]).unsqueeze(0)
    fns.update({
        "COO sparse.mm": lambda: torch.sparse.mm(coo, xt).t() + bias,
        "CSC mm": lambda: torch.mm(csc, xt).t() + bias,
        "dense @ CSR(W.T)": lambda: torch.mm(x, csr_t) + bias,
    })  # fmt: skip
    if sp_w is not None:
        xt_np = xt.numpy()
        fns["scipy CSR @ x.T"] = lambda: torch.from_numpy(sp_w @ xt_np).t() + bias  # type: ignore
    return fns


def run_kernels(args: argparse.Namespace, threads: list[int]) -> list[dict[str, object]]:
    """Every CPU kernel torch (and scipy, if installed) offers for ``W_sparse @ x``."""
    out_f, in_f, _ = SHAPES[args.kernel_shape]
    gen = torch.Generator().manual_seed(args.seed)
    weight, bias = random_pruned(out_f, in_f, args.kernel_density, gen)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support")
        csr64 = weight.to_sparse_csr()
        coo = weight.to_sparse().coalesce()
        csc = weight.to_sparse_csc()
        csr_t = weight.t().contiguous().to_sparse_csr()
    shipped = SparseLinear(weight, bias)
    try:
        import scipy.sparse

        sp_w = scipy.sparse.csr_matrix(weight.numpy())
    except ImportError:
        sp_w = None
    rows: list[dict[str, object]] = []
    for t in threads:
        torch.set_num_threads(t)
        for batch in args.batches:
            x = torch.randn(batch, in_f, generator=gen)
            ref = F.linear(x, weight, bias)
            fns = kernel_candidates(x, weight, bias, shipped, csr64, coo, csc, csr_t, sp_w)
            before = load_average()
            with torch.inference_mode():
                errs = {k: rel_error(fn(), ref) for k, fn in fns.items()}
                samples = interleaved(
                    fns, repeats=args.repeats, warmup=args.warmup, max_seconds=args.max_seconds
                )
            dense = summary(samples["dense F.linear"])
            for k in fns:
                s = summary(samples[k])
                rows.append({
                    "kernel": k,
                    "layer": f"{args.kernel_shape} {100 * args.kernel_density:g}%",
                    "batch": batch,
                    "threads": 1 if k.startswith("scipy") else t,
                    "repeats": s["n"],
                    **{f"{q}_us": round(v, 1) for q, v in s.items() if q != "n"},
                    "vs_dense": round(dense["median"] / s["median"], 3),
                    "rel_err": f"{errs[k]:.1e}",
                    "load": f"{before} -> {load_average()}",
                })  # fmt: skip
                print("kernel", rows[-1], flush=True)
    return rows


# --------------------------------------------------------------------------- output


def layer_table(rows: list[dict[str, object]]) -> str:
    headers = ["layer", "density", "batch", "threads", "dense us (IQR)", "sparse us (IQR)",
               "speedup", "of minima", "n", "load (1 min avg)"]  # fmt: skip
    cells = [
        [
            r["layer"],
            f"{r['density_pct']}%" + (" (paper)" if r["paper_density"] else ""),
            r["batch"],
            r["threads"],
            f"{r['dense_median_us']:,.0f} ({r['dense_q1_us']:,.0f}-{r['dense_q3_us']:,.0f})",
            f"{r['sparse_median_us']:,.0f} ({r['sparse_q1_us']:,.0f}-{r['sparse_q3_us']:,.0f})",
            f"{r['speedup']:.2f}x",
            f"{r['speedup_of_min']:.2f}x",
            r["repeats"],
            str(r["load"]).split(" -> ")[0].split("/")[0],
        ]
        for r in rows
    ]
    return format_table(headers, cells)


def summary_table(rows: list[dict[str, object]]) -> str:
    """Speedup at each layer's paper density: one row per layer, a column per batch x threads."""
    cols = sorted({(int(r["threads"]), int(r["batch"])) for r in rows}, key=lambda c: (-c[0], c[1]))
    cells = []
    for layer in dict.fromkeys(str(r["layer"]) for r in rows):
        at_paper = [r for r in rows if r["layer"] == layer and r["paper_density"]]
        if not at_paper:
            continue
        by = {(int(r["threads"]), int(r["batch"])): r for r in at_paper}
        row: list[object] = [layer, f"{at_paper[0]['density_pct']}%"]
        for c in cols:
            r = by.get(c)
            row.append(
                "-"
                if r is None
                else f"{r['dense_median_us']:,.0f} / {r['sparse_median_us']:,.0f} = "
                f"{r['speedup']:.2f}x (min {r['speedup_of_min']:.2f}x)"
            )
        cells.append(row)
    headers = ["layer", "density"] + [f"batch {b}, {t} thr: dense / sparse us" for t, b in cols]
    return format_table(headers, cells)


def model_table(rows: list[dict[str, object]]) -> str:
    headers = ["model", "kept", "sparse layers", "batch", "threads", "dense us (IQR)",
               "sparse us (IQR)", "speedup", "of minima", "rel. error"]  # fmt: skip
    cells = [
        [
            r["model"],
            r["kept"],
            r["sparse_layers"],
            r["batch"],
            r["threads"],
            f"{r['dense_median_us']:,.0f} ({r['dense_q1_us']:,.0f}-{r['dense_q3_us']:,.0f})",
            f"{r['sparse_median_us']:,.0f} ({r['sparse_q1_us']:,.0f}-{r['sparse_q3_us']:,.0f})",
            f"{r['speedup']:.2f}x",
            f"{r['speedup_of_min']:.2f}x",
            r["rel_err"],
        ]  # fmt: skip
        for r in rows
    ]
    return format_table(headers, cells)


def dict_table(rows: list[dict[str, object]], drop: tuple[str, ...] = ()) -> str:
    headers = [h for h in rows[0] if h not in drop]
    return format_table(headers, [[r[h] for h in headers] for r in rows])


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(path: Path, rows: list[dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = sorted({int(r["threads"]) for r in rows})
    nets = sorted({str(r["layer"]).split("-")[0] for r in rows})
    fig, axes = plt.subplots(
        len(threads), len(nets), figsize=(5 * len(nets), 3.6 * len(threads)), squeeze=False
    )
    batches = sorted({int(r["batch"]) for r in rows})
    colors = dict(zip(batches, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]))
    markers = {"fc6": "o", "fc7": "s", "fc8": "^"}
    for i, t in enumerate(threads):
        for j, net in enumerate(nets):
            ax = axes[i][j]
            for layer in sorted({str(r["layer"]) for r in rows if str(r["layer"]).startswith(net)}):
                for b in batches:
                    pts = sorted(
                        (float(r["density_pct"]), float(r["speedup"]))
                        for r in rows
                        if r["layer"] == layer and int(r["batch"]) == b and int(r["threads"]) == t
                    )
                    if pts:
                        ax.plot(*zip(*pts), color=colors[b], marker=markers.get(layer[-3:], "x"),
                                label=f"{layer[-3:]} batch {b}")  # fmt: skip
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_yscale("log")
            ax.set_xlabel("density (% of weights kept)")
            ax.set_ylabel("speedup (dense / sparse)")
            ax.set_title(f"{net}, {t} thread{'s' if t > 1 else ''}")
            ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parts = ("layers", "breakeven", "models", "kernels")
    parser.add_argument("--only", nargs="+", choices=parts, help="run only these parts")
    parser.add_argument("--kernels", action="store_true", help="also compare the kernels")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--densities", nargs="+", type=float, default=[0.04, 0.07, 0.10])
    parser.add_argument("--no-paper-density", action="store_true",
                        help="do not add each layer's density from the paper")  # fmt: skip
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--threads", nargs="+", type=int,
                        help="thread counts (default: torch's default, then 1)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=25, help="samples per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="calls before timing")
    parser.add_argument("--max-seconds", type=float, default=8.0,
                        help="stop sampling a group after this long (>= 5 samples)")  # fmt: skip
    parser.add_argument("--min-sparsity", type=float, default=0.5,
                        help="sparsify_ threshold for the whole-model part")  # fmt: skip
    parser.add_argument("--vgg16-model", action="store_true",
                        help="also time the whole VGG-16 at batch 1 (slow)")  # fmt: skip
    parser.add_argument("--kernel-shape", choices=list(SHAPES), default="vgg16-fc6")
    parser.add_argument("--kernel-density", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="sparse_speed", help="output file stem")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    for d in args.densities + [args.kernel_density]:
        if not 0.0 < d <= 1.0:
            parser.error(f"densities must be in (0, 1], got {d}")
    if args.repeats < 1 or args.warmup < 0 or min(args.batches) < 1:
        parser.error("--repeats and --batches must be >= 1, --warmup >= 0")
    todo = set(args.only) if args.only else {"layers", "breakeven", "models"}
    if args.kernels:
        todo.add("kernels")

    default_threads = torch.get_num_threads()
    threads = list(dict.fromkeys(args.threads or [default_threads, 1]))
    if min(threads) < 1:
        parser.error("--threads must be >= 1")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / args.name
    start, load_start = time.perf_counter(), load_average()
    header = [
        f"# Dense vs sparse fully connected layers ({args.name})",
        "",
        f"- command: `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`",
        f"- date (UTC): {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__} "
        f"(MKL: {torch.backends.mkl.is_available()}); default threads {default_threads}; "
        f"measured with threads {threads}",
        f"- load average (1/5/15 min) at start: {load_start}",
        "- times in microseconds per call: median (inter-quartile range) of interleaved samples;"
        " speedup = dense median / sparse median; 'of minima' = dense min / sparse min",
    ]
    sections: list[str] = []
    if "layers" in todo:
        rows = run_layers(args, threads)
        write_csv(stem.with_name(stem.name + "_layers.csv"), rows)
        dense_p, sparse_p = PAPER_FC6
        sections += [
            "## Single layers: dense F.linear vs SparseLinear (CSR)",
            "",
            f"Paper (their CPU, batch 1): VGG-16 fc6 at 4%: {dense_p:,.0f} us dense vs "
            f"{sparse_p:,.0f} us sparse = {dense_p / sparse_p:.1f}x.",
            "",
            "At each layer's density in the paper: dense / sparse medians in us = speedup "
            "(and the ratio of the minima):",
            "",
            summary_table(rows),
            "",
            "All measurements:",
            "",
            layer_table(rows),
            "",
        ]
        if not args.no_plot:
            plot(stem.with_suffix(".png"), rows)
    if "breakeven" in todo:
        rows = run_breakeven(args, threads)
        write_csv(stem.with_name(stem.name + "_breakeven.csv"), rows)
        sections += [
            "## Break-even: speedup (dense median / sparse median) by density",
            "",
            dict_table(rows),
            "",
        ]
    if "models" in todo:
        rows = run_models(args, threads)
        write_csv(stem.with_name(stem.name + "_models.csv"), rows)
        sections += [
            f"## Whole models: dense vs sparsify_(min_sparsity={args.min_sparsity})",
            "",
            "Random masks at the paper's kept fractions; only the listed layers become "
            "SparseLinear (convolutions stay dense).",
            "",
            model_table(rows),
            "",
        ]
    if "kernels" in todo:
        rows = run_kernels(args, threads)
        write_csv(stem.with_name(stem.name + "_kernels.csv"), rows)
        sections += [
            "## Kernels for W_sparse @ x (median us, and dense median / kernel median)",
            "",
            dict_table(rows, drop=("layer",)),
            "",
        ]
    footer = [
        f"- load average at end: {load_average()}; total time {time.perf_counter() - start:.0f} s",
    ]
    text = "\n".join(header + footer + [""] + sections) + "\n"
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
