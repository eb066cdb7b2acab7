"""Training on several processes: 2 gloo ranks on the CPU, tiny synthetic data and models.

Each test starts two worker processes running this very file as a script (``python
tests/test_distributed.py SCENARIO OUTDIR``) with torchrun's environment variables set by
hand, so no launcher sits between the ranks: when one rank dies, the other must notice it
by itself. Workers write what they hold (state dicts as safetensors, statistics as JSON)
and the test compares those files directly, independently of the checksums under test; the
single-process reference is computed in the test process itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import deep_compression
from deep_compression import distributed as dist
from deep_compression.errors import ConfigError, DeepCompressionError, DistributedError
from deep_compression.prune import KeepFraction, prune_
from deep_compression.quantize import QuantizeConfig, quantize_
from deep_compression.train import GlobalBatchSampler, TrainConfig, evaluate, fit

# Deliberately awkward sizes: 203 = 6 full global batches of 32 and one of 11, which two
# ranks split 5 / 6, so the loss scaling for unequal shares is exercised too.
N_TRAIN, N_TEST, BATCH = 203, 64, 32
RETRAIN = TrainConfig(epochs=2, batch_size=BATCH, lr=0.05, seed=3)
FINETUNE = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, weight_decay=0.0, seed=4)
WORKER_TIMEOUT_S = 120  # generous: the machine is shared; the tests take seconds when quiet


class Tiny(nn.Module):
    """conv 3x3x4 on (N, 1, 8, 8) -> fc 144-16 -> fc 16-10; optionally with BatchNorm."""

    def __init__(self, batchnorm: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)  # (N, 4, 6, 6)
        self.bn = nn.BatchNorm2d(4) if batchnorm else nn.Identity()
        self.fc1 = nn.Linear(144, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x))).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


class Pairs(torch.utils.data.Dataset):
    """A map-style Dataset of ``(x, y)``; may end the process on rank ``die_rank`` when the
    ``die_at``-th item is fetched (a rank killed mid-training) or hang there instead."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, die_at: int = -1, hang: bool = False):
        self.x, self.y, self.die_at, self.hang, self.fetched = x, y, die_at, hang, 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.fetched += 1
        if self.fetched == self.die_at:
            if self.hang:
                time.sleep(3600)
            os._exit(3)
        return self.x[i], self.y[i]


def tiny_data() -> tuple[Pairs, Pairs]:
    """Learnable synthetic data: labels from a fixed random linear teacher."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_TEST, 1, 8, 8, generator=g)
    teacher = torch.randn(64, 10, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)
    return Pairs(x[:N_TRAIN], y[:N_TRAIN]), Pairs(x[N_TRAIN:], y[N_TRAIN:])


def tiny_model(batchnorm: bool = False) -> Tiny:
    torch.manual_seed(11)  # identical initial weights on every rank
    return Tiny(batchnorm)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def prune_train_quantize_train(out: Path | None) -> dict[str, dict[str, torch.Tensor]]:
    """The phases under test: prune, retrain, quantize, fine-tune the centroids. Rank r
    writes ``{pruned,quantized}-rank{r}.safetensors`` and ``stats-rank{r}.json`` to ``out``."""
    train, test = tiny_data()
    model = tiny_model()
    prune_(model, {"*": KeepFraction(0.5)})
    retrain = fit(model, train, test, RETRAIN, progress=False, desc="retrain")
    pruned = state(model)
    quantize_(model, QuantizeConfig(bits={"*": 3}, init="linear"))
    finetune = fit(model, train, test, FINETUNE, progress=False, desc="fine-tune")
    states = {"pruned": pruned, "quantized": state(model)}
    if out is not None:
        r = dist.rank()
        for name, tensors in states.items():
            save_file(tensors, str(out / f"{name}-rank{r}.safetensors"))
        stats = {
            "retrain": [(h.train_loss, h.train_accuracy, h.test_loss) for h in retrain.history],
            "finetune_test_accuracy": finetune.test_accuracy,
            "world_size": dist.world_size(),
        }
        (out / f"stats-rank{r}.json").write_text(json.dumps(stats))
    return states


# ---- worker scenarios (run in the spawned ranks)


def scenario_train(out: Path) -> None:
    prune_train_quantize_train(out)


def scenario_killed(out: Path, hang: bool = False) -> None:
    """Rank 1 dies (or hangs) when fetching its 40th item: in the second epoch's first
    batches (a rank takes about 102 items per epoch), i.e. inside DDP's gradient all-reduce."""
    train, test = tiny_data()
    if dist.rank() == 1:
        train.die_at, train.hang = 40 + 102, hang
    model = tiny_model()
    (out / f"started-rank{dist.rank()}").write_text("")
    fit(model, train, test, TrainConfig(epochs=3, batch_size=8, seed=0), progress=False)


