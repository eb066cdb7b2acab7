"""One seeded train/evaluate loop, reused by every phase: dense training, retraining after
pruning, centroid fine-tuning after quantization; on one process or many (torchrun).

Pruning masks and codebooks live on the model as parametrizations, so this loop needs no
knowledge of them: it trains whatever ``model.parameters()`` holds, and masked weights
stay zero because the mask is applied in every forward pass.

Under ``torchrun --nproc-per-node N`` (see :mod:`deep_compression.distributed` and
docs/DISTRIBUTED.md) :func:`fit` splits every batch across the N ranks and trains through
DistributedDataParallel, and :func:`evaluate` splits the data and adds up the counts. The
semantics are those of **one global batch**: ``TrainConfig.batch_size`` and ``lr`` mean
the same with 1 process or N (each rank takes about ``batch_size / N`` images of each
step's batch, the gradients are averaged so that the step is the one a single process
would take on the whole batch), so the same recipe needs no retuning, and N processes
without dropout or augmentation reproduce a single process to float rounding.

The package holds :mod:`.config` (what fit is told and returns), :mod:`.batches` (which
images each rank takes at each step), :mod:`.loop` (fit) and :mod:`.evaluation`
(evaluate, and predict: per-image correctness and loss for paired comparisons); every
public name is importable from here.
"""

from deep_compression.train.batches import Data as Data  # the type fit and evaluate accept
from deep_compression.train.batches import GlobalBatchSampler
from deep_compression.train.config import EpochStats, TrainConfig, TrainResult
from deep_compression.train.evaluation import (
    PREDICT_BATCH,
    Predictions,
    evaluate,
    logits_of,
    predict,
)
from deep_compression.train.loop import fit, seed_everything

__all__ = [
    "TrainConfig",
    "EpochStats",
    "TrainResult",
    "GlobalBatchSampler",
    "fit",
    "evaluate",
    "seed_everything",
    "PREDICT_BATCH",
    "Predictions",
    "predict",
    "logits_of",
]
