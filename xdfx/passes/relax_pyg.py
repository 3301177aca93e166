"""PyTorch Geometric graph convolutions become XD graph layers on the fixed graph of the example call.

Each supported layer is linear in ``x`` on a fixed graph: ``y = sum_j p_j(A) x W_j + b``, with
``A`` the layer's propagation matrix (normalised with PyG's own functions, in float64) and
``p_j`` powers (GCNConv: ``j = 1``; SGConv: ``j = K``; GraphConv: ``j = 0, 1``; DenseGCNConv) or
Chebyshev polynomials (ChebConv). The layer becomes one :class:`~xdfx.ops.graph.XDGraphConv`
with those taps, inside a :class:`~xdfx.ops.graph_fixed.FixedGraphLayer` that keeps the
original signature and rejects any other graph. The graph is read from the example call, so
``edge_index`` may be a buffer, a forward argument or computed in ``forward``.

torch_geometric is optional: nothing here imports it unless the model already did.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx, nn

from ..common import eval_mode, relative_error, run_with_pre_hooks
from ..errors import XdfxUnsupportedError
from ..ops import graph as graph_ops
from ..ops.graph import XDGraphConv, eigen_decomposition
from ..ops.graph_fixed import FixedGraphLayer, describe_value
from ..records import LayerRecord, Origin
from .context import RelaxContext

log = logging.getLogger("xdfx")

#: Largest relative error of a rewrite on its probes; above it the layer is kept (it would mean
#: the operator was read wrongly, never a round-off).
PROBE_TOL = 1e-4


@dataclass
class Operator:
    """A layer as ``sum_j p_j(A) x W_j + b`` on ``nodes`` nodes."""

    propagation: torch.Tensor  # (N, N) float64, dense or sparse COO: out[i] = sum_j A[i, j] x[j]
    kernel: torch.Tensor  # (C_out, C_in, taps)
    bias: torch.Tensor | None
    polynomial: str = "power"
    unsqueeze: bool = False  # DenseGCNConv adds a batch axis to 2-d features
    note: str = ""


def _handlers() -> dict[type, Callable[..., Operator]]:
    """The supported PyG classes and how each one's operator is read; empty unless the user's
    program has imported torch_geometric (only then can a model hold its layers)."""
    if "torch_geometric" not in sys.modules:
        return {}
    from torch_geometric.nn import ChebConv, DenseGCNConv, GCNConv, GraphConv, SGConv

    return {GCNConv: _gcn, SGConv: _sg, ChebConv: _cheb, GraphConv: _graph_conv, DenseGCNConv: _dense_gcn}


def is_pyg_conv(module: nn.Module) -> bool:
    """A PyG layer this pass rewrites (matched by exact class: a subclass may change forward)."""
    return "torch_geometric" in sys.modules and type(module) in _handlers()


def is_other_pyg_layer(module: nn.Module) -> bool:
    """Any other PyG message-passing or dense graph layer (kept whole, with the reason)."""
    if "torch_geometric" not in sys.modules or is_pyg_conv(module):
        return False
    from torch_geometric.nn import MessagePassing

    return isinstance(module, MessagePassing) or type(module).__module__.startswith("torch_geometric.nn.dense.dense_")


# ---------------------------------------------------------------- reading the fixed graph
def _as_coo(adj) -> torch.Tensor:
    """A torch.sparse (COO/CSR/CSC) or torch_sparse SparseTensor adjacency as a float64 COO tensor."""
    if not isinstance(adj, torch.Tensor):
        adj = adj.to_torch_sparse_coo_tensor()
    coo = adj if adj.layout == torch.sparse_coo else adj.to_sparse_coo()
    return coo.coalesce().to(torch.float64)


def _is_sparse(adj) -> bool:
    return (isinstance(adj, torch.Tensor) and adj.layout != torch.strided) or not isinstance(adj, torch.Tensor)


def _matrix(edge_index, edge_weight, n: int, flow: str = "source_to_target") -> torch.Tensor:
    """``A`` with ``(A x)[i] = sum over edges j -> i of w x[j]`` (duplicates add up), float64 COO."""
    if _is_sparse(edge_index):  # PyG's adj_t: rows are the targets
        return _as_coo(edge_index)
    src, dst = (edge_index[0], edge_index[1]) if flow == "source_to_target" else (edge_index[1], edge_index[0])
    w = torch.ones(src.numel(), dtype=torch.float64) if edge_weight is None else edge_weight.detach().double()
    return torch.sparse_coo_tensor(torch.stack([dst, src]), w, (n, n), check_invariants=False).coalesce()


def _weights(*linears_and_taps) -> torch.Tensor:
    """``(C_out, C_in, taps)`` from ``(tap, weight (C_out, C_in))`` pairs."""
    taps = max(t for t, _ in linears_and_taps) + 1
    out_c, in_c = linears_and_taps[0][1].shape
    kernel = torch.zeros(out_c, in_c, taps, dtype=torch.float64)
    for t, w in linears_and_taps:
        kernel[..., t] = w.detach().double()
    return kernel


def _nodes(module: nn.Module, x: torch.Tensor) -> int:
    dim = getattr(module, "node_dim", -2)
    if dim % x.dim() != x.dim() - 2:
        raise XdfxUnsupportedError(f"node_dim={dim}: only features with nodes on the second-to-last axis are supported")
    return x.shape[-2]


def _arg(call: tuple, name: str, position: int, default=None):
    args, kwargs = call
    return args[position] if len(args) > position else kwargs.get(name, default)


def _gcn(module, x, call) -> Operator:
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    n = _nodes(module, x)
    edge_index, edge_weight = _arg(call, "edge_index", 1), _arg(call, "edge_weight", 2)
    note = ""
    if module.normalize:
        cache = module._cached_edge_index if not _is_sparse(edge_index) else module._cached_adj_t
        if cache is not None:  # PyG then ignores the graph it is given
            edge_index, edge_weight = (cache, None) if _is_sparse(edge_index) else cache
            note = "cached normalisation"
        else:
            if _is_sparse(edge_index) and isinstance(edge_index, torch.Tensor):
                edge_index = edge_index.to(torch.float64)
            weight = None if edge_weight is None else edge_weight.detach().double()
            edge_index, edge_weight = gcn_norm(edge_index, weight, n, module.improved, module.add_self_loops,
                                               module.flow, torch.float64)
    bias = module.bias.detach() if module.bias is not None else None
    return Operator(_matrix(edge_index, edge_weight, n, module.flow), _weights((1, module.lin.weight)), bias, note=note)


def _sg(module, x, call) -> Operator:
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    n = _nodes(module, x)
    edge_index, edge_weight = _arg(call, "edge_index", 1), _arg(call, "edge_weight", 2)
    if _is_sparse(edge_index) and isinstance(edge_index, torch.Tensor):
        edge_index = edge_index.to(torch.float64)
    weight = None if edge_weight is None else edge_weight.detach().double()
    edge_index, edge_weight = gcn_norm(edge_index, weight, n, False, module.add_self_loops, module.flow, torch.float64)
    bias = module.lin.bias.detach() if module.lin.bias is not None else None
    note = "cached=True: the features are propagated on every call" if module.cached else ""
    return Operator(_matrix(edge_index, edge_weight, n, module.flow), _weights((module.K, module.lin.weight)), bias,
                    note=note)


def _cheb(module, x, call) -> Operator:
    n = _nodes(module, x)
    edge_index, edge_weight = _arg(call, "edge_index", 1), _arg(call, "edge_weight", 2)
    batch, lambda_max = _arg(call, "batch", 3), _arg(call, "lambda_max", 4)
    if lambda_max is not None and isinstance(lambda_max, torch.Tensor) and lambda_max.numel() > 1:
        raise XdfxUnsupportedError("ChebConv with one lambda_max per graph of a batch: the operator is not one "
                                   "polynomial in one matrix")
    weight = None if edge_weight is None else edge_weight.detach().double()
    edge_index, norm = module.__norm__(edge_index, n, weight, module.normalization, lambda_max, dtype=torch.float64,
                                       batch=batch)
    bias = module.bias.detach() if module.bias is not None else None
    kernel = _weights(*((k, lin.weight) for k, lin in enumerate(module.lins)))
    return Operator(_matrix(edge_index, norm, n, module.flow), kernel, bias, "chebyshev",
                    note=f"normalization={module.normalization}")


def _graph_conv(module, x, call) -> Operator:
    if not isinstance(x, torch.Tensor):
        raise XdfxUnsupportedError("bipartite GraphConv ((x_src, x_dst) features): not supported, kept")
    n = _nodes(module, x)
    edge_index, edge_weight = _arg(call, "edge_index", 1), _arg(call, "edge_weight", 2)
    aggr = module.aggr if isinstance(module.aggr, str) else type(module.aggr_module).__name__
    if aggr not in ("add", "sum", "mean"):
        raise XdfxUnsupportedError(f"GraphConv(aggr={aggr!r}) is not linear in x: kept")
    a = _matrix(edge_index, edge_weight, n, module.flow)
    if aggr == "mean":  # the mean over incoming messages: divide each row by its message count
        if _is_sparse(edge_index):
            rows = a.indices()[0]
        else:
            rows = edge_index[1] if module.flow == "source_to_target" else edge_index[0]
        count = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, torch.ones(rows.numel(), dtype=torch.float64))
        values = a.values() / count.clamp(min=1)[a.indices()[0]]
        a = torch.sparse_coo_tensor(a.indices(), values, a.shape, check_invariants=False).coalesce()
    bias = module.lin_rel.bias.detach() if module.lin_rel.bias is not None else None
    kernel = _weights((0, module.lin_root.weight), (1, module.lin_rel.weight))
    return Operator(a, kernel, bias, note=f"aggr={aggr}")


def _dense_gcn(module, x, call) -> Operator:
    adj, mask, add_loop = _arg(call, "adj", 1), _arg(call, "mask", 2), _arg(call, "add_loop", 3, True)
    if mask is not None:
        raise XdfxUnsupportedError("DenseGCNConv with a node mask: not supported, kept")
    a = adj.detach().double()
    if a.dim() == 3:
        if a.shape[0] != 1:
            raise XdfxUnsupportedError(f"DenseGCNConv on a batch of {a.shape[0]} graphs: one fixed graph is "
                                       "supported, kept")
        a = a[0]
    a = a.clone()
    if add_loop:
        idx = torch.arange(a.shape[0])
        a[idx, idx] = 2.0 if module.improved else 1.0
    d = a.sum(-1).clamp(min=1).pow(-0.5)
    bias = module.bias.detach() if module.bias is not None else None
    return Operator(d[:, None] * a * d[None, :], _weights((1, module.lin.weight)), bias, unsqueeze=x.dim() == 2)


# ---------------------------------------------------------------- the pass
def _capture(gm: fx.GraphModule, names: list[str], inputs: tuple) -> dict[str, list[tuple]]:
    """The ``(args, kwargs)`` of every call of each named module while ``gm`` runs the example."""
    seen: dict[str, list[tuple]] = {name: [] for name in names}

    def hook_for(name: str) -> Callable:
        def hook(_module, args, kwargs):
            seen[name].append((args, dict(kwargs)))
        return hook

    run_with_pre_hooks(gm, {name: hook_for(name) for name in names}, inputs, with_kwargs=True)
    return seen


def _same_value(u: Any, v: Any) -> bool:
    if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
        if not (isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor)):
            return False
        if u.layout != v.layout or u.shape != v.shape:
            return False
        if u.layout != torch.strided:
            u, v = u.to_dense(), v.to_dense()
        return torch.equal(u, v)
    return u == v


def _same_graph(a: tuple, b: tuple) -> bool:
    """Whether two calls of a layer pass the same graph (every argument but ``x``)."""
    ga, gb = _graph_args(a), _graph_args(b)
    return ga.keys() == gb.keys() and all(_same_value(ga[k], gb[k]) for k in ga)


def _fingerprint(a: torch.Tensor) -> str:
    """A hash of a matrix's entries: layers on the same graph share one eigendecomposition."""
    coo = a if a.layout == torch.sparse_coo else a.to_sparse_coo().coalesce()
    h = hashlib.sha1(str(tuple(coo.shape)).encode())
    h.update(coo.indices().cpu().numpy().tobytes())
    h.update(coo.values().cpu().numpy().tobytes())
    return h.hexdigest()