def scenario_hang(out: Path) -> None:
    scenario_killed(out, hang=True)


def scenario_primitives(out: Path) -> None:
    """The building blocks a phase uses, each checked on both ranks; prints PASS at the end."""
    r, size = dist.rank(), dist.world_size()
    assert size == 2 and dist.is_initialized()
    messages = {}

    # A flipped mask entry on rank 1 is caught, named, and the same error on both ranks.
    model = tiny_model()
    prune_(model, {"*": KeepFraction(0.5)})
    dist.check_same_across_ranks(model, "after pruning")  # equal: no error
    if r == 1:
        mask = model.fc1.parametrizations.weight[0].mask
        mask[3, 5] = ~mask[3, 5]
    try:
        dist.check_same_across_ranks(model, "after round 2 pruning")
    except DistributedError as e:
        messages["mask"] = str(e)
    # broadcast_state_ gives rank 1 rank 0's mask back (bool buffers travel too).
    dist.broadcast_state_(model)
    dist.check_same_across_ranks(model, "after broadcast")

    # Different state-dict layouts (rank 1 quantized, rank 0 not).
    if r == 1:
        quantize_(model, QuantizeConfig(bits={"*": 2}))
    try:
        dist.check_same_across_ranks(model, "after quantization")
    except DistributedError as e:
        messages["layout"] = str(e)

    # fit refuses a model whose ranks differ before it starts.
    model = tiny_model()
    if r == 1:
        with torch.no_grad():
            model.fc2.bias[0] += 1e-6
    train, test = tiny_data()
    try:
        fit(model, train, None, TrainConfig(epochs=1, batch_size=BATCH), progress=False)
    except DistributedError as e:
        messages["fit"] = str(e)

    # BatchNorm statistics end up equal (fit takes rank 0's after every epoch and checks).
    model = tiny_model(batchnorm=True)
    fit(model, train, test, TrainConfig(epochs=1, batch_size=BATCH), progress=False, desc="bn")
    save_file(state(model), str(out / f"bn-rank{r}.safetensors"))

    # Augmentation under 2 ranks: each rank its own shifts, the same ones on every run
    # (and fit's own check says the ranks still agree afterwards).
    augmented = []
    for _ in range(2):
        model = tiny_model()
        config = TrainConfig(epochs=1, batch_size=BATCH, augment=1, seed=5)
        fit(model, train, None, config, progress=False, desc="augment")
        augmented.append(state(model))
    assert all(torch.equal(augmented[0][k], augmented[1][k]) for k in augmented[0])
    assert dist.rank_seed(5, 0) != dist.rank_seed(5, 1)

    # Sharded evaluation equals the whole-data evaluation on one rank.
    sharded = evaluate(model, test, batch_size=7)
    whole = evaluate(model, test, batch_size=7, shard=False)
    assert sharded[1] == whole[1] and abs(sharded[0] - whole[0]) < 1e-6, (sharded, whole)
    assert list(dist.shard(5)) == ([0, 1] if r == 0 else [2, 3, 4])
    assert dist.all_reduce_sum(1.5, r) == (3.0, 1.0)

    # A failure in rank-0-only work stops rank 1 too, instead of leaving it waiting.
    def write() -> str:
        if dist.is_main():
            raise OSError("disk full")
        return "written"

    try:
        dist.run_on_main(write, "writing model.dcz")
    except OSError as e:
        messages["main"] = f"OSError: {e}"
    except DistributedError as e:
        messages["main"] = str(e)
    assert dist.run_on_main(lambda: "ok", "writing") == ("ok" if r == 0 else None)

    # Non-tensor decisions (what a resumed run skips) compared by digest.
    dist.check_same_value("skip dense, pruned", "resume")
    try:
        dist.check_same_value(f"skip {'dense' if r == 0 else 'nothing'}", "resume")
    except DistributedError as e:
        messages["value"] = str(e)

    # Sessions nest: an inner one (a command inside the CLI's) leaves the group open.
    with dist.session() as active:
        assert active
    assert dist.is_initialized()
    dist.barrier()
    (out / f"messages-rank{r}.json").write_text(json.dumps(messages))
    print("PASS")


def scenario_phases_and_primitives(out: Path) -> None:
    # One launch for both: starting a rank (importing torch) is most of a test's time.
    scenario_train(out)
    scenario_primitives(out)


