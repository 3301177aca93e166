"""Shapes of every node of a graph, and of modules hidden inside leaves.

Shapes come from a run on fake tensors (no compute, BatchNorm statistics untouched). Leaves
with data-dependent control flow cannot run on fake tensors; then a throwaway copy of the
graph runs on the real example inputs instead.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections import defaultdict
from typing import Iterable, Sequence

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import XdfxShapeError

log = logging.getLogger("xdfx")


def propagate_shapes(
    gm: fx.GraphModule, example_inputs: Sequence[object], watch: Iterable[str] = ()
) -> dict[str, list[torch.Size]]:
    """Fill ``node.meta['tensor_meta']`` for every node; return the input shapes seen by each
    module named in ``watch`` (modules inside leaves, which have no node of their own)."""
    watch = list(watch)
    try:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        fake_inputs = [mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in example_inputs]
        prop = ShapeProp(gm, fake_mode=mode)
        # ShapeProp prints the traceback of a failing node itself; this failure is expected
        # (data-dependent leaves) and handled below, so it goes to the debug log instead
        with _recording(getattr(prop, "fake_module", None) or gm, watch) as seen, _stderr_to_log():
            prop.propagate(*fake_inputs)
        return seen
    except Exception as err:  # noqa: BLE001 - any failure on fake tensors: retry on real ones
        log.debug("shape propagation on fake tensors failed (%s: %s); running the example inputs", type(err).__name__, err)
    from .relax_conv_variants import deepcopy_memo  # here: that module imports this one's users

    twin = copy.deepcopy(gm, deepcopy_memo(gm))  # memo: CSR buffers, which deepcopy refuses
    try:
        with _recording(twin, watch) as seen, torch.no_grad(), _stderr_to_log():
            ShapeProp(twin).propagate(*example_inputs)
    except Exception as err:
        failing = _describe_node(twin, _failing_node(err))
        shapes = [tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)]
        raise XdfxShapeError(
            f"running the model on the example inputs (shapes {shapes}) failed"
            f"{' at ' + failing if failing else ''}: {_root_cause(err)}. Pass example_inputs "
            "that the model's forward accepts (a tuple, one entry per forward argument)."
        ) from err
    metas = {n.name: n.meta for n in twin.graph.nodes}
    for node in gm.graph.nodes:
        if "tensor_meta" in metas.get(node.name, {}):
            node.meta["tensor_meta"] = metas[node.name]["tensor_meta"]
    return seen


@contextlib.contextmanager
def _stderr_to_log():
    """Send what runs inside to the debug log instead of stderr."""
    text = io.StringIO()
    try:
        with contextlib.redirect_stderr(text):
            yield
    finally:
        if text.getvalue():
            log.debug("%s", text.getvalue())


class _recording:
    """Forward pre-hooks that record the first argument's shape of the named modules."""

    def __init__(self, root: nn.Module, names: list[str]) -> None:
        self.root, self.names = root, names
        self.seen: dict[str, list[torch.Size]] = defaultdict(list)
        self.handles = []

    def __enter__(self) -> dict[str, list[torch.Size]]:
        for name in self.names:
            module = self.root.get_submodule(name)
            self.handles.append(module.register_forward_pre_hook(self._hook(name)))
        return self.seen

    def _hook(self, name: str):
        def record(_module, args):
            if args and isinstance(args[0], torch.Tensor):
                self.seen[name].append(args[0].shape)

        return record

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


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


def _describe_node(gm: fx.GraphModule, text: str) -> str:
    """A failing node as the user knows it (layer name and class), not fx's ``%x : [num_users=1] = ...``."""
    name = text.lstrip("%").split(" ", 1)[0]
    node = next((n for n in gm.graph.nodes if n.name == name), None)
    if node is None:
        return ""
    if node.op == "call_module":
        return f"layer {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"node {node.name!r} (a call to {target})"


def input_shape(node: fx.Node) -> torch.Size:
    """Shape of a node's first argument, as recorded by :func:`propagate_shapes`."""
    arg = node.args[0] if node.args else node.kwargs.get("input")
    return arg.meta["tensor_meta"].shape


def output_shape(node: fx.Node) -> torch.Size | None:
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "shape", None)