def _graph_args(call: tuple) -> dict[int | str, Any]:
    args, kwargs = call
    out: dict[int | str, Any] = {i: a for i, a in enumerate(args) if i > 0}
    out.update(kwargs)
    return out


def _graph_description(n: int, graph: dict, names: list[str]) -> str:
    parts = []
    for key, value in graph.items():
        if isinstance(value, torch.Tensor) or value is not None:
            name = key if isinstance(key, str) else (names[key] if key < len(names) else f"arg{key}")
            parts.append(f"{name}: {describe_value(value)}")
    return f"{n} nodes; " + ", ".join(parts)


def relax_pyg_convs(ctx: RelaxContext, kind) -> None:
    """Rewrite every supported PyG layer call into a :class:`FixedGraphLayer` around an XD graph layer."""
    gm = ctx.gm
    targets = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and kind.matches_module(gm.get_submodule(node.target)):
            if node.target not in targets:
                targets.append(node.target)
    if not targets:
        return
    if not ctx.inputs:
        raise XdfxUnsupportedError("relaxing PyG layers needs the example inputs")
    filled = {t for t in targets if getattr(gm.get_submodule(t), "_cached_x", None) is not None}
    originals = {t: copy.deepcopy(gm.get_submodule(t)) for t in targets}  # before the capture fills caches
    calls = _capture(gm, targets, ctx.inputs)
    decompositions: dict[str, tuple] = {}
    for target in targets:
        module = originals[target]
        source = f"{type(module).__name__} (PyG)"
        name = f"{target}.xd"
        seen = calls[target]
        shape = tuple(seen[0][0][0].shape) if seen and seen[0][0] and isinstance(seen[0][0][0], torch.Tensor) else None

        def skip(why: str) -> None:
            log.debug("xdfx.relax keeps %s: %s", target, why)
            ctx.record(LayerRecord(target, source, "skipped", shape, detail=why, kind=kind.name))

        if not seen:
            skip("not called on the example inputs")
            continue
        if not ctx.config.selects(target, module):
            skip("excluded by filter")
            continue
        if target in filled:
            skip("SGConv(cached=True) has already cached its propagated features and ignores x: relax it before its "
                 "first call, or use cached=False")
            continue
        if any(not _same_graph(seen[0], c) for c in seen[1:]):
            skip("called on several graphs: an XD graph layer is built for one fixed graph")
            continue
        call = seen[0]
        x = call[0][0] if call[0] else call[1].get("x")
        try:
            op = _handlers()[type(module)](module, x, call)
            layer = _build(ctx, op, x, decompositions)
        except XdfxUnsupportedError as err:
            skip(str(err))
            continue
        layer.layer_name = name
        names = list(inspect.signature(module.forward).parameters)
        graph = _graph_args(call)
        description = _graph_description(op.propagation.shape[0], graph, names)
        wrapper = FixedGraphLayer(layer, graph, names, source, description, op.unsqueeze)
        wrapper.layer_name = target
        err, out = _probe_error(module, wrapper, call, x)
        if not err <= PROBE_TOL:
            skip(f"the XD layer differs from the original by {err:.1e} (relative) on the example graph: kept")
            continue
        gm.set_submodule(target, wrapper)
        c_out, c_in, taps = layer.weight.shape
        form = f"arch={ctx.config.arch}" if layer.eigenbasis else (
            f"polynomial taps only: {layer.nodes} nodes > EIGENBASIS_NODES = {graph_ops.EIGENBASIS_NODES}")
        detail = (f"fixed graph: {description}; {c_in}->{c_out}, {taps} {op.polynomial} taps, {form}"
                  + (f"; {op.note}" if op.note else ""))
        ctx.record(LayerRecord(name, source, "relaxed", shape, out, detail, err, kind=kind.name,
                               origin=Origin(kind.name)))


