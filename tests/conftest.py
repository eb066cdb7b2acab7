"""Shared fixtures. Real MNIST is read from wherever the loader finds it without a
download (the Makefile points DEEP_COMPRESSION_DATA at ../shared/data); tests that need it
are skipped, with the reason, where it is absent."""

from __future__ import annotations

import os

# One torch thread for the suite and the CLI subprocesses it starts (they inherit this), set
# before anything imports torch. CI machines have 2 shared cores, and torch's default of a
# thread per core collapses when anything else runs: measured here under load, one
# LeNet-300-100 epoch took 96 s on 2 threads and 1.1 s on 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from deep_compression.cli import main  # noqa: E402
from deep_compression.data import Split, find_dataset_dir, load_dataset  # noqa: E402
from deep_compression.errors import DataError  # noqa: E402


@pytest.fixture(scope="session")
def mnist() -> tuple[Split, Split]:
    """The full, verified MNIST ``(train, test)``."""
    try:
        find_dataset_dir("mnist", download=False)
    except DataError as e:
        pytest.skip(f"real MNIST not available here: {e}")
    return load_dataset("mnist", download=False)


@pytest.fixture(scope="session")
def mnist_small(mnist: tuple[Split, Split]) -> tuple[Split, Split]:
    """A 6,000-image train / 2,000-image test slice of MNIST, for fast training tests."""
    train, test = mnist
    return Split(train.x[:6000], train.y[:6000]), Split(test.x[:2000], test.y[:2000])


@pytest.fixture(scope="session")
def digits_npz(mnist: tuple[Split, Split], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST's first 3,000 training and 1,000 test images as an ``.npz`` dataset (the
    format a user's own arrays come in; fast to train on)."""
    train, test = mnist

    def raw(s: Split) -> np.ndarray:  # back to the uint8 pixels the npz format stores
        return np.round((s.x[:, 0].numpy() * 0.3081 + 0.1307) * 255).clip(0, 255).astype(np.uint8)

    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(
        path,
        x_train=raw(train)[:3000],
        y_train=train.y[:3000].numpy(),
        x_test=raw(test)[:1000],
        y_test=test.y[:1000].numpy(),
    )
    return path


@dataclass
class Proc:
    """What a command-line run returned and printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run the command line in this process (no interpreter start-up per call), on one
    torch thread; the thread count is restored for the tests that follow."""
    threads = torch.get_num_threads()

    def run(*args: str) -> Proc:
        torch.set_num_threads(1)
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse errors
            code = int(e.code or 0)
        finally:
            torch.set_num_threads(threads)
        out = capsys.readouterr()
        return Proc(code, out.out, out.err)

    return run