SCENARIOS = {
    "phases": scenario_phases_and_primitives,
    "killed": scenario_killed,
    "hang": scenario_hang,
}


def _worker_main(scenario: str, out: str) -> int:
    torch.set_num_threads(1)
    # Importing the package (WORLD_SIZE is set) must not have initialised anything.
    assert not torch.distributed.is_initialized()
    try:
        with dist.session():
            SCENARIOS[scenario](Path(out))
    except DeepCompressionError as e:  # what the CLI does: one line, non-zero status
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


# ---- launching


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    scenario: str, out: Path, world: int = 2, env: dict[str, str] | None = None
) -> list[subprocess.Popen[str]]:
    """Start ``world`` ranks of ``scenario`` as independent processes (no launcher)."""
    port = str(_free_port())
    src = str(Path(deep_compression.__file__).resolve().parents[1])
    procs = []
    for r in range(world):
        e = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": str(world),
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            **(env or {}),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, scenario, str(out)],
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str, str]]:
    """``(returncode, stdout, stderr)`` of each rank; ranks still running after ``timeout``
    seconds are killed (their return code is then negative)."""
    deadline = time.monotonic() + timeout
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        results.append((p.returncode, out, err))
    return results


def run_ranks(scenario: str, out: Path, **kwargs) -> list[tuple[int, str, str]]:
    results = finish(launch(scenario, out, **kwargs), WORKER_TIMEOUT_S)
    for r, (code, _, err) in enumerate(results):
        assert code == 0, f"rank {r} exited {code}:\n{err}"
    return results


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


# ---- tests


@pytest.fixture(scope="module")
def phases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, str, str]]]:
    """One 2-rank run of the phases and primitives scenario: its output directory and the
    ranks' ``(returncode, stdout, stderr)``."""
    out = tmp_path_factory.mktemp("phases")
    return out, run_ranks("phases", out)


def test_two_ranks_hold_identical_models_and_match_one_process(phases) -> None:
    tmp_path, _ = phases
    reference = prune_train_quantize_train(None)  # one process, in this test process
    for stage in ("pruned", "quantized"):
        ranks = [load_file(str(tmp_path / f"{stage}-rank{r}.safetensors")) for r in (0, 1)]
        assert ranks[0].keys() == ranks[1].keys() == reference[stage].keys()
        for name in ranks[0]:  # bit-identical across ranks: weights, masks, indices, codebooks
            assert torch.equal(ranks[0][name], ranks[1][name]), (stage, name)
        masks = [k for k in ranks[0] if k.endswith(".mask")]
        assert len(masks) == 3  # conv1, fc1, fc2
        if stage == "pruned":
            # The same global batches as one process: equal to float rounding.
            for name in masks:
                assert torch.equal(ranks[0][name], reference[stage][name])
            assert _max_abs_diff(ranks[0], reference[stage]) < 1e-5
        else:
            assert any(k.endswith(".codebook") for k in ranks[0])
            for name, t in ranks[0].items():
                ref = reference[stage][name]
                if name.endswith(".indices"):  # k-means on weights equal to float rounding
                    assert (t == ref).double().mean() > 0.99, name
                elif t.is_floating_point():
                    assert torch.allclose(t, ref, atol=1e-4), name
                else:
                    assert torch.equal(t, ref), name
    stats = [json.loads((tmp_path / f"stats-rank{r}.json").read_text()) for r in (0, 1)]
    assert stats[0] == stats[1] and stats[0]["world_size"] == 2  # global statistics
    # Training actually happened, and the statistics are over the whole data.
    (loss1, _, _), (loss2, _, _) = stats[0]["retrain"]
    assert loss2 < loss1


def test_a_killed_rank_ends_the_run_with_an_error(tmp_path: Path) -> None:
    t0 = time.monotonic()
    (code0, _, err0), (code1, _, _) = finish(launch("killed", tmp_path), WORKER_TIMEOUT_S)
    seconds = time.monotonic() - t0
    assert (tmp_path / "started-rank0").exists()
    assert code1 == 3  # the rank that died
    assert code0 == 1, err0  # the survivor stops by itself, with one line and no traceback
    assert "lost contact with another rank" in err0 and "during train" in err0, err0
    assert "Traceback" not in err0 and len(err0.strip().splitlines()) == 1, err0
    assert seconds < 60


def test_a_stuck_rank_ends_the_run_after_the_timeout(tmp_path: Path) -> None:
    procs = launch("hang", tmp_path, env={dist.ENV_TIMEOUT: "4"})
    t0 = time.monotonic()
    (code0, _, err0), _ = finish(procs[:1], WORKER_TIMEOUT_S) + finish(procs[1:], 0.1)
    seconds = time.monotonic() - t0  # rank 1 sleeps on and is killed above
    assert code0 == 1, err0
    assert "lost contact with another rank" in err0 and "4 s" in err0, err0
    assert seconds < 60


