"""Shapes of every node of a graph, without compute and without touching BatchNorm statistics."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp
from torch._subclasses.fake_tensor import FakeTensorMode

from ..errors import XdfxShapeError


def propagate_shapes(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    """Fill ``node.meta['tensor_meta']`` for every node by running ``gm`` on fake tensors."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake_inputs = [mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in example_inputs]
    try:
        ShapeProp(gm, fake_mode=mode).propagate(*fake_inputs)
    except Exception as err:
        failing = _failing_node(err)
        raise XdfxShapeError(
            f"running the model on the example inputs (shapes "
            f"{[tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)]}) failed"
            f"{' at node ' + failing if failing else ''}: {_root_cause(err)}. Pass example_inputs "
            "that the model's forward accepts (a tuple, one entry per forward argument)."
        ) from err


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def _failing_node(err: BaseException) -> str:
    text = str(err)
    marker = "node="
    if marker in text:
        return text.split(marker, 1)[1].split(" with meta", 1)[0]
    return ""


def input_shape(node: fx.Node) -> torch.Size:
    """Shape of a node's first argument, as recorded by :func:`propagate_shapes`."""
    arg = node.args[0] if node.args else node.kwargs.get("input")
    return arg.meta["tensor_meta"].shape


def output_shape(node: fx.Node) -> torch.Size | None:
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "shape", None)
