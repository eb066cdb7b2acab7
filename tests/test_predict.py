"""predict: per-image correctness and loss that add up to evaluate's numbers, in dataset
order, for any subset of images, on one rank or two; logits_of for non-tensor outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import deep_compression
from deep_compression.data import ImageFolder, Split, in_memory
from deep_compression.errors import ConfigError
from deep_compression.train import Predictions, evaluate, logits_of, predict


def small_split(n: int = 53, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 3, 5, 6, generator=gen), torch.randint(0, 4, (n,), generator=gen))


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(90, 16), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(16, 4))  # fmt: skip


def reference(model: nn.Module, data: Split) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness and loss, computed directly on the whole split."""
    model.eval()
    with torch.no_grad():
        logits = model(data.x)
    loss = nn.functional.cross_entropy(logits, data.y, reduction="none")
    return (logits.argmax(1) == data.y).numpy(), loss.numpy()


def test_predictions_add_up_to_evaluate() -> None:
    data, model = small_split(), small_model()
    for batch in (1, 7, 53, 1000):
        p = predict(model, data, batch)
        loss, acc = evaluate(model, data, batch)
        assert p.accuracy == acc  # exactly
        assert abs(p.mean_loss - loss) < 1e-6
    correct, loss = reference(model, data)
    assert p.correct.dtype == np.bool_ and p.loss.dtype == np.float32
    assert np.array_equal(p.correct, correct)
    np.testing.assert_allclose(p.loss, loss, rtol=1e-5, atol=1e-6)
    assert np.array_equal(p.indices, np.arange(53)) and len(p) == 53


def test_the_model_is_put_back_in_its_mode() -> None:
    data, model = small_split(), small_model()
    model.train()
    a = predict(model, data)
    assert model.training
    b = predict(model, data)  # dropout off both times: the same numbers
    assert np.array_equal(a.loss, b.loss)


def test_a_subset_of_images_in_any_order() -> None:
    data, model = small_split(), small_model()
    whole = predict(model, data)
    chunk = predict(model, data, 4, indices=range(10, 30))
    assert np.array_equal(chunk.indices, np.arange(10, 30))
    assert np.array_equal(chunk.correct, whole.correct[10:30])
    np.testing.assert_allclose(chunk.loss, whole.loss[10:30], rtol=1e-6)
    order = [52, 0, 17, 17, 3]
    for idx in (order, np.array(order), torch.tensor(order)):
        p = predict(model, data, 2, indices=idx)
        assert np.array_equal(p.indices, order)
        assert np.array_equal(p.correct, whole.correct[order])
        np.testing.assert_allclose(p.loss, whole.loss[order], rtol=1e-6)
    assert len(predict(model, data, indices=range(0))) == 0
    assert predict(model, data, indices=[]).accuracy == 0.0


@pytest.mark.parametrize("bad", [range(50, 54), [-1], [53], [[1, 2]], [0.5], range(-1, 3)])
def test_bad_indices(bad: object) -> None:
    with pytest.raises(ConfigError, match="indices"):
        predict(small_model(), small_split(), indices=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_bad_batch_size(bad: object) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        predict(small_model(), small_split(), bad)  # type: ignore[arg-type]


def test_an_image_folder_streams_to_the_same_numbers(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c", "d"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(
                tmp_path / c / f"{i}.png"
            )
    folder = ImageFolder(tmp_path, ("a", "b", "c", "d"), (0.5,), (0.25,), None, 3)
    model = small_model(1)
    p = predict(model, folder, 5)
    loss, acc = evaluate(model, folder, 5)
    assert p.accuracy == acc and abs(p.mean_loss - loss) < 1e-6
    memory = in_memory(folder)
    q = predict(model, memory, 5)
    assert np.array_equal(p.correct, q.correct) and np.array_equal(p.loss, q.loss)
    assert evaluate(model, memory, 5) == (loss, acc)
    r = predict(model, folder, 4, indices=[23, 0, 11])
    assert np.array_equal(r.correct, p.correct[[23, 0, 11]])
    # Other batches: matrix products may round differently in the last bit.
    np.testing.assert_allclose(r.loss, p.loss[[23, 0, 11]], rtol=1e-6)


class Wrapped(nn.Module):
    """A model whose output is not a tensor: a tuple, or an object with .logits."""

    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x: torch.Tensor) -> object:
        out = self.inner(x)
        if self.kind == "tuple":
            return out, x.mean()
        return SimpleNamespace(logits=out, hidden_states=None)


