"""Stage 1: pruning with masks that live on the module."""

from deep_compression.prune.mask import PRUNABLE_TYPES, PruningMask, get_mask, prunable_layers

__all__ = ["PRUNABLE_TYPES", "PruningMask", "get_mask", "prunable_layers"]