def test_primitives_on_two_ranks(phases) -> None:
    tmp_path, results = phases
    assert all("PASS" in out for _, out, _ in results)
    messages = [json.loads((tmp_path / f"messages-rank{r}.json").read_text()) for r in (0, 1)]
    for m in messages:
        assert "after round 2 pruning" in m["mask"]
        assert "first differing tensor 'fc1.parametrizations.weight.0.mask'" in m["mask"]
        assert "rank(s) [1]" in m["mask"]
        assert "after quantization" in m["layout"] and "different state-dict" in m["layout"]
        assert "before train" in m["fit"] and "'fc2.bias'" in m["fit"]
    assert messages[0]["mask"] == messages[1]["mask"]  # every rank stops with the same error
    assert (
        messages[0]["value"] == messages[1]["value"] == "resume: rank(s) [1] disagree with rank 0"
    )
    assert messages[0]["main"] == "OSError: disk full"
    assert "writing model.dcz failed on rank 0" in messages[1]["main"]
    bn = [load_file(str(tmp_path / f"bn-rank{r}.safetensors")) for r in (0, 1)]
    assert "bn.running_mean" in bn[0]
    assert all(torch.equal(bn[0][k], bn[1][k]) for k in bn[0])


# ---- single-process behaviour of the same functions


def test_single_process_primitives_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_from_env() is False and not dist.is_initialized()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    model = tiny_model()
    before = state(model)
    dist.broadcast_state_(model)
    dist.check_same_across_ranks(model, "x")
    dist.barrier()
    assert all(torch.equal(before[k], v) for k, v in state(model).items())
    assert dist.shard(7) == range(7) and dist.all_reduce_sum(2, 3.5) == (2.0, 3.5)
    assert dist.wrap_ddp(model) is model
    assert dist.run_on_main(lambda: 5, "x") == 5


def test_checksums_see_every_bit() -> None:
    """A pruned entry's stored 0.0 turned into -0.0 leaves the effective weight unchanged,
    yet the checksum of that one tensor changes: ranks must agree bit for bit."""
    model = tiny_model()
    prune_(model, {"*": KeepFraction(0.5)})
    before = dist.state_checksums(model)
    assert set(before) == set(model.state_dict())
    original = model.fc1.parametrizations.weight.original
    mask = model.fc1.parametrizations.weight[0].mask
    i, j = (~mask).nonzero()[0].tolist()
    assert original[i, j].item() == 0.0 and not torch.signbit(original[i, j])
    with torch.no_grad():
        original[i, j] = -0.0
    after = dist.state_checksums(model)
    assert [k for k in before if before[k] != after[k]] == ["fc1.parametrizations.weight.original"]


