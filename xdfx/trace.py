"""Capturing a model as a torch.fx graph: a ladder of fallbacks.

1. ``symbolic_trace`` with the user's leaf modules/classes and ``concrete_args``;
2. on failure, the smallest module whose ``forward`` was running when tracing broke (read off
   the traceback) becomes a leaf, and tracing starts again;
3. a failure in the root's own ``forward`` cannot be worked around: an ``XdfxTraceError`` names
   the module, the file and line that broke, and what to try.

Leaves are kept whole in the graph; :func:`xdfx.relax` still rewrites the convolutions inside
them, module by module.
"""

from __future__ import annotations

import linecache
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from .common import is_library_file
from .errors import XdfxTraceError
from .ops import XDConv

LEAF_TYPES: tuple[type, ...] = (XDConv,)
MAX_AUTO_LEAVES = 64


@dataclass
class TraceOptions:
    """User options for tracing: module names or classes to keep whole, and concrete arguments."""

    leaf_modules: tuple[str, ...] = ()
    leaf_classes: tuple[type, ...] = ()
    concrete_args: dict[str, Any] | None = None
    whole: Callable[[nn.Module], bool] | None = None  # modules an op-kind row rewrites whole (call_module nodes)


@dataclass
class TraceResult:
    graph_module: fx.GraphModule
    leaves: dict[str, str] = field(default_factory=dict)  # qualified name -> why it is a leaf


class XdfxTracer(fx.Tracer):
    """``fx.Tracer`` that keeps xdfx operators, and the given modules, whole."""

    def __init__(self, leaf_names: Iterable[str] = (), leaf_classes: tuple[type, ...] = (),
                 whole: Callable[[nn.Module], bool] | None = None) -> None:
        super().__init__()
        self.leaf_names = set(leaf_names)
        self.leaf_classes = tuple(leaf_classes) + LEAF_TYPES
        self.whole = whole
        self.hooked: set[str] = set()  # modules kept whole because they have hooks

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names or isinstance(m, self.leaf_classes) or (self.whole is not None and self.whole(m)):
            return True
        if not _parametrized_user_module(m) and super().is_leaf_module(m, qualname):
            return True
        if has_hooks(m):  # traced through, its hooks would never run
            self.hooked.add(qualname)
            return True
        return False


def _parametrized_user_module(m: nn.Module) -> bool:
    """A user module given parametrizations: fx would keep it whole for its new class's module
    (torch.nn.utils.parametrize), where the user's class is traced through."""
    return parametrize.is_parametrized(m) and not type(m).__bases__[0].__module__.startswith(("torch.nn", "torch.ao.nn"))


def has_hooks(m: nn.Module) -> bool:
    """Whether ``m`` has forward (pre-)hooks or backward hooks of its own."""
    return any(getattr(m, d, None) for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def trace(model: nn.Module, options: TraceOptions | None = None) -> TraceResult:
    """Trace ``model`` (used as the graph's root, not copied), making leaves where needed."""
    options = options or TraceOptions()
    names = {id(m): n for n, m in model.named_modules()}
    leaves = {n: "leaf_modules option" for n in options.leaf_modules}
    while True:
        tracer = XdfxTracer(leaves, options.leaf_classes, options.whole)
        try:
            graph = tracer.trace(model, concrete_args=options.concrete_args)
            break
        except Exception as err:  # fx raises TraceError, TypeError, NotImplementedError, ...
            culprit, where = _locate(err, names)
            if culprit is None or culprit == "" or culprit in leaves or len(leaves) >= MAX_AUTO_LEAVES:
                who = type(model).__name__ if not culprit else f"{culprit} ({type(model.get_submodule(culprit)).__name__})"
                raise XdfxTraceError(
                    f"torch.fx could not trace {who}: {type(err).__name__}: {_first_line(err)}"
                    f"{' at ' + where if where else ''}. The failure is in the top-level forward, so no "
                    "submodule can be kept whole instead. Data-dependent control flow (if/for on tensor "
                    "values) cannot be traced: move it into a submodule, pass concrete_args for "
                    "non-tensor arguments, or wrap the function with torch.fx.wrap."
                ) from err
            leaves[culprit] = f"untraceable: {type(err).__name__}: {_first_line(err)}{' at ' + where if where else ''}"
    gm = fx.GraphModule(tracer.root, graph, class_name=f"Relaxed{type(model).__name__}")
    for name in sorted(tracer.hooked):
        leaves.setdefault(name, "has hooks: kept whole so that they run")
    for node in graph.nodes:
        if node.op == "call_module" and node.target not in leaves:
            module = gm.get_submodule(node.target)
            if options.leaf_classes and isinstance(module, tuple(options.leaf_classes)):
                leaves[node.target] = "leaf_classes option"
    return TraceResult(gm, leaves)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def _locate(err: BaseException, names: dict[int, str]) -> tuple[str | None, str]:
    """The deepest model module whose ``forward`` was on the stack, and the user line that failed."""
    culprit, where = None, ""
    for frame, lineno in traceback.walk_tb(err.__traceback__):
        code_obj = frame.f_code
        owner = frame.f_locals.get(code_obj.co_varnames[0]) if code_obj.co_argcount else None
        if isinstance(owner, nn.Module) and id(owner) in names and code_obj.co_name == "forward":
            culprit = names[id(owner)]
        filename = code_obj.co_filename
        if not is_library_file(filename):
            code = linecache.getline(filename, lineno).strip()
            where = f"{filename}:{lineno}" + (f" `{code}`" if code else "")
    return culprit, where
