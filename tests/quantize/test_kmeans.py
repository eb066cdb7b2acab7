"""1-D k-means against independent references: scikit-learn's Lloyd, a brute-force
dynamic programme for the exact optimum, and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.cluster import KMeans

from deep_compression.errors import ConfigError
from deep_compression.quantize import kmeans as km

LLOYD_INITS = ("linear", "density", "forgy")


def pruned_like(n: int, seed: int) -> np.ndarray:
    """Weights of a pruned layer: Laplace-distributed with a gap around zero."""
    rng = np.random.default_rng(seed)
    w = rng.laplace(scale=0.05, size=3 * n)
    return w[np.abs(w) > 0.04][:n]


def optimal_sse_bruteforce(x: np.ndarray, k: int) -> float:
    """Exact minimum of the squared error by the O(k n^2) dynamic programme over sorted
    data (optimal 1-D clusters are contiguous runs). Independent of kmeans1d's SMAWK."""
    xs = np.sort(x)
    n = xs.size
    c1 = np.concatenate(([0.0], np.cumsum(xs)))
    c2 = np.concatenate(([0.0], np.cumsum(xs**2)))

    def cost(i: int, j: int) -> float:  # squared error of xs[i:j] around its mean
        s = c1[j] - c1[i]
        return c2[j] - c2[i] - s * s / (j - i)

    best = np.array([cost(0, j) if j else 0.0 for j in range(n + 1)])
    for _ in range(1, k):
        new = best.copy()
        for j in range(1, n + 1):
            new[j] = min([best[j]] + [best[i] + cost(i, j) for i in range(1, j)])
        best = new
    return float(best[n])


def test_hand_computed() -> None:
    c, labels = km.kmeans_1d([0.0, 0.1, 0.9, 1.0, 5.0], 3, init="linear")
    # linear init: 0, 2.5, 5 -> clusters {0, .1, .9, 1}, {}, {5}; the empty centroid moves
    # to the point farthest from its centroid (0 or 1, both 0.5 from 0.5; the lower run's
    # first end wins), then Lloyd settles on {0, .1}, {.9, 1}, {5}.
    np.testing.assert_allclose(c, [0.05, 0.95, 5.0])
    assert labels.tolist() == [0, 0, 1, 1, 2]
    assert km.inertia([0.0, 0.1, 0.9, 1.0, 5.0], c, labels) == pytest.approx(4 * 0.05**2)


def test_initialisations_by_hand() -> None:
    xs = np.arange(11, dtype=np.float64)  # 0..10
    np.testing.assert_allclose(km.initial_centroids(xs, 3, "linear"), [0, 5, 10])
    # CDF levels 1/6, 3/6, 5/6 of 11 evenly spaced points: positions 10/6, 5, 50/6.
    np.testing.assert_allclose(km.initial_centroids(xs, 3, "density"), [10 / 6, 5, 50 / 6])
    forgy = km.initial_centroids(xs, 4, "forgy", seed=3)
    assert len(set(forgy)) == 4 and set(forgy) <= set(xs)
    assert np.array_equal(forgy, km.initial_centroids(xs, 4, "forgy", seed=3))
    assert not np.array_equal(forgy, km.initial_centroids(xs, 4, "forgy", seed=4))
    # Two well separated triples: the optimum is their means.
    two = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])
    np.testing.assert_allclose(km.initial_centroids(two, 2, "optimal"), [1.0, 11.0])


@pytest.mark.parametrize("init", LLOYD_INITS)
@pytest.mark.parametrize(
    ("k", "seed", "pruned"),
    [(2, 0, True), (4, 1, True), (8, 2, True), (16, 3, True), (32, 4, False)],
)
def test_lloyd_matches_scikit_learn(init: str, k: int, seed: int, pruned: bool) -> None:
    """From the same initial centroids, our Lloyd and scikit-learn's reach the same fixed
    point: same partition, centroids equal to rounding.

    Where clusters empty out, both relocate the centroid to a far point but not always
    the same one (scikit-learn: the farthest points; here: the farthest distinct run ends),
    and the runs may then part ways; with 32 linear centroids on a pruned layer's gap they
    do, so that case uses unpruned (Gaussian) weights.
    """
    x = pruned_like(2000, seed) if pruned else np.random.default_rng(seed).normal(size=2000)
    start = km.initial_centroids(np.sort(x), k, init, seed=seed)
    ours, labels = km.kmeans_1d(x, k, init=init, seed=seed, max_iter=10_000)
    ref = KMeans(k, init=start.reshape(-1, 1), n_init=1, max_iter=10_000, tol=0.0)
    ref.fit(x.reshape(-1, 1))
    # scikit-learn keeps a relocated empty cluster's number, so its centroids may be out
    # of order; ours are ascending. Compare through the rank of each centroid.
    theirs = ref.cluster_centers_.ravel()
    rank = np.argsort(np.argsort(theirs, kind="stable"), kind="stable")
    np.testing.assert_allclose(ours, np.sort(theirs), rtol=1e-12, atol=1e-14)
    assert np.array_equal(labels, rank[ref.labels_])
    assert km.inertia(x, ours, labels) == pytest.approx(ref.inertia_, rel=1e-10)


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_optimal_is_the_exact_optimum(k: int) -> None:
    x = pruned_like(60, seed=k)
    c, labels = km.kmeans_1d(x, k, init="optimal")
    assert km.inertia(x, c, labels) == pytest.approx(optimal_sse_bruteforce(x, k), rel=1e-9)


