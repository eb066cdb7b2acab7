"""Entropy-constrained quantization (rdq) against independent references: brute-force
optimal assignment, plain k-means at lam = 0, a brute-force lower envelope, the rate
model's definition, and the behaviour the rate term must have."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deep_compression.errors import ConfigError
from deep_compression.quantize import rdq
from deep_compression.quantize.kmeans import kmeans_1d
from deep_compression.quantize.rdq_ecsq import _grid  # the starting grid, tested where it lives
from deep_compression.quantize.rdq_lloyd import lloyd_weighted


def laplace(n: int, seed: int, scale: float = 0.05) -> np.ndarray:
    return np.random.default_rng(seed).laplace(scale=scale, size=n)


def lagrangian(x, h, lam, c, labels) -> float:
    """J = sum h (x - c[label])^2 + lam * sum -log2 p(label), p the labels' histogram."""
    counts = np.bincount(labels, minlength=c.size)
    p = counts / labels.size
    lengths = -np.log2(np.where(p > 0, p, 1.0))
    return float(np.sum(h * (x - c[labels]) ** 2) + lam * lengths[labels].sum())


def test_envelope_matches_brute_force_argmin() -> None:
    rng = np.random.default_rng(0)
    for _trial in range(50):
        m = int(rng.integers(1, 12))
        c = np.sort(rng.choice(np.linspace(-1, 1, 101), size=m, replace=False))
        lengths = rng.uniform(0, 8, size=m)
        t = float(rng.choice([0.0, 1e-3, 1e-2, 0.1]))
        x = rng.uniform(-1.2, 1.2, size=400)
        win, bounds = rdq.lower_envelope(c, lengths, t)
        labels = win[np.searchsorted(bounds, x, side="left")]
        brute = np.argmin((x[:, None] - c) ** 2 + t * lengths, axis=1)
        cost = lambda lab: (x - c[lab]) ** 2 + t * lengths[lab]  # noqa: E731, B023 (called at once)
        np.testing.assert_allclose(cost(labels), cost(brute), rtol=0, atol=1e-12)


def test_fixed_point_is_optimal_assignment_for_its_codebook() -> None:
    """At convergence no single weight can lower J by moving to another codeword (the
    assignment is a brute-force argmin under the final lengths)."""
    x = laplace(3000, 1)
    for lam in (1e-4, 1e-3):
        r = rdq.rd_quantize(x, lam, max_iter=500)
        c = np.union1d(r.codebook, [0.0])
        labels = np.searchsorted(c, r.values())
        counts = np.bincount(labels, minlength=c.size)
        lengths = -np.log2(counts / x.size)
        brute = np.argmin((x[:, None] - c) ** 2 + lam * lengths, axis=1)
        cost = lambda lab: (x - c[lab]) ** 2 + lam * lengths[lab]  # noqa: E731, B023 (called at once)
        assert np.all(cost(labels) <= cost(brute) + 1e-12)


def test_tiny_case_against_exhaustive_search() -> None:
    """On 7 weights with codewords {-a, 0, a} (a fixed), every one of the 3^7 labelings is
    tried; the result's J is within the exhaustive optimum's neighbourhood: Lloyd finds a
    local optimum, so it must at least beat or tie every labeling reachable by moving one
    weight, and here (well separated data) equal the global optimum."""
    x = np.array([-0.31, -0.29, -0.02, 0.01, 0.03, 0.28, 0.33])
    lam = 0.004
    c = np.array([-0.3, 0.0, 0.3])
    best = min(
        (lagrangian(x, 1.0, lam, c, np.array(lab)), lab)
        for lab in itertools.product(range(3), repeat=x.size)
    )
    # Codewords frozen where the exhaustive search put them: one assignment step from the
    # nearest partition, then the lengths settle.
    r = rdq.rd_quantize(x, lam, init_codebook=[-0.3, 0.3], max_iter=1)
    labels = np.searchsorted(np.union1d(r.codebook, [0.0]), r.values())
    assert lagrangian(x, 1.0, lam, c, labels) == pytest.approx(best[0])
    assert tuple(labels) == best[1]


def test_lam_zero_without_zero_codeword_is_kmeans() -> None:
    x = laplace(5000, 2)
    init = np.linspace(x.min(), x.max(), 8)
    r = rdq.rd_quantize(x, 0.0, init_codebook=init, zero_codeword=False, max_iter=20000)
    c_ref, labels_ref = kmeans_1d(x, 8, init="linear", max_iter=20000)
    np.testing.assert_allclose(r.codebook, c_ref, rtol=1e-9, atol=1e-12)
    assert np.array_equal(r.indices, labels_ref)
    assert r.mask.all()


