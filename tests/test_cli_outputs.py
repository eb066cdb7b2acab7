"""No command loses a file, leaves half of one behind, or starts work it cannot finish;
every option says what it does; errors say what to do."""

from __future__ import annotations

import argparse
import io
import tomllib
from pathlib import Path

import pytest
import torch

from deep_compression.checkpoint import save_checkpoint
from deep_compression.cli import build_parser
from deep_compression.dcz import open_dcz
from deep_compression.encode import encode_model
from deep_compression.models import build_model
from deep_compression.progress import LogBar
from deep_compression.prune import KeepFraction, prune_

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_dcz(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("lenet-300-100")
    prune_(model, KeepFraction(0.05))
    path = tmp_path_factory.mktemp("dcz") / "m.dcz"
    encode_model(model, path, metadata={"model": {"name": "lenet-300-100"}, "dataset": "mnist"})
    return path


def _one_line(proc) -> str:  # type: ignore[no-untyped-def]
    err = proc.stderr.strip()
    assert proc.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_decode_never_replaces_without_force(small_dcz: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "plain.safetensors"
    out.write_bytes(b"precious")
    err = _one_line(run_cli("decode", str(small_dcz), "-o", str(out)))
    assert "already exists; pass --force" in err
    assert out.read_bytes() == b"precious"
    proc = run_cli("decode", str(small_dcz), "-o", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() != b"precious" and out.stat().st_size > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.safetensors"]


@pytest.mark.parametrize(
    "args",
    [
        ["decode", "{dcz}", "-o", "{dir}"],
        ["train", "--model", "lenet-5", "--epochs", "1", "-o", "{dir}"],
        ["encode", "{ckpt}", "-o", "{dir}"],
        ["prune", "{ckpt}", "--recipe", "{recipe}", "-o", "{dir}"],
        ["quantize", "{ckpt}", "-o", "{dir}"],
        ["compress", "{ckpt}", "--recipe", "{recipe}", "-o", "{dir}"],
    ],
)
def test_an_existing_directory_fails_before_any_work(
    args: list[str], small_dcz: Path, tmp_path: Path, run_cli, monkeypatch
) -> None:
    """One line, no data loaded (DEEP_COMPRESSION_DATA points nowhere, so any work that
    started would fail differently), nothing written."""
    monkeypatch.setenv("DEEP_COMPRESSION_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    target = tmp_path / ("out.dcz" if args[0] in ("encode", "compress") else "out.safetensors")
    target.mkdir()
    ckpt = save_checkpoint(
        tmp_path / "c.safetensors",
        build_model("lenet-300-100"),
        {"model": {"name": "lenet-300-100"}, "dataset": "mnist"},
    )
    recipe = ROOT / "recipes" / "lenet-300-100.toml"
    filled = [a.format(dcz=small_dcz, dir=target, ckpt=ckpt, recipe=recipe) for a in args]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    err = _one_line(run_cli(*filled, "--out-dir", str(tmp_path / "run"))
                    if args[0] == "compress" else run_cli(*filled))  # fmt: skip
    assert "is a directory" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_compress_checks_recipe_against_checkpoint_before_work(
    tmp_path: Path, run_cli, monkeypatch
) -> None:
    monkeypatch.setenv("DEEP_COMPRESSION_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    recipe = ROOT / "recipes" / "lenet-300-100.toml"
    wrong_model = save_checkpoint(
        tmp_path / "a.safetensors", build_model("lenet-5"), {"model": {"name": "lenet-5"}}
    )
    err = _one_line(run_cli("compress", str(wrong_model), "--recipe", str(recipe),
                            "--out-dir", str(tmp_path / "r")))  # fmt: skip
    assert "holds lenet-5, the recipe is for lenet-300-100" in err
    fashion = save_checkpoint(
        tmp_path / "b.safetensors",
        build_model("lenet-300-100"),
        {"model": {"name": "lenet-300-100"}, "dataset": "fashion-mnist"},
    )
    err = _one_line(run_cli("compress", str(fashion), "--recipe", str(recipe),
                            "--out-dir", str(tmp_path / "r")))  # fmt: skip
    assert "trained on fashion-mnist, the recipe is for mnist" in err
    # A layer the model does not have: refused before dense training starts.
    doc = (ROOT / "recipes" / "lenet-300-100.toml").read_text()
    typo = tmp_path / "typo.toml"
    typo.write_text(doc.replace("criteria.fc3 =", "criteria.fc4 =", 1))
    assert "fc4" in tomllib.loads(typo.read_text())["prune"]["rounds"][0]["criteria"]
    err = _one_line(run_cli("compress", "--train", "--recipe", str(typo),
                            "--out-dir", str(tmp_path / "r")))  # fmt: skip
    assert "prune.rounds[1].criteria: key 'fc4' matches no layer" in err
    assert not (tmp_path / "r").exists()


def test_every_option_says_what_it_does() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        text = sub.format_help()
        assert "%%" not in text, name
    train = commands["train"].format_help()
    assert "(default: 20)" in " ".join(train.split())  # --epochs shows its default


def test_neuron_table_is_limited(tmp_path: Path, run_cli) -> None:
    rows = tmp_path / "big.csv"
    rows.write_text("".join(f"{(i % 7) - 3},{i % 5}\n" for i in range(5000)))
    proc = run_cli("neuron", str(rows), "--limit", "10", "--method", "greedy")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) < 25 and "4990 more inputs not shown" in proc.stdout
    proc = run_cli("neuron", str(rows), "--limit", "0", "--method", "greedy")
    assert "| input |" not in proc.stdout and "kept" in proc.stdout


def test_progress_reaches_a_log(monkeypatch) -> None:
    """Not a terminal: plain lines at most every interval, and one when done."""
    stream = io.StringIO()
    ticks = iter(range(0, 1000, 4))  # each step "takes" 4 s
    monkeypatch.setattr("deep_compression.progress.time.monotonic", lambda: next(ticks))
    bar = LogBar(range(10), desc="round 1/2 retrain 1/4", unit="batch", interval=10, stream=stream)
    for _ in bar:
        bar.set_postfix(loss="0.1")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 3 <= len(lines) <= 5, lines
    assert lines[0].startswith("round 1/2 retrain 1/4: ") and "batch" in lines[0]
    assert "loss=0.1" in lines[0] and lines[-1].startswith("round 1/2 retrain 1/4: 10/10")


def test_stage_bytes_of_info_and_the_shipped_report_agree(run_cli) -> None:
    """One definition of P, P+Q and P+Q+H: what info prints is what the report says."""
    import json

    from deep_compression.dcz.summary import summarize

    for name in ("lenet-300-100", "lenet-5"):
        report = json.loads((ROOT / "models" / f"{name}.report.json").read_text())
        stages = {s["stage"]: s["bytes"] for s in report["stages"]}
        summary = summarize(open_dcz(ROOT / "models" / f"{name}.dcz"))
        for stage in ("P", "P+Q", "P+Q+H"):
            assert summary["stages"][stage]["bytes"] == stages[stage], (name, stage)
        assert stages["P+Q+H"] == (ROOT / "models" / f"{name}.dcz").stat().st_size


def test_version_1_files_still_load_as_models() -> None:
    """Files written before format version 2 and the typed metadata (stage 'P+Q+H',
    'test_accuracy') decode into working models."""
    from deep_compression.loading import load_dcz

    for name in ("lenet-300-100", "lenet-5"):
        model, meta = load_dcz(ROOT / "tests" / "data" / f"{name}.v1.dcz")
        assert meta.stage == "quantized" and meta.model.name == name
        assert meta.test_error is not None and meta.test_error < 0.02
        assert not model.training
