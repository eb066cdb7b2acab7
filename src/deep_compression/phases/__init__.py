"""One function per phase of the pipeline, called by the CLI commands and by ``compress``.

Each phase takes a model, its typed config and a :class:`PhaseContext` (the data splits,
the task, the seed, where progress and log lines go: said once for every phase), changes
the model in place, and returns a typed outcome whose ``details()`` go into the checkpoint
metadata (:class:`~deep_compression.records.CheckpointMeta`) under the phase's name. The
``train``, ``prune``, ``quantize`` and ``encode`` commands and
:func:`deep_compression.pipeline.compress` all call these, so a phase behaves and
reports the same whichever way it is run.

    train_phase    (dense) training                          -> TrainOutcome
    shrink_phase   structured pruning (remove whole channels) -> ShrinkOutcome
                   (in deep_compression.shrink.phase, re-exported here)
    prune_phase    iterative prune -> retrain schedule        -> PruneOutcome
    quantize_phase k-means weight sharing, centroid fine-tune -> QuantizeOutcome
    encode_phase   .dcz file, checked from its bytes, decoded -> EncodeOutcome

The modules: :mod:`.context` (:class:`PhaseContext`, :func:`test_error`,
:func:`with_stage`), :mod:`.training` (train, prune, quantize), :mod:`.encode`; every name
is re-exported here.
"""

from __future__ import annotations

from deep_compression.phases.context import (
    TASKS,
    Log,
    PhaseContext,
    pct,
    silent,
    test_error,
    with_stage,
)
from deep_compression.phases.encode import EncodeOutcome, encode_phase, plain_copy
from deep_compression.phases.training import (
    PruneOutcome,
    QuantizeOutcome,
    TrainOutcome,
    prune_phase,
    quantize_phase,
    train_phase,
)
from deep_compression.shrink.phase import ShrinkOutcome, shrink_phase

__all__ = [
    "Log",
    "TASKS",
    "PhaseContext",
    "pct",
    "silent",
    "test_error",
    "with_stage",
    "TrainOutcome",
    "train_phase",
    "ShrinkOutcome",
    "shrink_phase",
    "PruneOutcome",
    "prune_phase",
    "QuantizeOutcome",
    "quantize_phase",
    "EncodeOutcome",
    "encode_phase",
    "plain_copy",
]
