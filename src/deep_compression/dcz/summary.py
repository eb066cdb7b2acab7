"""What ``deep-compression info`` prints: the paper's per-layer table, measured on files.

Every size here is the length of a real byte string. The P, P+Q and P+Q+H figures are
the three stage files of :mod:`deep_compression.dcz.stages` (the one definition the
``compress`` report uses too): P and P+Q re-encode the file's tensors bit-identically
without entropy coding, P+Q+H is the file itself.

Per-layer bit columns are payload bits per kept weight (fillers included, code tables
excluded); per-layer size % is everything the layer's weight costs (codebook, tables,
chunk lengths, both streams) over its float32 size. Header, tables, codebooks and dense
tensors (biases) are listed as their own rows of the byte breakdown.
"""

from __future__ import annotations

from typing import Any

from deep_compression.coding.bits import fixed_width
from deep_compression.dcz.format import PREAMBLE_BYTES, TRAILER_BYTES
from deep_compression.dcz.reader import DczFile, TensorStats, open_dcz
from deep_compression.dcz.stages import stage_blobs
from deep_compression.table import format_table

__all__ = ["summarize", "format_summary"]


def _layer_bytes(t: TensorStats) -> int:
    return sum(s.bytes for s in t.streams.values()) + t.codebook_bytes + t.values_bytes


def summarize(f: DczFile) -> dict[str, Any]:
    """A JSON-able summary of ``f``: stages, per-layer table, byte breakdown, streams."""
    own = f.stats()
    stages = {name: open_dcz(blob) for name, blob in stage_blobs(f).items()}
    pq, pqh = stages["P+Q"].stats(), stages["P+Q+H"].stats()
    original = f.original_bytes
    layers = [_layer(a, b) for a, b in zip(pq, pqh) if a.encoding != "dense"]
    breakdown = _breakdown(f, own)
    assert sum(breakdown.values()) == f.size, (breakdown, f.size)
    streams = _streams(own)
    coders = sorted({s["coder"] for s in streams})
    return {
        "file_bytes": f.size,
        "original_bytes": original,
        "rate": original / f.size,  # a file is never empty (16 bytes at least)
        "coders": coders,
        "header_json_bytes": f.header_json_bytes,
        "stages": {
            name: {"bytes": v.size, "rate": original / v.size} for name, v in stages.items()
        },
        "layers": layers,
        "breakdown": breakdown,
        "streams": streams,
        "metadata": f.metadata,
    }


def _bits(t: TensorStats, role: str) -> float:
    """Payload bits per kept weight of stream ``role`` (code tables excluded)."""
    s = t.streams.get(role)
    if s is None:  # sparse: values are float32
        return 32.0
    return 8 * (s.bytes - s.table_bytes) / t.kept if t.kept else 0.0


def _layer(a: TensorStats, b: TensorStats) -> dict[str, Any]:
    """One row of the per-layer table: the same tensor in the P+Q (``a``) and P+Q+H (``b``)
    files."""
    return {
        "name": a.name,
        "encoding": a.encoding,
        "weights": a.numel,
        "kept": a.kept,
        "kept_pct": 100 * a.kept / a.numel if a.numel else 0.0,
        "fillers": a.fillers,
        "gap_bits": a.gap_bits,
        "k": a.k,
        "weight_bits": {"P+Q": _bits(a, "indices"), "P+Q+H": _bits(b, "indices")},
        "index_bits": {"P+Q": _bits(a, "gaps"), "P+Q+H": _bits(b, "gaps")},
        "bytes": {"P+Q": _layer_bytes(a), "P+Q+H": _layer_bytes(b)},
        "size_pct": {
            "P+Q": 100 * _layer_bytes(a) / max(4 * a.numel, 1),
            "P+Q+H": 100 * _layer_bytes(b) / max(4 * b.numel, 1),
        },
    }


def _breakdown(f: DczFile, own: list[TensorStats]) -> dict[str, int]:
    """Every byte of ``f`` in one row: the rows add up to the file size."""
    return {
        "preamble + CRC": PREAMBLE_BYTES + TRAILER_BYTES,
        "header": f.header_bytes,
        "codebooks": sum(t.codebook_bytes for t in own),
        "code tables": sum(s.table_bytes for t in own for s in t.streams.values()),
        "gap streams": sum(
            s.bytes - s.table_bytes for t in own for r, s in t.streams.items() if r == "gaps"
        ),
        "index streams": sum(
            s.bytes - s.table_bytes for t in own for r, s in t.streams.items() if r == "indices"
        ),
        "sparse values": sum(t.values_bytes for t in own),
        "dense tensors": sum(t.dense_bytes for t in own),
    }


def _streams(own: list[TensorStats]) -> list[dict[str, Any]]:
    """Every non-empty stream of the file, with its coder, size and entropy."""
    return [
        {
            "name": t.name,
            "stream": role,
            "coder": s.coder,
            "symbols": s.n,
            "alphabet": s.alphabet,
            "bytes": s.bytes,
            "table_bytes": s.table_bytes,
            "bits_per_symbol": s.bits_per_symbol,
            "entropy": s.entropy,
            "fixed_bits": fixed_width(s.alphabet),
        }
        for t in own
        for role, s in t.streams.items()
        if s.n
    ]


