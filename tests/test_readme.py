"""The README tells the truth: its Python example runs, its command-line blocks run (on
small data), its links lead somewhere, and it stays a short guide.

The command blocks are read from the README itself and run in order, each command as
written except for the size limits below, so a command the README changes is the command
tested. The size limits (nothing else is changed):

* ``train`` and ``evaluate`` without ``--dataset`` (other than of a shipped file in
  ``models/``) read the first 3,000 / 1,000 MNIST training / test images, as an ``.npz``
  file, instead of all of MNIST;
* ``--epochs N`` becomes ``--epochs 1``, ``--max-minutes M`` becomes ``--max-minutes 0.1``,
  ``--limit N`` (images per split of ``make_imagefolder.py``) becomes ``--limit 300``;
* ``compress`` gets ``--no-plots``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LIMITS = {"--epochs": "1", "--max-minutes": "0.1", "--limit": "300"}


def blocks(path: Path, language: str, heading: str | None = None) -> list[str]:
    """The ```language fenced blocks of ``path`` (only under ``## heading`` if given)."""
    text = path.read_text()
    if heading is not None:
        text = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]


def limited(argv: list[str], digits: Path) -> list[str]:
    """``argv`` with the size limits of the module docstring."""
    out = [LIMITS.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    shipped = out[1] == "evaluate" and out[2].startswith("models/")
    if out[1] in ("train", "evaluate") and "--dataset" not in out and not shipped:
        out += ["--dataset", str(digits)]
    if out[1] == "compress":
        out.append("--no-plots")
    return out


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory holding the checkout's models/, recipes/ and examples/, as the
    README's commands expect to find them; ``runs/`` is made there."""
    for name in ("models", "recipes", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def digits(digits_npz: Path) -> Path:
    """MNIST's first 3,000 training and 1,000 test images as an ``.npz`` dataset."""
    return digits_npz


def run_block(block: str, digits: Path, run_cli) -> list[str]:
    """Run a README shell block in the current directory; the output of each command."""
    outputs = []
    for argv in commands(block):
        if not argv or argv[0] == "source":  # activating .venv: this is that interpreter
            continue
        argv = limited(argv, digits)
        if argv[0] == "python":
            proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True)
        elif argv[0] == "deep-compression":
            proc = run_cli(*argv[1:])
        else:
            raise AssertionError(f"the test does not know how to run {argv[0]!r}")
        assert proc.returncode == 0, (argv, proc.stderr)
        outputs.append(proc.stdout)
    return outputs


def test_the_readme_is_a_short_guide_that_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first = blocks(README, "sh")[0]
    assert [c[:2] for c in commands(first)] == [["make", "run"], ["make", "test"]]
    assert text.index(first) < 200  # the first thing a reader sees
    assert len(text.splitlines()) <= 300
    # The install block says what the Makefile does.
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[dev]'" in makefile and "make setup" in text
    assert "export = [" in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("path", [README, ROOT / "docs" / "USAGE.md"], ids=lambda p: p.name)
def test_python_examples_run(path: Path, workdir: Path) -> None:
    examples = blocks(path, "python")
    assert examples, f"{path.name} has no Python example"
    for code in examples:
        exec(compile(code, str(path), "exec"), {"__name__": "__readme__"})


@pytest.mark.mnist
def test_cli_quickstart_runs(workdir: Path, digits: Path, run_cli) -> None:
    (block,) = blocks(README, "sh", "CLI quickstart")
    out = run_block(block, digits, run_cli)
    assert "error 0.63%" in out[0]  # the shipped file decodes to its recorded accuracy
    assert (workdir / "runs/quickstart/small.dcz").is_file()
    assert (workdir / "runs/quickstart/small.onnx").is_file()


@pytest.mark.mnist
def test_own_model_commands_run(workdir: Path, digits: Path, run_cli) -> None:
    (block,) = blocks(README, "sh", "Your own model and data")
    run_block(block, digits, run_cli)
    assert (workdir / "runs/resnet8.dcz").is_file() and (workdir / "runs/resnet8.onnx").is_file()


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a markdown file."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    out = set()
    for heading in re.findall(r"^#+ (.*)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_links_lead_somewhere(path: Path) -> None:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        where = (path.parent / file).resolve() if file else path
        assert where.exists(), f"{path.name}: {target} does not exist"
        if anchor and where.suffix == ".md":
            assert anchor in _anchors(where), f"{path.name}: no heading for {target}"