@pytest.mark.parametrize("k", [4, 16, 64])
def test_optimal_never_worse_than_lloyd_or_scikit_learn(k: int) -> None:
    x = pruned_like(5000, seed=k)
    c, labels = km.kmeans_1d(x, k, init="optimal")
    best = km.inertia(x, c, labels)
    for init in LLOYD_INITS:
        for seed in range(3):
            other = km.kmeans_1d(x, k, init=init, seed=seed)
            assert best <= km.inertia(x, *other) * (1 + 1e-12), (init, seed)
    ref = KMeans(k, n_init=5, random_state=0).fit(x.reshape(-1, 1))
    assert best <= ref.inertia_ * (1 + 1e-12)


def test_empty_clusters_are_relocated() -> None:
    """Linear init on pruned weights puts centroids in the gap around zero; none stays
    unused, and the result is still a Lloyd fixed point."""
    x = pruned_like(3000, seed=7)
    c, labels = km.kmeans_1d(x, 64, init="linear")
    assert c.size == 64 and np.unique(labels).size == 64
    np.testing.assert_allclose(c, [x[labels == j].mean() for j in range(64)], rtol=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(
        np.float64,
        st.integers(1, 120),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32),
    ),
    k=st.integers(1, 12),
    init=st.sampled_from(km.INITS),
    max_iter=st.sampled_from([0, 1, 5, 20_000]),
)
def test_properties(x: np.ndarray, k: int, init: str, max_iter: int) -> None:
    c, labels = km.kmeans_1d(x, k, init=init, max_iter=max_iter, seed=1)
    distinct = np.unique(x)
    assert c.shape == (min(k, distinct.size),) and labels.shape == x.shape
    assert np.all(np.diff(c) >= 0), "centroids ascending"
    assert c.min() >= x.min() and c.max() <= x.max()
    # Every point has the nearest centroid (brute force over all of them).
    dist = np.abs(x[:, None] - c[None, :])
    assert np.allclose(dist[np.arange(x.size), labels], dist.min(axis=1), rtol=0, atol=1e-9)
    if distinct.size <= k:
        assert np.array_equal(c, distinct) and np.array_equal(c[labels], x)
    # Invariant to the order of the data.
    perm = np.random.default_rng(0).permutation(x.size)
    c2, labels2 = km.kmeans_1d(x[perm], k, init=init, max_iter=max_iter, seed=1)
    assert np.array_equal(c, c2) and np.array_equal(labels[perm], labels2)


def test_optimal_lower_bound_on_random_data() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        x = rng.normal(size=40)
        k = int(rng.integers(2, 6))
        opt = km.inertia(x, *km.kmeans_1d(x, k, init="optimal"))
        assert opt == pytest.approx(optimal_sse_bruteforce(x, k), rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": [], "n_clusters": 2}, "empty"),
        ({"x": [1.0, np.nan], "n_clusters": 2}, "NaN or infinity"),
        ({"x": ["a", "b"], "n_clusters": 2}, "real numbers"),
        ({"x": [1.0, 2.0], "n_clusters": 0}, "n_clusters must be an integer >= 1"),
        ({"x": [1.0, 2.0], "n_clusters": 2.5}, "n_clusters must be an integer >= 1"),
        ({"x": [1.0, 2.0], "n_clusters": 2, "init": "kmeans++"}, "unknown k-means init"),
        ({"x": [1.0, 2.0], "n_clusters": 2, "max_iter": -1}, "max_iter"),
    ],
)
def test_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        km.kmeans_1d(**kwargs)


def test_no_torch_import() -> None:
    """The pure algorithm must run where torch is absent (numpy-only decoders)."""
    import subprocess
    import sys

    # The module alone, as a numpy-only decoder would vendor it (its package, the
    # quantization stage, is torch code).
    code = (
        "import sys, importlib.util; sys.modules['torch'] = None\n"
        "import deep_compression.errors\n"
        f"spec = importlib.util.spec_from_file_location('km', {km.__file__!r})\n"
        "km = importlib.util.module_from_spec(spec); spec.loader.exec_module(km)\n"
        "print(km.kmeans_1d([0.0, 1.0, 2.0, 9.0], 2, init='optimal')[0].tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0, 9.0]"
