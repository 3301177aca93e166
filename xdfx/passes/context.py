"""State shared by the relax rules: the graph, the options, the filters and the report."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import torch
from torch import fx, nn

from ..records import LayerRecord

Selector = Union[str, type, Callable[[str, Any], bool]]


@dataclass(frozen=True)
class RelaxConfig:
    """Options of :func:`xdfx.relax`.

    arch: ``"monarch"`` (learnable structured K, L, M) or ``"fixed"`` (plain FFTs).
    max_kernel_size: cap on the taps per axis of the kernel ``w`` (None: the transform length,
        so ``w`` can grow into a global filter).
    include / exclude: which layers to relax. Each entry is a glob over qualified names
        (``"layer1.*"``), a module class (``nn.Conv1d``), or a predicate ``(name, module) -> bool``
        (``module`` is None for functional calls). Empty ``include`` means everything.
    """

    arch: str = "fixed"
    max_kernel_size: int | None = None
    include: tuple[Selector, ...] = ()
    exclude: tuple[Selector, ...] = ()
    budget: Any = None  # an xdfx.Budget, or None for full growth everywhere

    def selects(self, name: str, module: nn.Module | None) -> bool:
        """Whether a layer passes the include/exclude filters."""
        inc = not self.include or any(matches(s, name, module) for s in self.include)
        return inc and not any(matches(s, name, module) for s in self.exclude)


def matches(selector: Selector, name: str, module: nn.Module | None) -> bool:
    if isinstance(selector, str):
        return fnmatch.fnmatchcase(name, selector)
    if isinstance(selector, type):
        return module is not None and isinstance(module, selector)
    return bool(selector(name, module))


@dataclass
class RelaxContext:
    """What every rule sees."""

    gm: fx.GraphModule
    config: RelaxConfig
    leaves: dict[str, str] = field(default_factory=dict)
    leaf_shapes: dict[str, list[torch.Size]] = field(default_factory=dict)
    records: list[LayerRecord] = field(default_factory=list)
    used_names: dict[str, bool] = field(default_factory=dict)
    plan: Any = None  # the budget's xdfx.budget.Plan: each conv's kernel cap
    inputs: tuple = ()  # the example call's arguments (passes that need values, not shapes: fixed graphs)

    def cap(self, name: str):
        """The kernel cap of conv ``name``: taps per axis, None for full growth, or "keep"."""
        if self.config.max_kernel_size is not None or self.plan is None:
            return self.config.max_kernel_size
        return self.plan.cap(name, None)

    def cap_reason(self, name: str) -> str:
        return "" if self.plan is None or self.config.max_kernel_size is not None else self.plan.reasons.get(name, "")

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.gm.parameters()), torch.device("cpu"))

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating-point dtype (for layers inside leaves, which have no node)."""
        return next((p.dtype for p in self.gm.parameters() if p.is_floating_point()), torch.float32)

    def record(self, rec: LayerRecord) -> None:
        self.records.append(rec)

    def free_name(self, base: str) -> str:
        name, i = base, 1
        while _exists(self.gm, name):
            name, i = f"{base}_{i}", i + 1
        return name

    def replace_with_module(self, node: fx.Node, name: str, module: nn.Module, args: Sequence[Any]) -> fx.Node:
        """Put ``module`` under ``name`` and make ``node`` a call of it with ``args``."""
        self.gm.add_submodule(name, module)
        with self.gm.graph.inserting_before(node):
            new = self.gm.graph.call_module(name, tuple(args))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)
        return new


def _exists(root: nn.Module, name: str) -> bool:
    try:
        root.get_submodule(name)
        return True
    except AttributeError:
        return hasattr(root, name)
