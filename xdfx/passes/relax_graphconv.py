"""``A @ h`` with a constant square ``A`` (a buffer) becomes an XD graph convolution.

``A @ (h @ W)`` with ``W`` a parameter used nowhere else is fused into one layer with channel
mixing. ``torch.sparse.mm(A, h)`` is matched too, with ``A`` in COO, CSR or CSC layout. ``A`` must be
symmetric or similar to a symmetric matrix by a positive diagonal (mean aggregation ``D^-1 A``). A
sparse ``A`` passed as a forward argument is fixed to the example call's and checked on every call.
"""

from __future__ import annotations

import torch
from torch import fx

from ..common import attribute, relative_error
from ..errors import XdfxUnsupportedError
from ..ops import graph as graph_ops
from ..ops.graph import XDGraphConv, eigen_decomposition
from ..ops.graph_fixed import FixedGraphLayer, describe_value
from ..records import LayerRecord, Origin
from .context import RelaxContext
from .shape_info import output_shape

MATMUL_METHODS = ("matmul", "mm", "__matmul__")


def _is_matmul(node: fx.Node, kind) -> bool:
    return (node.op == "call_function" and kind.matches_function(node.target)) or (
        node.op == "call_method" and node.target in MATMUL_METHODS
    )


def _constant(gm: fx.GraphModule, node) -> torch.Tensor | None:
    """The buffer (not parameter) a ``get_attr`` node refers to, if any."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = attribute(gm, node.target)
    return value if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter) else None


def _parameter(gm: fx.GraphModule, node) -> torch.Tensor | None:
    """The parameter a ``get_attr`` node refers to, if any."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    try:
        return gm.get_parameter(node.target)
    except AttributeError:
        return None


def _sparse_argument(ctx: RelaxContext, node) -> torch.Tensor | None:
    """The example call's value of a forward argument that is a sparse matrix (an adjacency), if any.
    Dense arguments are left alone: a square data tensor is not a graph."""
    if not isinstance(node, fx.Node) or node.op != "placeholder":
        return None
    index = [n for n in ctx.gm.graph.nodes if n.op == "placeholder"].index(node)
    value = ctx.inputs[index] if index < len(ctx.inputs) else None
    return value if isinstance(value, torch.Tensor) and value.layout != torch.strided else None


def relax_graph_convs(ctx: RelaxContext, kind) -> None:
    """Rewrite fixed-graph propagations into :class:`XDGraphConv` layers."""
    gm = ctx.gm
    for node in list(gm.graph.nodes):
        if not _is_matmul(node, kind) or len(node.args) < 2:
            continue
        adj, argument = _constant(gm, node.args[0]), None
        if adj is None:
            adj = _sparse_argument(ctx, node.args[0])
            argument = node.args[0] if adj is not None else None
        if adj is None or adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            continue
        owner = node.args[0].target.rpartition(".")[0] if argument is None else ""
        name = f"{owner}.xd" if owner else node.name
        h = node.args[1]
        shape = tuple(h.meta["tensor_meta"].shape)
        if not ctx.config.selects(owner or node.name, gm.get_submodule(owner) if owner else None):
            ctx.record(LayerRecord(owner or node.name, "graph propagation", "skipped", shape, detail="excluded by filter",
                                   kind=kind.name))
            continue
        dense = adj if adj.layout == torch.strided else adj.to_dense()  # COO, CSR and CSC buffers alike
        try:
            decomposition = eigen_decomposition(dense) if dense.shape[0] <= graph_ops.EIGENBASIS_NODES else None
        except XdfxUnsupportedError as err:
            ctx.record(LayerRecord(owner or node.name, "graph propagation", "skipped", shape, detail=str(err),
                                   kind=kind.name))
            continue
        weight = None
        source = h
        if _is_matmul(h, kind) and len(h.users) == 1:
            w = _parameter(gm, h.args[1])
            if w is not None and w.dim() == 2 and len(h.args[1].users) == 1:
                weight, source = w, h.args[0]
        taps = ctx.config.max_kernel_size or 3
        layer = XDGraphConv(dense, None if weight is None else weight.detach(), channels=shape[-1], taps=taps,
                            arch=ctx.config.arch, eigenbasis=decomposition is not None, decomposition=decomposition)
        layer.to(device=dense.device)
        name = ctx.free_name(name)
        layer.layer_name = name
        with torch.no_grad():
            x = torch.randn(tuple(source.meta["tensor_meta"].shape), dtype=dense.dtype, device=dense.device)
            ref = dense @ (x @ weight.detach() if weight is not None else x)
            err = relative_error(layer(x), ref)
        if argument is None:
            new = ctx.replace_with_module(node, name, layer, (source,))
        else:  # the graph is a forward argument: fixed to the example call's, and checked on every call
            wrapper = FixedGraphLayer(layer, {1: adj}, ["h", argument.target], "graph propagation",
                                      f"{adj.shape[0]} nodes; {argument.target}: {describe_value(adj)}")
            wrapper.layer_name = name
            new = ctx.replace_with_module(node, name, wrapper, (source, argument))
            layer.layer_name = name = f"{name}.xd"
        if weight is not None:
            gm.graph.erase_node(h)
        op = "graph conv A(hW)" if weight is not None else "graph propagation A h"
        form = ctx.config.arch if decomposition is not None else "polynomial, no eigenbasis"
        ctx.record(LayerRecord(name, op, "relaxed", tuple(source.meta["tensor_meta"].shape), tuple(output_shape(new) or ()),
                               f"nodes={dense.shape[0]} {form}", err, kind=kind.name, origin=Origin(kind.name)))
