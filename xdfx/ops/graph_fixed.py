"""A graph layer relaxed on the fixed graph of the example call.

The layer keeps the signature of the layer it replaces (``conv(x, edge_index, ...)``): every
argument but ``x`` is part of the fixed graph and is compared with the example call's on every
call, so a model never computes silently with the wrong graph. The XD layer itself is the
``xd`` submodule, which harden replaces; the check stays.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import XdfxInputError

_MISSING = object()


def _sparse_parts(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    coo = (t if t.layout == torch.sparse_coo else t.to_sparse_coo()).coalesce()
    return coo.indices(), coo.values()


def describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        layout = "" if value.layout == torch.strided else f" {str(value.layout).replace('torch.', '')}"
        return f"{value.dtype}{layout} tensor of shape {tuple(value.shape)}"
    return repr(value)


class FixedGraphLayer(nn.Module):
    """``xd(x)`` after checking that the graph arguments are those of the example call.

    Parameters
    ----------
    xd : nn.Module
        The layer on node features (an :class:`~xdfx.ops.graph.XDGraphConv`, after harden its form).
    graph_args : dict
        The example call's arguments other than ``x``: position (int, ``x`` is 0) or keyword -> value.
    names : sequence of str
        The replaced layer's ``forward`` parameter names, for messages.
    source : str
        What was relaxed (``"GCNConv (PyG)"``), for messages.
    unsqueeze : bool
        Add a leading batch axis to the output (DenseGCNConv does for 2-d features).
    """

    def __init__(self, xd: nn.Module, graph_args: dict[int | str, Any], names: Sequence[str], source: str,
                 description: str, unsqueeze: bool = False) -> None:
        super().__init__()
        self.xd = xd
        self.source = source
        self.description = description
        self.names = list(names)
        self.unsqueeze = unsqueeze
        self.layer_name = ""
        self.fixed: dict[int | str, Any] = {}  # non-tensor arguments by key; tensors are buffers
        self.tensors: dict[int | str, tuple[str, str]] = {}  # key -> (buffer prefix, "dense" | "sparse")
        for i, (key, value) in enumerate(graph_args.items()):
            if isinstance(value, torch.Tensor) and value.layout != torch.strided:
                indices, values = _sparse_parts(value.detach())
                self.register_buffer(f"graph{i}_indices", indices.clone())
                self.register_buffer(f"graph{i}_values", values.clone())
                self.fixed[key] = (tuple(value.shape), value.layout)
                self.tensors[key] = (f"graph{i}", "sparse")
            elif isinstance(value, torch.Tensor):
                self.register_buffer(f"graph{i}", value.detach().clone())
                self.tensors[key] = (f"graph{i}", "dense")
            else:
                self.fixed[key] = value

    def extra_repr(self) -> str:
        return f"{self.source} on the fixed graph: {self.description}"

    def _name(self, key: int | str) -> str:
        return key if isinstance(key, str) else (self.names[key] if key < len(self.names) else f"argument {key}")

    def _differs(self, key: int | str, value: Any) -> str:
        """Why ``value`` is not the example call's argument ``key`` ("" when it is)."""
        if key in self.tensors:
            prefix, kind = self.tensors[key]
            if not isinstance(value, torch.Tensor):
                return f"got {describe_value(value)}"
            if kind == "sparse":
                shape, layout = self.fixed[key]
                if value.layout == torch.strided or tuple(value.shape) != shape:
                    return f"got a {describe_value(value)}, the example call's was a {layout} tensor of shape {shape}"
                indices, values = _sparse_parts(value)
                ref_i, ref_v = getattr(self, f"{prefix}_indices"), getattr(self, f"{prefix}_values")
                same = (indices.shape == ref_i.shape and torch.equal(indices, ref_i)
                        and torch.equal(values, ref_v.to(values)))
                return "" if same else "same shape, different entries"
            ref = getattr(self, prefix)
            if value.layout != torch.strided or value.shape != ref.shape:
                return f"got a {describe_value(value)}, the example call's was {describe_value(ref)}"
            return "" if torch.equal(value, ref.to(value.dtype)) else "same shape, different entries"
        ref = self.fixed.get(key, None)
        if isinstance(value, torch.Tensor):
            return f"got {describe_value(value)}, the example call's was {ref!r}"
        return "" if value == ref else f"got {value!r}, the example call's was {ref!r}"

    def check_graph(self, args: tuple, kwargs: dict) -> None:
        given: dict[int | str, Any] = {i: a for i, a in enumerate(args) if i > 0}
        given.update(kwargs)
        for key in set(given) | set(self.fixed) | set(self.tensors):
            value = given.get(key, None)
            why = self._differs(key, value)
            if why:
                raise XdfxInputError(
                    f"layer {self.layer_name!r} ({self.source}) was relaxed on the fixed graph of the example call "
                    f"({self.description}); its argument {self._name(key)!r} differs: {why}. An XD graph layer "
                    "is built from one graph's eigenbasis: relax the model again with this graph in the example "
                    "inputs.")

    def forward(self, *args, **kwargs):
        if args:
            x = args[0]
        else:
            x = kwargs.pop(self.names[0] if self.names else "x", _MISSING)
            if x is _MISSING:
                raise XdfxInputError(f"layer {self.layer_name!r} ({self.source}) was called without node features")
        self.check_graph(args, kwargs)
        y = self.xd(x)
        return y.unsqueeze(0) if self.unsqueeze else y
