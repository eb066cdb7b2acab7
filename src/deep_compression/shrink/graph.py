"""Which channels are coupled: the dependency graph of structured pruning.

Removing output channel ``c`` of a convolution removes more than one row: the BatchNorm
after it loses its ``c``-th scale, shift and statistics, the next convolution loses
input channel ``c``, a fully connected layer after a flatten loses the ``H * W`` input
features of that channel, and a residual addition ties ``c`` to channel ``c`` of every
other branch of the sum (which must then lose it too). :func:`trace_groups` finds these
couplings by tracing the model once with ``torch.fx`` and following each tensor's
channel dimension (dim 1) from the layer that produces it to the layers that read it:

* ``Conv2d`` (ungrouped) and ``Linear`` start a new group of their output channels and
  read their input channels;
* ``BatchNorm1d/2d`` and depthwise convolutions (``groups == in == out channels``) carry
  per-channel tensors of their input's groups;
* activations, pooling, dropout, spatial slicing ``x[:, :, ::2]`` pass channels through;
* ``a + b`` (and ``-``, ``*``, ``torch.add``...) unite the groups of both operands,
  channel for channel;
* ``torch.cat(..., dim=1)`` lays its inputs' groups side by side;
* ``flatten(1)`` / ``view(N, -1)`` of an ``(N, C, H, W)`` tensor gives each channel
  ``H * W`` consecutive features, which the next ``Linear`` reads as a block.

Anything else (a channel-dim pad, a grouped convolution, a reshape, the model's input
and output) *pins* the groups it touches: they are never pruned, so the traced rules
can only be conservative, never wrong. In a CIFAR ResNet with option-A shortcuts (a
channel pad) this leaves the residual streams whole and prunes the channels inside
each block.

Why our own code and not ``torch-pruning`` (the maintained dependency-graph library):
the networks this project compresses are small ``fx``-traceable modules, the rules above
are about 250 lines that the tests check rule by rule, and pinning what is not
understood is a guarantee we can state. ``torch-pruning`` covers far more operators
(attention heads, grouped convolutions, custom layers) at the cost of a dependency of
many thousand lines whose coverage of an unknown operator we could not vouch for.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from deep_compression.errors import ConfigError

__all__ = ["Member", "ChannelGroup", "trace_groups"]


@dataclass(frozen=True)
class Member:
    """One tensor dimension a group's channels index.

    Attributes:
        module: qualified name of the layer (``"layer1.0.conv1"``).
        kind: ``"out"`` (weight dim 0 and bias of a Conv2d or Linear), ``"bn"`` (a
            BatchNorm's weight, bias and running statistics), ``"dw"`` (a depthwise
            convolution's filters and bias, one per channel) or ``"in"`` (weight dim 1).
        offset: the group's first channel within that dimension (after a concatenation).
        spatial: features per channel (``H * W`` for a Linear after a flatten, else 1).
    """

    module: str
    kind: str
    offset: int = 0
    spatial: int = 1


@dataclass
class ChannelGroup:
    """Channels that must be kept or removed together, ``size`` of them.

    ``name`` is the first layer producing them (``"conv1"``); ``pinned`` says why the
    group may not be pruned ("" when it may).
    """

    name: str
    size: int
    members: list[Member] = field(default_factory=list)
    pinned: str = ""


# Activations, dropout and pooling: output channel c comes from input channel c alone,
# so a channel group passes through them unchanged.
_PASS_MODULES = (
    *(nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh),
    *(nn.Hardswish, nn.Dropout, nn.Identity),
    *(nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
)
_PASS_FUNCTIONS = {
    *(torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish),
    *(torch.sigmoid, torch.tanh, F.dropout, torch.dropout),
    *(torch.max_pool2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d),
    F.adaptive_max_pool2d,
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_BINARY = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul}
_HARMLESS_METHODS = {"size", "dim"}  # read a shape, return no channels


class _Tracer:
    """Walks the graph once, keeping for each tensor node its channel map: a list of
    ``(group id, count)`` segments covering dim 1, and the features per channel."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        self.modules = dict(model.named_modules())
        self.graph = graph
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []
        self.maps: dict[fx.Node, tuple[list[tuple[int, int]], int]] = {}
        self.calls: dict[str, int] = {}

    def has(self, x: object) -> bool:
        return isinstance(x, fx.Node) and x in self.maps

    # -- union-find over groups of equal size
    def new(self, name: str, size: int, pinned: str = "") -> int:
        self.parent.append(len(self.groups))
        self.groups.append(ChannelGroup(name, size, pinned=pinned))
        return len(self.groups) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        keep, gone = (a, b) if a < b else (b, a)
        self.parent[gone] = keep
        self.groups[keep].members += self.groups[gone].members
        self.groups[keep].pinned = self.groups[keep].pinned or self.groups[gone].pinned

    def pin(self, node: object, why: str) -> None:
        if isinstance(node, fx.Node) and self.has(node):
            for g, _ in self.maps[node][0]:
                root = self.groups[self.find(g)]
                root.pinned = root.pinned or why

    def pin_all(self, args: object, why: str) -> None:
        for a in _flatten_args(args):
            self.pin(a, why)

    # -- the rules
    def shape(self, node: object) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def fresh(self, node: fx.Node, name: str, pinned: str = "") -> None:
        shape = self.shape(node)
        if shape is not None and len(shape) >= 2:
            self.maps[node] = ([(self.new(name, shape[1], pinned), shape[1])], 1)

    def add_members(self, src: fx.Node, module: str, kind: str) -> None:
        segments, spatial = self.maps[src]
        offset = 0
        for g, count in segments:
            self.groups[self.find(g)].members.append(Member(module, kind, offset, spatial))
            offset += count

    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.fresh(node, node.name, pinned="the model's input")
        elif node.op == "output":
            self.pin_all(node.args, "the model's output")
        elif node.op == "call_module":
            self.visit_module(node, self.modules[str(node.target)])
        elif node.op == "call_function":
            self.visit_function(node)
        elif node.op == "call_method":
            self.visit_method(node)
        else:  # get_attr: a tensor used by a rule we do not know
            self.fresh(node, node.name, pinned=f"{node.op} {node.target}")

    def visit_module(self, node: fx.Node, module: nn.Module) -> None:
        name = str(node.target)
        self.calls[name] = self.calls.get(name, 0) + 1
        x = node.args[0] if node.args else None
        known = len(node.args) == 1 and not node.kwargs and self.has(x)
        if known and self.calls[name] == 1:
            if isinstance(module, nn.Conv2d) and module.groups == 1 and self.maps[x][1] == 1:
                self.add_members(x, name, "in")
                self.fresh(node, name)
                self.add_out(node, name)
                return
            if isinstance(module, nn.Linear) and len(self.shape(x) or ()) == 2:
                self.add_members(x, name, "in")
                self.fresh(node, name)
                self.add_out(node, name)
                return
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and self.maps[x][1] == 1:
                self.add_members(x, name, "bn")
                self.maps[node] = self.maps[x]
                return
            if _depthwise(module) and self.maps[x][1] == 1:
                self.add_members(x, name, "dw")
                self.maps[node] = self.maps[x]
                return
        if known and isinstance(module, _PASS_MODULES):
            self.maps[node] = self.maps[x]
            return
        if known and isinstance(module, nn.Flatten) and module.start_dim == 1:
            self.flatten(node, x)
            return
        self.unknown(node, f"layer {name} ({type(module).__name__})")

    def add_out(self, node: fx.Node, name: str) -> None:
        ((g, _),) = self.maps[node][0]
        self.groups[g].members.append(Member(name, "out"))

    def visit_function(self, node: fx.Node) -> None:
        fn, args = node.target, node.args
        tensors = [a for a in _flatten_args((args, node.kwargs)) if self.has(a)]
        if fn in _PASS_FUNCTIONS and args and self.has(args[0]) and len(tensors) == 1:
            self.maps[node] = self.maps[args[0]]
        elif fn in _BINARY and len(args) == 2 and not node.kwargs:
            self.binary(node, args)
        elif fn is torch.cat:
            self.cat(node)
        elif fn is torch.flatten and len(tensors) == 1 and _flatten_dim(args[1:], node.kwargs):
            self.flatten(node, args[0])
        elif fn is operator.getitem and len(args) == 2 and self.has(args[0]):
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            keeps = len(index) >= 2 and all(i == slice(None) for i in index[:2])
            if keeps and all(isinstance(i, slice) for i in index):
                self.maps[node] = self.maps[args[0]]
            else:
                self.unknown(node, "indexing across channels")
        else:
            self.unknown(node, f"function {getattr(fn, '__name__', fn)}")

    def visit_method(self, node: fx.Node) -> None:
        method, args = str(node.target), node.args
        x = args[0] if args else None
        if method in _HARMLESS_METHODS:
            return
        if self.has(x) and method in _PASS_METHODS and len(args) == 1:
            self.maps[node] = self.maps[x]
        elif self.has(x) and method == "flatten" and _flatten_dim(args[1:], node.kwargs):
            self.flatten(node, x)
        elif self.has(x) and method in ("view", "reshape"):
            before, after = self.shape(x), self.shape(node)
            if before is not None and before == after:
                self.maps[node] = self.maps[x]
            elif before and after and len(after) == 2 and after[0] == before[0]:
                self.flatten(node, x)
            else:
                self.unknown(node, f"method {method}")
        elif method in ("add", "sub", "mul") and len(args) == 2:
            self.binary(node, args)
        else:
            self.unknown(node, f"method {method}")

    def binary(self, node: fx.Node, args: tuple) -> None:
        a, b = args
        if self.has(a) and self.has(b):
            (sa, pa), (sb, pb) = self.maps[a], self.maps[b]
            same = self.shape(a) == self.shape(b) == self.shape(node) and pa == pb
            if same and [c for _, c in sa] == [c for _, c in sb]:
                for (ga, _), (gb, _) in zip(sa, sb, strict=True):
                    self.union(ga, gb)
                self.maps[node] = self.maps[a]
            else:
                self.unknown(node, "an operation between differently laid-out tensors")
        elif self.has(a) or self.has(b):  # with a number: channels pass through
            t = a if self.has(a) else b
            if isinstance(a if t is b else b, fx.Node):  # a tensor we do not follow
                self.unknown(node, "an operation with an untraced tensor")
            else:
                self.maps[node] = self.maps[t]

    def cat(self, node: fx.Node) -> None:
        items = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        ok = isinstance(items, list | tuple) and all(self.has(i) for i in items)
        if ok and dim in (1, -3 if len(self.shape(node) or ()) == 4 else 1):
            if all(self.maps[i][1] == 1 for i in items):
                self.maps[node] = ([s for i in items for s in self.maps[i][0]], 1)
                return
        self.unknown(node, "a concatenation not along channels")

    def flatten(self, node: fx.Node, x: fx.Node) -> None:
        before, after = self.shape(x), self.shape(node)
        segments, spatial = self.maps[x]
        if before is not None and len(before) == 2:
            self.maps[node] = self.maps[x]
        elif before is not None and after is not None and len(before) > 2 and spatial == 1:
            per_channel = after[1] // before[1]
            self.maps[node] = (segments, per_channel)
        else:
            self.unknown(node, "a flatten we cannot follow")

    def unknown(self, node: fx.Node, why: str) -> None:
        self.pin_all((node.args, node.kwargs), why)
        self.fresh(node, node.name, pinned=why)

    def result(self) -> list[ChannelGroup]:
        for name, calls in self.calls.items():
            if calls > 1:  # a layer used twice: its channels are in two places
                for g in range(len(self.groups)):
                    root = self.groups[self.find(g)]
                    if any(m.module == name for m in root.members):
                        root.pinned = root.pinned or f"layer {name} is called {calls} times"
        roots = [self.groups[g] for g in range(len(self.groups)) if self.find(g) == g]
        return [g for g in roots if any(m.kind == "out" for m in g.members)]


def _depthwise(module: nn.Module) -> bool:
    """A convolution whose output channel ``c`` reads input channel ``c`` alone."""
    if not isinstance(module, nn.Conv2d):
        return False
    return module.groups > 1 and module.groups == module.in_channels == module.out_channels


def _flatten_args(args: object) -> list[object]:
    if isinstance(args, list | tuple):
        return [x for a in args for x in _flatten_args(a)]
    if isinstance(args, dict):
        return [x for a in args.values() for x in _flatten_args(a)]
    return [args]


def _flatten_dim(args: tuple, kwargs: dict) -> bool:
    """Whether ``flatten(*args, **kwargs)`` flattens from dim 1 to the end."""
    start = args[0] if args else kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def trace_groups(model: nn.Module, example: torch.Tensor) -> list[ChannelGroup]:
    """The channel groups of ``model``, traced on ``example`` (a batch of inputs, e.g.
    ``(1, 1, 28, 28)``; only its shape matters).

    Returns:
        Every group that some ``Conv2d`` or ``Linear`` produces, in the order of the
        model's forward pass; pinned ones included (with the reason).

    Raises:
        ConfigError: ``torch.fx`` cannot trace the model (data-dependent control flow).
    """
    try:
        traced = fx.symbolic_trace(model)
    except Exception as e:  # fx raises many types (TraceError, TypeError...)
        raise ConfigError(
            f"structured pruning: cannot trace the model with torch.fx ({e})"
        ) from None
    was_training = model.training
    model.eval()  # shape propagation runs the model: BatchNorm statistics stay as they are
    with torch.no_grad():
        ShapeProp(traced).propagate(example)
    model.train(was_training)
    tracer = _Tracer(model, traced.graph)
    for node in traced.graph.nodes:
        tracer.visit(node)
    return tracer.result()