@pytest.mark.parametrize("kind", ["tuple", "object"])
def test_outputs_that_hold_the_logits(kind: str) -> None:
    data, model = small_split(), small_model()
    wrapped = Wrapped(model, kind)
    assert evaluate(wrapped, data, 10) == evaluate(model, data, 10)
    a, b = predict(wrapped, data), predict(model, data)
    assert np.array_equal(a.correct, b.correct) and np.array_equal(a.loss, b.loss)


def test_logits_of() -> None:
    t = torch.zeros(2, 3)
    assert logits_of(t) is t
    assert logits_of((t, torch.ones(1))) is t
    assert logits_of([t]) is t
    assert logits_of(SimpleNamespace(logits=t, loss=None)) is t
    for bad in ((), ("text",), SimpleNamespace(scores=t), {"logits": t}, None):
        with pytest.raises(ConfigError, match="class scores"):
            logits_of(bad)


def test_predictions_are_numpy() -> None:
    p = predict(small_model(), small_split(8))
    assert isinstance(p, Predictions)
    assert isinstance(p.correct, np.ndarray) and isinstance(p.indices, np.ndarray)


# ---- two ranks: each predicts its share, every rank receives all of it


class Numbers(Dataset):
    """A Dataset (not a Split): the DataLoader path under two ranks."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split[i]


def _gather_loss(mine: np.ndarray, n: int, src: int, is_mine: bool) -> np.ndarray:
    """Rank ``src``'s ``(n,)`` float32 losses, sent to every rank as raw bytes."""
    buf = torch.from_numpy(mine.copy()) if is_mine else torch.empty(n, dtype=torch.float32)
    torch.distributed.broadcast(buf, src)
    return buf.numpy()


def _rank_main(out: str) -> None:
    from deep_compression import distributed as dist

    torch.set_num_threads(1)
    with dist.session():
        data, model = small_split(), small_model()
        for name, d in (("split", data), ("dataset", Numbers(data))):
            for idx in (None, range(5, 40), [52, 1, 30, 30, 7]):
                p = predict(model, d, 4, indices=idx)
                whole = predict(model, d, 4, indices=idx, shard=False)
                assert np.array_equal(p.indices, whole.indices), (name, idx)
                assert np.array_equal(p.correct, whole.correct), (name, idx)
                # In other batches than one process's: equal up to the last bits...
                np.testing.assert_allclose(p.loss, whole.loss, rtol=1e-6)
                # ...and bit for bit what each rank computed for its share.
                part = dist.shard(len(p))
                mine = predict(model, d, 4, indices=p.indices[part.start : part.stop],
                               shard=False)  # fmt: skip
                for other in range(2):
                    share = range(other * len(p) // 2, (other + 1) * len(p) // 2)
                    theirs = _gather_loss(mine.loss, len(share), other, share == part)
                    assert np.array_equal(p.loss[share.start : share.stop], theirs)
            assert predict(model, d).accuracy == evaluate(model, d)[1]
        Path(out, f"rank{dist.rank()}").write_text("PASS")


def test_two_ranks_gather_every_prediction(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    src = str(Path(deep_compression.__file__).resolve().parents[1])
    procs = []
    for r in range(2):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r)}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, __file__, str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    for r, p in enumerate(procs):
        try:
            _, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        assert p.returncode == 0, f"rank {r}:\n{err}"
    assert [(tmp_path / f"rank{r}").read_text() for r in range(2)] == ["PASS", "PASS"]


if __name__ == "__main__":
    _rank_main(sys.argv[1])
