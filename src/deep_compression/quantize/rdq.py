"""Rate-distortion optimised scalar quantization of one layer (entropy-constrained Lloyd).

Why: without retraining, the quantizer alone decides what a file costs. k-means with a
fixed ``k`` minimises the squared error for a given *number* of codewords, not for a given
*number of bits*; a magnitude cut decides sparsity without asking what the zeros save.
Entropy-constrained scalar quantization (ECSQ; Chou, Lookabaugh, Gray 1989; for networks
Choi, El-Khamy, Lee 2017) minimises the Lagrangian ::

    J = D + lam * R,   D = sum_i h_i (w_i - q_i)^2,   R = sum_i len(q_i)   (bits)

where ``h_i >= 0`` is the importance of weight ``i`` (a constant per layer by default; a
per-input-feature diagonal Hessian proxy with calibration data) and ``len(c)`` the code
length of codeword ``c``. Zero is one codeword among the others, with a short code because
it is frequent: a weight goes to zero exactly when the distortion that adds is worth less
than the bits it saves. Sparsity comes out of the rate term, not from a threshold.

The rate model is the one of the ``.dcz`` file (docs/FORMAT.md, ``enc = "quantized"``).
A quantized layer of ``N`` weights, ``Z`` of them zero and ``K = N - Z`` kept, is stored as

* the kept positions, a stream of relative-index gaps coded with an order-0 entropy
  coder (Huffman or ANS). For positions drawn independently with density ``d = K / N``
  the gaps are geometric, and an ideal order-0 code of the gaps costs ``N * h2(d)`` bits
  (``h2`` the binary entropy): the same as coding a zero/non-zero flag per weight with
  probability ``d``;
* the cluster index of each kept weight, order-0 entropy coded: ``K * H(q)`` bits for the
  histogram ``q`` of the non-zero codewords;
* the codebook, ``k`` floats (16 bits each when float16-exact, which the torch side
  arranges), plus small per-stream tables (constant, ignored here).

``N h2(d) + K H(q) = N H(p)`` with ``p`` the histogram over the ``k + 1`` codewords
*including zero*, so the file's cost is that of one entropy-coded alphabet in which zero
is a codeword of probability ``1 - d``: ``len(c) = -log2 p(c)``. That is what the Lloyd
iterations below use. The model ignores what order-0 coding of the real gap stream adds
(fillers, Huffman's integer code lengths, positions that are not independent); the
benchmark measures real files.

Each iteration (i) assigns every weight to the codeword of least ``h (w - c)^2 + lam len(c)``,
(ii) moves every non-zero codeword to the ``h``-weighted mean of its weights (zero stays
zero), (iii) sets ``len(c) = -log2(count(c) / N)``. Each step lowers ``J``, so it
converges; codewords that lose all their weights are dropped (their code would be
infinitely long). With ``lam = 0`` and no zero codeword this is plain Lloyd.

The iterations start from a uniform grid whose step follows from ``lam``: for an
entropy-coded uniform quantizer at high rate, ``D = h step^2 / 12`` per weight and
``dR/dstep = -1 / (step ln 2)``, so ``-dD/dR = lam`` at ``step = sqrt(6 lam / (h ln 2))``.

Pure numpy (no torch). The code: :mod:`.rdq_ecsq` (:func:`rd_quantize`, the rate model),
:mod:`.rdq_lloyd` (the iterations, and the brute-force reference they are tested
against), :mod:`.rdq_gptq` (:func:`rd_gptq`); their user-facing names are re-exported here.
"""

from __future__ import annotations

from deep_compression.quantize.rdq_ecsq import (
    MAX_CODEWORDS,
    RDQuantization,
    initial_step,
    model_bits,
    rd_quantize,
)
from deep_compression.quantize.rdq_gptq import FACTOR_CACHE_BYTES, Factors, rd_gptq
from deep_compression.quantize.rdq_lloyd import lower_envelope

__all__ = [
    "FACTOR_CACHE_BYTES",
    "Factors",
    "MAX_CODEWORDS",
    "RDQuantization",
    "initial_step",
    "lower_envelope",
    "model_bits",
    "rd_gptq",
    "rd_quantize",
]