def _build(ctx: RelaxContext, op: Operator, x: torch.Tensor, decompositions: dict) -> XDGraphConv:
    a = op.propagation
    n = a.shape[0]
    eigenbasis = n <= graph_ops.EIGENBASIS_NODES
    decomposition = None
    if eigenbasis:
        key = _fingerprint(a)
        if key not in decompositions:
            decompositions[key] = eigen_decomposition(a)  # raises (kept, with the reason) for a directed graph
        decomposition = decompositions[key]
    dtype = x.dtype if x.is_floating_point() else torch.float32
    # room to grow: free in the eigenbasis, one propagation per tap without it (so only when asked for)
    own = op.kernel.shape[-1]
    taps = max(own, ctx.config.max_kernel_size or (3 if eigenbasis else own))
    kernel = torch.zeros(*op.kernel.shape[:2], min(taps, n), dtype=torch.float64)
    kernel[..., : op.kernel.shape[-1]] = op.kernel
    with torch.no_grad():
        layer = XDGraphConv(a.to(dtype), kernel=kernel, bias=op.bias, polynomial=op.polynomial, arch=ctx.config.arch,
                            eigenbasis=eigenbasis, decomposition=decomposition)
    return layer.to(x.device)


def _probe_error(module: nn.Module, wrapper: FixedGraphLayer, call: tuple, x: torch.Tensor) -> tuple[float, tuple]:
    """Relative error on the example features and on random ones, against the original layer,
    and the output shape."""
    args, kwargs = call
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for probe in (x, torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)):
        ref_module = copy.deepcopy(module)
        if hasattr(ref_module, "_cached_x"):
            ref_module._cached_x = None  # SGConv(cached=True) would replay its cache instead of using probe
        full = (probe, *args[1:]) if args else ()
        kw = dict(kwargs) if args else {**kwargs, "x": probe}
        with eval_mode(ref_module), torch.no_grad():
            ref = ref_module(*full, **kw)
            got = wrapper(*full, **kw)
        if got.shape != ref.shape:
            return float("inf"), tuple(got.shape)
        worst = max(worst, relative_error(got, ref))
    return worst, tuple(got.shape)
