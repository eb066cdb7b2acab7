"""The command line: help everywhere, one-line errors, train then evaluate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deep_compression.checkpoint import read_meta
from deep_compression.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deep_compression", *args], capture_output=True, text=True
    )


def test_help_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"train", "evaluate"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage: deep-compression " + name in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "vgg", "--out", "x.safetensors"], "unknown model 'vgg'"),
        (["train", "--model", "lenet-5", "--epochs", "-3", "--out", "x"], "not an integer >= 0"),
        (["evaluate", "/no/such/file.safetensors"], "no such file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line(args: list[str], message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_checkpoint_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    proc = run_cli("evaluate", str(bad))
    assert proc.returncode == 1
    assert "not a valid safetensors" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.mnist
def test_train_then_evaluate(mnist, tmp_path: Path) -> None:
    out = tmp_path / "d.safetensors"
    proc = run_cli("train", "--model", "lenet-300-100", "--epochs", "1", "--val-size", "2000",
                   "--val-seed", "4", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "58,000 train / 2,000 validation / 10,000 test images" in proc.stdout
    assert "val error" in proc.stdout and "test error" in proc.stdout and out.is_file()
    # The checkpoint records the split it held out (compress holds out the same) and the
    # test error measured once, at the end.
    meta = read_meta(out)
    assert meta is not None and meta.details["validation"] == {"size": 2000, "seed": 4}
    printed_test = float(proc.stdout.split("test error ")[-1].split("%")[0])
    assert 100 * meta.test_error == pytest.approx(printed_test, abs=0.006)
    proc = run_cli("evaluate", str(out))
    assert proc.returncode == 0, proc.stderr
    error = float(proc.stdout.split("error ")[1].split("%")[0])
    assert error < 5.0 and error == pytest.approx(printed_test, abs=0.006)
