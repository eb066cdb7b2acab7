"""Compression without retraining: rate-distortion quantization of a trained model.

For users who cannot retrain (no training data or no budget), :func:`rd_quantize_` turns
every ``Linear``/``ConvNd`` weight into ``codebook[indices] * mask`` with the
entropy-constrained quantizer of :mod:`deep_compression.quantize.rdq`: sparsity and the
codebook size of each layer come out of one trade-off, ``distortion + lam * bits``, under
the ``.dcz`` file's rate model. It installs the project's
:class:`~deep_compression.quantize.QuantizedWeight` parametrizations, so
:func:`deep_compression.encode.encode_model` writes the result unchanged.

Distortion is measured per layer *relative to the layer*, so one ``lam`` serves a whole
network:

* without data, layer ``l``'s weight ``i`` has importance ``1 / ||W_l||^2``: the squared
  error of a layer counts as a fraction of the layer's energy (the relative error of its
  output for white inputs);
* with calibration inputs (a few hundred training samples), weight ``(o, j)`` has
  importance ``s_j / sum_{o', j'} W_{o'j'}^2 s_{j'}`` with ``s_j`` the variance of the
  layer's input feature ``j`` (for a convolution, column ``j`` of the unfolded input):
  the diagonal of the Hessian of the layer's output error, as in OBS/GPTQ, relative to the
  output energy. The variance (not the second moment) because the bias correction below
  removes the mean of the output error; an input that never varies (MNIST's border
  pixels) then costs nothing to zero.

Bias correction (calibration only; Nagel et al. 2019 "Data-free quantization", here with
data): after quantization, layer by layer in order, each bias absorbs the shift of the
mean of its layer's output between the dense model and the quantized one (inputs from the
quantized layers before it), and keeps it only if that brings the model's outputs on the
calibration inputs closer to the dense model's (:func:`output_divergence`): matching the
mean of a heavily quantized layer can hurt. Biases are stored densely in the file, so
this costs nothing.

:func:`compress_without_retraining` searches ``lam`` for the smallest file whose validation
error stays within a budget of the dense model's, sizing every candidate by encoding it
to bytes in memory.

The modules: :mod:`.config` (settings, reports), :mod:`.calibration` (statistics from
calibration inputs), :mod:`.quantize` (:func:`rd_quantize_`), :mod:`.search`
(:func:`compress_without_retraining`), :mod:`.sizing` (:func:`encoded_size`); every name
is re-exported here.
"""

from __future__ import annotations

from deep_compression.no_retrain.config import (
    AUTO_CALIBRATED,
    AUTO_SEARCH,
    IMPORTANCES,
    SEARCH_START,
    LayerRD,
    NoRetrainConfig,
    RDReport,
    resolve_importance,
    search_importances,
)
from deep_compression.no_retrain.quantize import (
    install_quantized_,
    output_divergence,
    rd_quantize_,
)
from deep_compression.no_retrain.search import (
    NoRetrainResult,
    Trial,
    compress_without_retraining,
    validation_noise,
)
from deep_compression.no_retrain.sizing import encoded_size

__all__ = [
    "AUTO_CALIBRATED",
    "AUTO_SEARCH",
    "IMPORTANCES",
    "NoRetrainConfig",
    "SEARCH_START",
    "resolve_importance",
    "search_importances",
    "output_divergence",
    "LayerRD",
    "RDReport",
    "Trial",
    "NoRetrainResult",
    "rd_quantize_",
    "install_quantized_",
    "encoded_size",
    "compress_without_retraining",
    "validation_noise",
]
