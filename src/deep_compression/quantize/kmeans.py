"""One-dimensional k-means for weight sharing: four initialisations and a vectorised Lloyd.

The paper clusters each layer's surviving weights into ``k = 2**bits`` shared values and
compares three ways to place the initial centroids (Han et al. 2016, section 3.2):

``linear``
    ``k`` points evenly spaced between the smallest and the largest weight. Keeps centroids
    on the rare large weights, which the paper finds matter most.
``density``
    ``k`` points evenly spaced on the empirical CDF (the quantiles ``(i + 0.5) / k``), so
    centroids crowd where weights are dense.
``forgy``
    ``k`` distinct weights drawn uniformly at random (seeded).
``optimal``
    The exact global minimum of the squared error, found by dynamic programming in the
    ``kmeans1d`` library (O(k n)); Lloyd iterations cannot improve it.

Lloyd's algorithm in one dimension needs no distance matrix: with the data sorted once, the
clusters of sorted centroids are contiguous runs, split at the midpoints between
neighbouring centroids (``np.searchsorted``), and each run's mean comes from a cumulative
sum. An iteration therefore costs O(k log n) after an O(n log n) sort. That matters:
1-D Lloyd converges slowly (measured on 4M Laplace-distributed weights: ~1,000 iterations
to its fixed point at k = 32, 10,000 to 16,000 at k = 256), yet running it to the fixed
point takes 0.2 to 2.4 s there, so the default cap (20,000) is rarely reached. The exact
``optimal`` is slower at that scale (kmeans1d took ~35 s for 4M weights at k = 32).

Empty clusters (``linear`` centroids that fall in the gap pruning leaves around zero, or
equal ``density`` centroids on repeated values) are relocated as in scikit-learn: the
empty centroid moves onto the point farthest from its own centroid (in 1-D, an end of a
cluster's run; distinct points only), which strictly lowers the squared error.

This module is pure numpy (no torch), so a numpy-only decoder or tool can use it.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from deep_compression.errors import ConfigError

__all__ = ["INITS", "kmeans_1d", "initial_centroids", "assign", "inertia"]

INITS: Final = ("linear", "density", "forgy", "optimal")


def _as_data(x: npt.ArrayLike) -> np.ndarray:
    """``x`` as a finite 1-D float64 array (a copy is made only when needed)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise ConfigError(f"k-means data must be real numbers, got dtype {arr.dtype}")
    arr = np.ravel(arr).astype(np.float64, copy=False)
    if arr.size == 0:
        raise ConfigError("k-means data is empty: there is nothing to cluster")
    if not np.isfinite(arr).all():
        raise ConfigError("k-means data contains NaN or infinity")
    return arr


def _check_k(n_clusters: object) -> int:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer):
        raise ConfigError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    if n_clusters < 1:
        raise ConfigError(f"n_clusters must be an integer >= 1, got {n_clusters}")
    return int(n_clusters)


def initial_centroids(
    x_sorted: np.ndarray, n_clusters: int, init: str, seed: int = 0
) -> np.ndarray:
    """The ``n_clusters`` starting centroids of ``init``, ascending.

    Args:
        x_sorted: ``(n,)`` float64 data, sorted ascending.
        n_clusters: ``k``; at most the number of distinct values for ``forgy``.
        init: one of :data:`INITS`.
        seed: seeds the ``forgy`` draw (the other methods are deterministic).

    Returns:
        ``(k,)`` float64 centroids, ascending (equal values are possible for ``density``
        on data with many repeats; Lloyd then relocates them).
    """
    n, k = x_sorted.size, n_clusters
    if init == "linear":
        return np.linspace(x_sorted[0], x_sorted[-1], k)
    if init == "density":
        # Evenly spaced levels of the CDF, at the centres of k equal-mass bins, mapped back
        # through the inverse empirical CDF (linear interpolation between order statistics).
        pos = (np.arange(k) + 0.5) / k * (n - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, n - 1)
        frac = pos - lo
        return x_sorted[lo] * (1.0 - frac) + x_sorted[hi] * frac
    if init == "forgy":
        # Draw among distinct values so no two initial centroids coincide; sampling by
        # position in the sorted data makes the draw independent of the input order.
        distinct = np.concatenate(([True], x_sorted[1:] != x_sorted[:-1]))
        values = x_sorted[distinct]
        rng = np.random.default_rng(seed)
        return np.sort(values[rng.choice(values.size, size=k, replace=False)])
    if init == "optimal":
        import kmeans1d

        # kmeans1d copies through ctypes element by element; a Python list is its fastest
        # input. It returns the centroids of the globally optimal partition.
        return np.sort(np.asarray(kmeans1d.cluster(x_sorted.tolist(), k).centroids))
    raise ConfigError(f"unknown k-means init {init!r}: choose one of {', '.join(INITS)}")


