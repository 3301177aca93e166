"""Capturing a model as a torch.fx graph."""

from __future__ import annotations

import torch
from torch import fx, nn

from .errors import XdfxTraceError
from .ops import XDConv

LEAF_TYPES: tuple[type, ...] = (XDConv,)


class XdfxTracer(fx.Tracer):
    """``fx.Tracer`` that keeps xdfx operators whole, as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (which is used as the graph's root, not copied)."""
    try:
        graph = XdfxTracer().trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise XdfxTraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(err).__name__}: {err}. "
            "Data-dependent control flow (if/for on tensor values) cannot be traced: move it into "
            "a submodule, or wrap the function with torch.fx.wrap."
        ) from err
    name = type(model).__name__
    return fx.GraphModule(model, graph, class_name=f"Relaxed{name}")