def _pct(x: float) -> str:
    return f"{x:.2f}%"


def format_summary(s: dict[str, Any], title: str = "") -> str:
    """The summary as three Markdown tables and a few lines of text."""
    out = []
    if title:
        out.append(title)
    out.append(_model_line(s))
    out.append("")
    out.append(_layer_table(s))
    out.append("")
    stage_rows = [[name, v["bytes"], f"{v['rate']:.1f}x"] for name, v in s["stages"].items()]
    out.append(format_table(["stage (whole file)", "bytes", "rate"], stage_rows))
    out.append(
        f"original: {s['original_bytes']:,} bytes (every floating-point tensor as float32); "
        "rate = original / file bytes; P+Q+H is this file"
    )
    out.append("")
    out.append(
        format_table(
            ["this file's bytes", "bytes", "share"],
            [[k, v, _pct(100 * v / s["file_bytes"])] for k, v in s["breakdown"].items()]
            + [["total", s["file_bytes"], "100.00%"]],
        )
    )
    out.append("")
    out.append(_stream_table(s))
    return "\n".join(out)


def _model_line(s: dict[str, Any]) -> str:
    """Model, dataset, test error at encode time and coders, in one line."""
    # The metadata is untrusted and free-form here (any writer's file): read defensively.
    meta = s["metadata"]
    model = meta.get("model")
    name = model.get("name", "?") if isinstance(model, dict) else "?"
    error = meta.get("test_error")
    if not isinstance(error, float) and isinstance(meta.get("test_accuracy"), float):
        error = 1 - meta["test_accuracy"]  # files written before the typed metadata
    return (
        f"model {name} on {meta.get('dataset') or '?'}"
        + (f", test error {100 * error:.2f}% at encode time" if isinstance(error, float) else "")
        + f"; coder(s) {', '.join(s['coders']) or '-'}"
    )


_LAYER_COLUMNS = (
    "layer",
    "weights",
    "kept",
    "fillers",
    "weight bits P+Q",
    "weight bits P+Q+H",
    "index bits P+Q",
    "index bits P+Q+H",
    "size P+Q",
    "size P+Q+H",
)


def _layer_table(s: dict[str, Any]) -> str:
    """The paper's per-layer table, with a total row over the whole model."""
    rows: list[list[Any]] = []
    for r in s["layers"]:
        rows.append(
            [
                r["name"],
                r["weights"],
                _pct(r["kept_pct"]),
                r["fillers"],
                f"{r['weight_bits']['P+Q']:.2f}",
                f"{r['weight_bits']['P+Q+H']:.2f}",
                f"{r['index_bits']['P+Q']:.2f}",
                f"{r['index_bits']['P+Q+H']:.2f}",
                _pct(r["size_pct"]["P+Q"]),
                _pct(r["size_pct"]["P+Q+H"]),
            ]
        )
    weights = max(s["original_bytes"] // 4, 1)
    # Dense tensors (biases) count as fully kept.
    kept = sum(r["kept"] for r in s["layers"]) + (weights - sum(r["weights"] for r in s["layers"]))
    kept_layers = sum(r["kept"] for r in s["layers"])

    def avg(key: str, stage: str) -> str:
        if not kept_layers:
            return "-"
        return f"{sum(r[key][stage] * r['kept'] for r in s['layers']) / kept_layers:.2f}"

    st = s["stages"]
    rows.append(
        [
            "total",
            weights,
            _pct(100 * kept / weights),
            sum(r["fillers"] for r in s["layers"]),
            avg("weight_bits", "P+Q"),
            avg("weight_bits", "P+Q+H"),
            avg("index_bits", "P+Q"),
            avg("index_bits", "P+Q+H"),
            _pct(100 * st["P+Q"]["bytes"] / max(s["original_bytes"], 1)),
            _pct(100 * st["P+Q+H"]["bytes"] / max(s["original_bytes"], 1)),
        ]
    )
    return format_table(_LAYER_COLUMNS, rows)


_STREAM_COLUMNS = (
    "stream",
    "coder",
    "symbols",
    "alphabet",
    "table bytes",
    "bits/symbol",
    "entropy",
    "over entropy",
)


def _stream_table(s: dict[str, Any]) -> str:
    """One row per coded stream: its size per symbol against its order-0 entropy."""
    rows = [
        [
            f"{r['name']} {r['stream']}",
            r["coder"],
            r["symbols"],
            r["alphabet"],
            r["table_bytes"],
            f"{r['bits_per_symbol']:.3f}",
            f"{r['entropy']:.3f}",
            _pct(100 * (r["bits_per_symbol"] / r["entropy"] - 1)) if r["entropy"] else "-",
        ]
        for r in s["streams"]
    ]
    return format_table(_STREAM_COLUMNS, rows)
