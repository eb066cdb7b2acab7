"""Structured pruning: remove whole neurons, filters and channels so that the network
itself gets smaller and faster (not only sparser).

:mod:`.graph` finds which channels are coupled (BatchNorm, residual additions,
concatenations, the flatten into a fully connected layer), :mod:`.criteria` orders a
group's channels (L1/L2 norm, BatchNorm scale, group lasso, the generalised neuron
"reduce"), :mod:`.lasso` trains with a group-sparsity penalty, :mod:`.surgery` cuts the
channels out and rebuilds shrunk networks from files, :mod:`.core` ties them together::

    groups = trace_groups(model, example)          # coupled channels
    report = shrink_(model, ShrinkConfig(keep={"*": 0.5}), example)

In the pipeline it is the ``[shrink]`` table of a recipe, run before unstructured
pruning (:func:`deep_compression.phases.shrink_phase`).
"""

from deep_compression.shrink.config import ShrinkConfig, kept_count
from deep_compression.shrink.core import (
    ShrinkReport,
    check_keep,
    count_macs,
    plan_shrink,
    prunable_groups,
    shrink_,
)
from deep_compression.shrink.criteria import (
    CRITERIA,
    channel_scores,
    greedy_cancel,
    reduce_order,
    removal_order,
)
from deep_compression.shrink.graph import ChannelGroup, Member, trace_groups
from deep_compression.shrink.lasso import group_lasso, lasso_penalty
from deep_compression.shrink.surgery import (
    SHRUNK_KEY,
    WIDTH_ARGS,
    remove_channels_,
    resize_to_,
    shrunk_marker,
    shrunk_spec,
)

__all__ = [
    "ShrinkConfig",
    "kept_count",
    "ShrinkReport",
    "check_keep",
    "count_macs",
    "plan_shrink",
    "prunable_groups",
    "shrink_",
    "CRITERIA",
    "channel_scores",
    "greedy_cancel",
    "reduce_order",
    "removal_order",
    "ChannelGroup",
    "Member",
    "trace_groups",
    "group_lasso",
    "lasso_penalty",
    "SHRUNK_KEY",
    "WIDTH_ARGS",
    "remove_channels_",
    "resize_to_",
    "shrunk_marker",
    "shrunk_spec",
]
