"""Rate-distortion quantization with GPTQ/OBS error compensation (see :mod:`.rdq`).

Pure numpy (no torch).
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping

import numpy as np
import numpy.typing as npt

from deep_compression.errors import ConfigError
from deep_compression.quantize.rdq_ecsq import RDQuantization, check_rd_arguments, rd_quantize

__all__ = ["FACTOR_CACHE_BYTES", "Factors", "rd_gptq"]

# What rd_gptq derives from ``H`` alone, by a digest of ``H``: ``(order, U)``.
Factors = MutableMapping[bytes, tuple[np.ndarray, np.ndarray]]
# The most a ``factors`` cache holds (the sum of its ``U``s, each as large as ``H``); past
# it, factors are computed anew. (ResNet-44's 43 convolutions: 44 MB in all.)
FACTOR_CACHE_BYTES = 1 << 30


def rd_gptq(
    w: npt.ArrayLike,
    hessian: npt.ArrayLike,
    lam: float,
    *,
    passes: int = 2,
    row_weights: npt.ArrayLike | None = None,
    max_codewords: int = 256,
    damp: float = 0.01,
    act_order: bool = True,
    factors: Factors | None = None,
) -> RDQuantization:
    """Rate-distortion assignment with error compensation (GPTQ/OBS) for one layer.

    The distortion is the layer's output error ``sum_o (w_o - q_o)^T H (w_o - q_o)`` for a
    symmetric positive semi-definite ``H`` (e.g. the covariance of the layer's inputs),
    not a sum over weights. As in GPTQ (Frantar et al. 2023, after OBS), the columns are
    quantized one at a time and the error of each is compensated on the columns not yet
    quantized: with ``U`` the upper Cholesky factor of ``H^-1``, quantizing column ``j`` to
    ``q`` adds ``(w - q)^2 / U_jj^2`` to the output error. Here the choice of ``q`` is a
    rate-distortion decision among the codewords (zero included), as in
    :func:`rd_quantize`: ``argmin_c (w - c)^2 / U_jj^2 + lam len(c)``, with the lengths of
    the previous pass. The codewords and the first lengths come from :func:`rd_quantize`
    with the diagonal of ``H`` as importance; the codewords then stay fixed.

    Args:
        w: ``(out, cols)`` weights.
        hessian: ``(cols, cols)`` symmetric PSD ``H``.
        lam: Lagrange multiplier (output-error units per bit).
        row_weights: ``(out,)`` non-negative weights of each row's output error
            (default 1): the distortion becomes ``sum_o r_o (w_o - q_o)^T H (w_o - q_o)``.
        max_codewords: passed to the first :func:`rd_quantize`.
        passes: assignment passes (each re-estimates the code lengths from the last).
        damp: ``H += damp * mean(diag H) * I`` first (GPTQ's dampening; makes a singular
            ``H`` invertible, e.g. inputs that never vary).
        act_order: quantize the columns in order of decreasing ``H_jj`` (GPTQ's
            ``act_order``), so that the most important ones have the most freedom left
            to compensate.
        factors: a dict kept across calls with the same ``hessian`` and other ``lam`` (a
            search): the ordering and Cholesky factor, which depend on ``H`` alone, are
            computed once (on ResNet-44, about half of GPTQ's time). Looked up by a
            digest of ``H``'s bytes, ``damp`` and ``act_order``, so a stale entry is never
            used.

    Returns:
        The :class:`RDQuantization` of the flattened (C order) result; ``distortion`` is
        the output error ``sum_o r_o (w_o - q_o)^T H (w_o - q_o)`` with the undamped ``H``;
        ``iterations`` is the pass it comes from (0: the uncompensated ECSQ was better).
    """
    W0 = np.asarray(w, dtype=np.float64)
    H0 = np.asarray(hessian, dtype=np.float64)
    r = _check_gptq(W0, H0, lam, row_weights, max_codewords)
    out, cols = W0.shape
    order, U = _factor(H0, damp, act_order, factors)
    Wp = W0[:, order]
    # Codewords and first lengths: ECSQ with the diagonal of H as per-weight importance.
    diag = np.outer(r, np.clip(np.diag(H0)[order], 0, None)).reshape(-1)
    first = rd_quantize(Wp.reshape(-1), lam, importance=diag, max_codewords=max_codewords)
    c = np.union1d(first.codebook, [0.0])
    inv = np.empty(cols, dtype=np.int64)
    inv[order] = np.arange(cols)

    labels = np.searchsorted(c, first.values()).reshape(out, cols)
    # Candidates: the ECSQ result itself, then each compensated pass. Compensation can
    # run away with coarse codebooks (errors pushed onto later columns grow them, fewer
    # zeros, longer zero code, fewer zeros again: measured on LeNet-5's fc1), so the one
    # of least J = D + lam R under the true H is returned: never worse than plain ECSQ.
    best = _finish(W0, H0, r, c, labels[:, inv], 0)
    for it in range(1, max(1, passes) + 1):
        labels = _compensated_pass(Wp, U, r, c, labels, lam)
        cand = _finish(W0, H0, r, c, labels[:, inv], it)
        if cand.distortion + lam * cand.rate_bits < best.distortion + lam * best.rate_bits:
            best = cand
    return best


def _factor(
    H0: np.ndarray, damp: float, act_order: bool, factors: Factors | None
) -> tuple[np.ndarray, np.ndarray]:
    """The column order and ``U``, the upper Cholesky factor of the damped, permuted
    ``H^-1`` (GPTQ's trick for the sequential OBS updates); from ``factors`` if there."""
    key = b""
    if factors is not None:
        h = hashlib.blake2b(f"{H0.shape}|{damp!r}|{act_order}".encode(), digest_size=16)
        h.update(memoryview(np.ascontiguousarray(H0)).cast("B"))
        key = h.digest()
        if key in factors:
            return factors[key]
    cols = H0.shape[0]
    order = np.argsort(-np.diag(H0), kind="stable") if act_order else np.arange(cols)
    H = H0[np.ix_(order, order)].copy()
    mean_diag = float(np.mean(np.diag(H))) if cols else 0.0
    H[np.diag_indices(cols)] += damp * mean_diag if mean_diag > 0 else 1.0
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    order.flags.writeable = U.flags.writeable = False  # shared by every later call
    if factors is not None and sum(u.nbytes for _, u in factors.values()) < FACTOR_CACHE_BYTES:
        factors[key] = (order, U)
    return order, U


def _check_gptq(
    W0: np.ndarray,
    H0: np.ndarray,
    lam: float,
    row_weights: npt.ArrayLike | None,
    max_codewords: int,
) -> np.ndarray:
    """Validate :func:`rd_gptq`'s arguments; returns the ``(out,)`` row weights."""
    if W0.ndim != 2 or H0.shape != (W0.shape[1], W0.shape[1]):
        raise ConfigError(f"rd_gptq: weight {W0.shape} and hessian {H0.shape} do not match")
    if not (np.isfinite(W0).all() and np.isfinite(H0).all()):
        raise ConfigError("rd_gptq: weights or hessian contain NaN or infinity")
    check_rd_arguments(lam, 1, max_codewords)
    if lam == 0:
        raise ConfigError("rd_gptq: lam must be > 0")
    out = W0.shape[0]
    r = np.ones(out) if row_weights is None else np.asarray(row_weights, dtype=np.float64)
    if r.shape != (out,) or not np.isfinite(r).all() or (r < 0).any():
        raise ConfigError(f"rd_gptq: row_weights must be ({out},) finite and >= 0")
    return r


def _finish(
    W0: np.ndarray, H0: np.ndarray, r: np.ndarray, c: np.ndarray, labels2: np.ndarray, it: int
) -> RDQuantization:
    """The result of ``(out, cols)`` labels into ``c`` (original column order)."""
    out, cols = W0.shape
    labels = labels2.reshape(-1)
    used = np.bincount(labels, minlength=c.size) > 0
    labels = (np.cumsum(used) - 1)[labels]
    res = RDQuantization.from_labels(W0.reshape(-1), np.ones(1), c[used], labels, it)
    diff = W0 - res.values().reshape(out, cols)
    # sum_o r_o diff_o^T H diff_o (a product then a row sum: einsum over three
    # operands would not use BLAS).
    distortion = float(r @ ((diff @ H0) * diff).sum(1))
    return RDQuantization(res.codebook, res.indices, res.mask, distortion, res.rate_bits, it)


def _compensated_pass(
    Wp: np.ndarray, U: np.ndarray, r: np.ndarray, c: np.ndarray, labels: np.ndarray, lam: float
) -> np.ndarray:
    """One GPTQ pass over the columns of ``Wp`` (permuted order), with the code lengths of
    the ``(out, cols)`` ``labels`` of the previous pass; returns the new labels."""
    out, cols = Wp.shape
    counts = np.bincount(labels.reshape(-1), minlength=c.size).astype(np.float64)
    with np.errstate(divide="ignore"):
        lengths = np.where(counts > 0, -np.log2(counts / counts.sum()), np.inf)
    rate = lam * lengths
    Wq = Wp.copy()
    labels = np.zeros((out, cols), dtype=np.int64)
    for j in range(cols):
        col = Wq[:, j]
        cost = r[:, None] * (col[:, None] - c[None, :]) ** 2 / U[j, j] ** 2 + rate[None, :]
        lab = np.argmin(cost, axis=1)
        labels[:, j] = lab
        err = (col - c[lab]) / U[j, j]
        Wq[:, j + 1 :] -= np.outer(err, U[j, j + 1 :])
    return labels