def _boundaries(x_sorted: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(k+1,)`` split positions: cluster ``j`` is ``x_sorted[b[j]:b[j+1]]``.

    A point exactly on a midpoint goes to the lower centroid, as ``argmin`` over distances
    would (and as scikit-learn does).
    """
    b = np.empty(centroids.size + 1, dtype=np.intp)
    b[0], b[-1] = 0, x_sorted.size
    b[1:-1] = np.searchsorted(x_sorted, (centroids[:-1] + centroids[1:]) / 2, side="right")
    return b


def _relocate_empty(
    x_sorted: np.ndarray, b: np.ndarray, old: np.ndarray, new: np.ndarray, empty: np.ndarray
) -> None:
    """Move the empty clusters' centroids (in ``new``, in place) onto far-away points.

    In 1-D the point farthest from its centroid is an end of a cluster's run, so only the
    two ends of each non-empty run are candidates. Each relocated centroid takes a distinct
    point not already a centroid; that point then costs zero instead of a positive
    distance, so the squared error strictly drops and Lloyd cannot cycle.
    """
    full = np.flatnonzero(~empty)
    lo, hi = b[full], b[full + 1] - 1
    values = np.concatenate((x_sorted[lo], x_sorted[hi]))
    dist = np.abs(values - np.concatenate((old[full], old[full])))
    order = np.argsort(-dist, kind="stable")
    values, dist = values[order], dist[order]
    keep = (dist > 0) & ~np.isin(values, new[full])
    values = values[keep]
    _, first = np.unique(values, return_index=True)  # first = farthest occurrence
    values = values[np.sort(first)]
    targets = np.flatnonzero(empty)[: values.size]
    new[targets] = values[: targets.size]


def _lloyd(x_sorted: np.ndarray, centroids: np.ndarray, max_iter: int) -> tuple[np.ndarray, int]:
    """Lloyd iterations from ``centroids`` (ascending) until a fixed point or ``max_iter``."""
    # Cumulative sums turn every cluster mean into two lookups. float64 keeps the
    # differences accurate to ~1e-16 of the total, far below any weight's resolution.
    csum = np.concatenate(([0.0], np.cumsum(x_sorted)))
    c = centroids
    for it in range(1, max_iter + 1):
        b = _boundaries(x_sorted, c)
        counts = np.diff(b)
        sums = csum[b[1:]] - csum[b[:-1]]
        empty = counts == 0
        new = c.copy()
        np.divide(sums, counts, out=new, where=~empty)
        if empty.any():
            _relocate_empty(x_sorted, b, c, new, empty)
        new.sort()
        if np.array_equal(new, c):  # same partition twice: a fixed point
            return c, it
        c = new
    return c, max_iter


def assign(x: npt.ArrayLike, centroids: npt.ArrayLike) -> np.ndarray:
    """Index of the nearest centroid for each point (ties to the lower centroid).

    Args:
        x: ``(n,)`` data.
        centroids: ``(k,)`` centroids, ascending.

    Returns:
        ``(n,)`` int64 labels in ``[0, k)``.
    """
    c = np.asarray(centroids, dtype=np.float64)
    return np.searchsorted((c[:-1] + c[1:]) / 2, np.asarray(x, dtype=np.float64), side="left")


def inertia(x: npt.ArrayLike, centroids: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Sum of squared distances of the points to their centroids (scikit-learn's ``inertia_``)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum((x - np.asarray(centroids, dtype=np.float64)[labels]) ** 2))


def kmeans_1d(
    x: npt.ArrayLike,
    n_clusters: int,
    *,
    init: str = "linear",
    max_iter: int = 20_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster 1-D data into at most ``n_clusters`` shared values.

    Args:
        x: ``(n,)`` real data (any shape is flattened), ``n >= 1``, finite.
        n_clusters: ``k >= 1``. If ``x`` has ``d <= k`` distinct values the result is
            exact: the ``d`` values themselves, whatever ``init``.
        init: ``"linear"``, ``"density"``, ``"forgy"`` or ``"optimal"`` (see the module
            docstring).
        max_iter: at most this many Lloyd iterations after the initialisation; 0 keeps the
            initial centroids (points are still assigned to the nearest one). Lloyd stops
            earlier at a fixed point.
        seed: seeds the ``forgy`` draw.

    Returns:
        ``(centroids, labels)``: ``centroids`` ``(min(k, d),)`` float64, ascending;
        ``labels`` ``(n,)`` int64, the nearest centroid of each point of ``x`` (in ``x``'s
        order).

    Raises:
        ConfigError: empty or non-finite data, ``n_clusters < 1``, unknown ``init``,
            negative ``max_iter``.

    >>> c, labels = kmeans_1d([0.0, 0.1, 0.9, 1.0, 5.0], 3)
    >>> c.round(3).tolist(), labels.tolist()
    ([0.05, 0.95, 5.0], [0, 0, 1, 1, 2])
    """
    data = _as_data(x)
    k = _check_k(n_clusters)
    if init not in INITS:
        raise ConfigError(f"unknown k-means init {init!r}: choose one of {', '.join(INITS)}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 0:
        raise ConfigError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    x_sorted = np.sort(data)
    distinct = x_sorted[np.concatenate(([True], x_sorted[1:] != x_sorted[:-1]))]
    if distinct.size <= k:
        # No more values than clusters: every value is its own centroid, with zero error.
        return distinct, np.searchsorted(distinct, data)
    centroids = initial_centroids(x_sorted, k, init, seed)
    if max_iter > 0:
        centroids, _ = _lloyd(x_sorted, centroids, int(max_iter))
    return centroids, assign(data, centroids)