@pytest.mark.parametrize(("n", "batch", "world"), [(203, 32, 2), (10, 4, 3), (5, 8, 2), (3, 2, 4)])
def test_global_batches_are_the_single_process_batches(n: int, batch: int, world: int) -> None:
    """The ranks' parts of each step, put together in rank order, are exactly the batch one
    process takes at that step, and each rank has the same number of steps."""
    single = list(GlobalBatchSampler(n, batch, torch.Generator().manual_seed(5)))
    parts = [
        list(
            GlobalBatchSampler(n, batch, torch.Generator().manual_seed(5), rank=r, world_size=world)
        )
        for r in range(world)
    ]
    assert all(len(p) == len(single) == -(-n // batch) for p in parts)
    for step, whole in enumerate(single):
        assert sum((p[step] for p in parts), []) == whole
        sizes = [len(p[step]) for p in parts]
        assert max(sizes) - min(sizes) <= 1
    assert sorted(sum(single, [])) == list(range(n))


def test_sampler_epochs_must_come_in_order() -> None:
    s = GlobalBatchSampler(10, 3, torch.Generator())
    s.set_epoch(1)
    with pytest.raises(ValueError, match="in order"):
        s.set_epoch(3)


def test_fit_accepts_a_dataset_and_matches_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """A map-style Dataset and a Split of the same tensors train to the same bits."""
    from deep_compression.data import Split

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    train, test = tiny_data()
    config = TrainConfig(epochs=1, batch_size=BATCH, augment=1, seed=2)
    a, b = tiny_model(), tiny_model()
    fit(a, train, test, config, progress=False)
    fit(b, Split(train.x, train.y), Split(test.x, test.y), config, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(state(a).values(), state(b).values()))
    assert evaluate(a, test, batch_size=5) == evaluate(b, Split(test.x, test.y), batch_size=5)


def test_fit_refuses_bad_data_and_wrapped_models() -> None:
    with pytest.raises(ConfigError, match="map-style torch Dataset"):
        fit(tiny_model(), [(1, 2)], None, TrainConfig(epochs=1), progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="already wrapped in DataParallel"):
        dist.refuse_wrapped(nn.DataParallel(tiny_model()))


def test_fsdp_is_refused_with_a_reason() -> None:
    fsdp = pytest.importorskip("torch.distributed.fsdp")
    fully_shard = getattr(fsdp, "fully_shard", None)
    if fully_shard is None:
        pytest.skip("this torch has no fully_shard")
    # fully_shard needs a process group; a fake FSDP2 class (what fully_shard makes: a
    # subclass of FSDPModule and the model's class) is enough for the refusal.
    fake = type("FSDPTiny", (fsdp.FSDPModule, Tiny), {})
    model = tiny_model()
    model.__class__ = fake
    with pytest.raises(ConfigError, match="FSDP is not supported.*stop being masked"):
        dist.refuse_wrapped(model)


def test_bad_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match="RANK in 0..1"):
        dist.init_from_env()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        dist.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        dist.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setenv(dist.ENV_TIMEOUT, "-3")
    with pytest.raises(ConfigError, match=dist.ENV_TIMEOUT):
        dist.init_from_env()
    assert not dist.is_initialized()


@pytest.mark.mnist
def test_train_command_under_torchrun(mnist, run_cli, tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m deep_compression train``: one line of output per
    message (rank 0 prints), one checkpoint (rank 0 writes), and the sharded evaluation
    gives exactly the accuracy of one process (0 epochs: both hold the seeded initial
    weights)."""
    out = tmp_path / "two.safetensors"
    args = ["train", "--model", "lenet-300-100", "--epochs", "0", "--threads", "1"]
    src = str(Path(deep_compression.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = subprocess.run(
        [*launcher, "--nproc-per-node", "2", "-m", "deep_compression", *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("training lenet-300-100") == 1 and "on 2 processes" in proc.stdout
    assert proc.stdout.count("test error") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.safetensors"]
    one = tmp_path / "one.safetensors"
    single = run_cli(*args, "--out", str(one))
    assert single.returncode == 0, single.stderr
    from deep_compression.checkpoint import load_checkpoint

    (state2, meta2), (state1, meta1) = load_checkpoint(out), load_checkpoint(one)
    assert meta2.details["train"]["world_size"] == 2 == 2 * meta1.details["train"]["world_size"]
    assert meta2.test_error == meta1.test_error
    assert all(torch.equal(state1[k], state2[k]) for k in state1)


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1], sys.argv[2]))


def test_compress_under_torchrun(tmp_path: Path) -> None:
    """The whole pipeline on 2 processes: one set of files (rank 0 writes), every phase's
    line once (rank 0 prints), and a file that decodes to a working model."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 32)):
        for c, level in (("a", 60), ("b", 190)):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                px = np.clip(rng.normal(level, 40, (28, 28)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(tmp_path / "data" / split / c / f"{i}.png")
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'model = "lenet-300-100"\ndataset = "data"\n[train]\nepochs = 1\nbatch_size = 16\n'
        "[prune.retrain]\nepochs = 1\nbatch_size = 16\n"
        '[[prune.rounds]]\ncriteria = { "*" = { method = "fraction", keep = 0.2 } }\n'
        '[quantize]\nbits = { "*" = 3 }\n[quantize.finetune]\nepochs = 1\nbatch_size = 16\n'
    )
    src = str(Path(deep_compression.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env["DEEP_COMPRESSION_PROGRESS"] = "0"
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "deep_compression", "compress", "--train", "--recipe", str(recipe),
         "--out-dir", str(run), "--threads", "1", "--no-plots"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("[dense] trained 1 epochs") == 1, proc.stderr
    assert proc.stdout.count("## Stages") == 1
    assert sorted(p.name for p in run.iterdir()) == [
        "dense.safetensors", "model.dcz", "pipeline.json", "pruned.safetensors",
        "quantized.safetensors", "recipe.json", "report.json", "report.md", "stage-p.dcz",
        "stage-pq.dcz",
    ]  # fmt: skip
    from deep_compression.loading import load_dcz

    model, meta = load_dcz(run / "model.dcz")
    assert meta.stage == "quantized" and not model.training