def test_sorted_path_matches_brute_force_path_with_groups() -> None:
    """Per-weight importance with few distinct values (grouped sorted Lloyd) against the
    brute-force O(n m) Lloyd from the same start: the same codewords and partition."""
    rng = np.random.default_rng(3)
    x = laplace(4000, 3)
    h = rng.choice([0.0, 0.5, 1.0, 2.0], size=x.size)
    for lam in (1e-4, 1e-3):
        r = rdq.rd_quantize(x, lam, importance=h, max_iter=300)
        c0 = _grid(x, rdq.initial_step(lam, float(h.mean())), 256, True)
        c_ref, labels_ref, _ = lloyd_weighted(x, h, lam, c0, True, 300)
        np.testing.assert_allclose(np.union1d(r.codebook, [0.0]), c_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(r.values(), c_ref[labels_ref], rtol=1e-9, atol=1e-12)


def test_larger_lam_never_more_bits() -> None:
    x = laplace(20000, 4)
    lams = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
    results = [rdq.rd_quantize(x, lam) for lam in lams]
    bits = [r.rate_bits for r in results]
    dist = [r.distortion for r in results]
    assert all(a >= b for a, b in zip(bits, bits[1:])), bits
    assert all(a <= b for a, b in zip(dist, dist[1:])), dist
    kept = [r.mask.mean() for r in results]
    assert all(a >= b for a, b in zip(kept, kept[1:])), kept
    assert kept[-1] < 0.5 < kept[0]  # sparsity comes from the rate term


def test_model_bits_definition() -> None:
    mask = np.array([True, False, False, True, True, False, False, False])
    indices = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    # positions: N h2(3/8); indices: 3 H(1/3, 2/3); codebook 2 x 16 bits.
    h2 = -(3 / 8 * math.log2(3 / 8) + 5 / 8 * math.log2(5 / 8))
    hq = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    assert rdq.model_bits(mask, indices, 2) == pytest.approx(8 * h2 + 3 * hq + 32)
    assert rdq.model_bits(np.ones(4, bool), np.zeros(4, int), 1, 32) == pytest.approx(32)


def test_result_fields_and_importance_zero() -> None:
    x = laplace(1000, 5)
    r = rdq.rd_quantize(x, 1e-4)
    assert r.indices.shape == r.mask.shape == (1000,)
    assert np.all(np.diff(r.codebook) > 0) and np.all(r.codebook != 0)
    assert np.all(r.indices[~r.mask] == 0) and r.indices.max() < r.codebook.size
    assert r.distortion == pytest.approx(float(np.sum((x - r.values()) ** 2)))
    # Weights nobody cares about all go to the cheapest codeword, the most frequent one.
    h = np.where(np.arange(1000) < 500, 1.0, 0.0)
    r2 = rdq.rd_quantize(x, 1e-4, importance=h)
    values, counts = np.unique(r2.values(), return_counts=True)
    assert np.all(r2.values()[500:] == values[np.argmax(counts)])
    # With a large lam that codeword is zero: the unimportant half is pruned.
    r3 = rdq.rd_quantize(x, 1e-2, importance=h)
    assert not r3.mask[500:].any() and r3.mask.mean() < 0.5


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lam=-1.0),
        dict(lam=float("nan")),
        dict(lam=1e-4, max_iter=0),
        dict(lam=1e-4, importance=-1.0),
        dict(lam=1e-4, importance=np.ones(3)),
        dict(lam=0.0),
        dict(lam=1e-4, max_codewords=1 << 20),
    ],
)
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ConfigError):
        rdq.rd_quantize(laplace(10, 0), **kwargs)
    with pytest.raises(ConfigError):
        rdq.rd_quantize([1.0, float("inf")], 1e-4)


def test_gptq_identity_hessian_no_worse_than_diagonal() -> None:
    """With H = I there is nothing to compensate: rd_gptq's J is within rounding of the
    plain ECSQ's; with correlated inputs its output error at equal lam is lower."""
    rng = np.random.default_rng(6)
    w = rng.laplace(scale=0.05, size=(20, 30))
    x = rng.normal(size=(500, 30)) @ rng.normal(size=(30, 30)) * 0.3 + rng.normal(size=(500, 1))
    cov = np.cov(x, rowvar=False, bias=True)
    lam = 2e-4
    g = rdq.rd_gptq(w, cov, lam, damp=1e-6)
    plain = rdq.rd_quantize(
        w.reshape(-1), lam, importance=np.broadcast_to(np.diag(cov), w.shape).reshape(-1)
    )
    d_plain = float(
        np.einsum(
            "oi,ij,oj->",
            w - plain.values().reshape(w.shape),
            cov,
            w - plain.values().reshape(w.shape),
        )
    )
    assert g.distortion + lam * g.rate_bits < d_plain + lam * plain.rate_bits
    diff = w - g.values().reshape(w.shape)
    assert g.distortion == pytest.approx(float(np.einsum("oi,ij,oj->", diff, cov, diff)))


def test_no_torch_import() -> None:
    """rdq and its modules (rdq_ecsq, rdq_lloyd, rdq_gptq) import no torch. The quantize
    package's __init__ does, so the package is stood in for by a bare module on the same
    path, as a numpy-only tool would vendor the files."""
    code = (
        "import sys, types, numpy as np\n"
        "pkg = types.ModuleType('deep_compression.quantize')\n"
        f"pkg.__path__ = [{str(Path(rdq.__file__).parent)!r}]\n"
        "sys.modules['deep_compression.quantize'] = pkg\n"
        "from deep_compression.quantize import rdq\n"
        "rdq.rd_quantize(np.linspace(-1, 1, 50), 1e-3)\n"
        "rdq.rd_gptq(np.linspace(-1, 1, 50).reshape(5, 10), np.eye(10), 1e-3)\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
