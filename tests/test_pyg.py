"""PyTorch Geometric layers relax into exact XD graph layers on a fixed graph and harden back to
message passing; a call on another graph is refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

torch_geometric = pytest.importorskip("torch_geometric")  # the `graph` extra, part of `test`
from torch_geometric.datasets import KarateClub  # noqa: E402
from torch_geometric.nn import ChebConv, DenseGCNConv, GATConv, GCNConv, GraphConv, SGConv  # noqa: E402
from torch_geometric.utils import to_dense_adj, to_undirected  # noqa: E402

import xdfx  # noqa: E402
from xdfx.common import relative_error  # noqa: E402
from xdfx.ops import graph as graph_ops  # noqa: E402
from xdfx.ops.graph import XDGraphConv  # noqa: E402
from xdfx.ops.graph_fixed import FixedGraphLayer  # noqa: E402
from xdfx.ops.graph_forms import FrozenGraphConv, GraphPolynomial  # noqa: E402

TOL = 1e-5
EDGES = KarateClub()[0].edge_index  # Zachary's karate club, shipped with PyG: 34 nodes, 156 directed edges
NODES = 34

LAYERS = {
    "GCNConv": lambda: GCNConv(6, 4),
    "GCNConv-improved": lambda: GCNConv(6, 4, improved=True),
    "GCNConv-normalize=False": lambda: GCNConv(6, 4, normalize=False),
    "GCNConv-cached": lambda: GCNConv(6, 4, cached=True),
    "SGConv-K3": lambda: SGConv(6, 4, K=3),
    "ChebConv-K3-sym": lambda: ChebConv(6, 4, K=3),
    "ChebConv-K4-rw": lambda: ChebConv(6, 4, K=4, normalization="rw"),
    "GraphConv-add": lambda: GraphConv(6, 4),
    "GraphConv-mean": lambda: GraphConv(6, 4, aggr="mean"),
    "DenseGCNConv": lambda: DenseGCNConv(6, 4),
}


def _graph_input(name: str, layout: str = "edge_index") -> torch.Tensor:
    if name.startswith("Dense"):
        return to_dense_adj(EDGES, max_num_nodes=NODES)[0]
    if layout == "coo":  # PyG's sparse adjacency is adj_t: rows are the targets
        return torch.sparse_coo_tensor(EDGES.flip(0), torch.ones(EDGES.shape[1]), (NODES, NODES), check_invariants=True).coalesce()
    if layout == "csr":
        return torch.sparse_coo_tensor(EDGES.flip(0), torch.ones(EDGES.shape[1]), (NODES, NODES), check_invariants=True).to_sparse_csr()
    return EDGES


class GraphArgument(nn.Module):
    """The graph is a forward argument."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x, graph):
        return torch.relu(self.conv(x, graph))


class GraphBuffer(nn.Module):
    """The graph is a buffer of the model."""

    def __init__(self, conv: nn.Module, graph: torch.Tensor) -> None:
        super().__init__()
        self.conv = conv
        self.register_buffer("edges", graph)

    def forward(self, x):
        return torch.relu(self.conv(x, self.edges))


def _model(name: str, where: str, layout: str = "edge_index"):
    torch.manual_seed(0)
    conv, graph = LAYERS[name](), _graph_input(name, layout)
    with torch.no_grad():  # a nonzero bias, so that it is checked too
        for p in conv.parameters():
            if p.dim() == 1:
                p.normal_()
    x = torch.randn(NODES, 6)
    if where == "argument":
        return GraphArgument(conv), (x, graph)
    return GraphBuffer(conv, graph), (x,)


def _check_relax_and_harden(model, inputs, polynomial_taps: int | None = None):
    before = {k: v.to_dense().clone() for k, v in model.state_dict().items()}
    relaxed = xdfx.relax(model, inputs)
    records = [r for r in relaxed.xdfx_report if r.kind == "pyg_conv"]
    assert len(records) == 1 and records[0].status == "relaxed", records
    assert f"{NODES} nodes" in records[0].detail  # the fixed graph is stated
    layers = [m for m in relaxed.modules() if isinstance(m, XDGraphConv)]
    assert len(layers) == 1  # polynomial layers (SGConv, ChebConv) stay one layer
    if polynomial_taps is not None:
        assert layers[0].weight.shape[-1] == polynomial_taps
    fresh = (torch.randn_like(inputs[0]), *inputs[1:])
    with torch.no_grad():
        for args in (inputs, fresh):
            assert relative_error(relaxed(*args), model(*args)) <= TOL
    hard = xdfx.harden(relaxed, example_inputs=inputs)
    assert not any(isinstance(m, XDGraphConv) for m in hard.modules())
    forms = [m for m in hard.modules() if isinstance(m, GraphPolynomial)]
    assert len(forms) == 1 and forms[0].value.numel() < NODES * NODES // 4  # message passing over the edges
    assert [r.form for r in hard.xdfx_report] == ["graph_polynomial"]
    with torch.no_grad():
        for args in (inputs, fresh):
            assert relative_error(hard(*args), model(*args)) <= TOL
    after = model.state_dict()  # the user's model is untouched
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k].to_dense()) for k in before)
    return relaxed, hard


@pytest.mark.parametrize("where", ["argument", "buffer"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_pyg_layer_relaxes_and_hardens_exactly(name: str, where: str) -> None:
    model, inputs = _model(name, where)
    taps = {"SGConv-K3": 4, "ChebConv-K4-rw": 4}.get(name)
    _check_relax_and_harden(model, inputs, taps)


@pytest.mark.parametrize("layout, where", [("coo", "argument"), ("csr", "buffer")])
@pytest.mark.parametrize("name", ["GCNConv", "GraphConv-add", "GraphConv-mean"])
def test_torch_sparse_adjacency(name: str, layout: str, where: str) -> None:
    model, inputs = _model(name, where, layout)
    _check_relax_and_harden(model, inputs)


@pytest.mark.parametrize("name, where", [("GCNConv", "argument"), ("SGConv-K3", "buffer"),
                                         ("ChebConv-K3-sym", "argument"), ("DenseGCNConv", "buffer")])
def test_another_graph_is_refused(name: str, where: str) -> None:
    model, inputs = _model(name, where)
    relaxed = xdfx.relax(model, inputs)
    hard = xdfx.harden(relaxed, example_inputs=inputs)
    x = inputs[0]
    if name.startswith("Dense"):
        other = inputs[1].clone() if where == "argument" else relaxed.edges.clone()
        other[0, 1] = other[1, 0] = 1 - other[0, 1]
    else:
        other = EDGES[:, :-2]  # two edges fewer
    for m in (relaxed, hard):
        if where == "argument":
            with pytest.raises(xdfx.XdfxInputError, match=r"'conv'.*fixed graph of the example call"):
                m(x, other)
        else:  # a user swapping the buffer after relax
            m.edges = other
            with pytest.raises(xdfx.XdfxInputError, match="relax the model again"):
                m(x)


def test_pyg_gcn_model() -> None:
    from torch_geometric.nn.models import GCN

    torch.manual_seed(0)
    model = GCN(6, 16, num_layers=2, out_channels=4).eval()
    inputs = (torch.randn(NODES, 6), EDGES)
    relaxed = xdfx.relax(model, inputs)
    assert [(r.name, r.status) for r in relaxed.xdfx_report] == [("convs.0.xd", "relaxed"), ("convs.1.xd", "relaxed")]
    hard = xdfx.harden(relaxed, example_inputs=inputs)
    assert [r.form for r in hard.xdfx_report] == ["graph_polynomial"] * 2
    with torch.no_grad():
        assert relative_error(relaxed(*inputs), model(*inputs)) <= TOL
        assert relative_error(hard(*inputs), model(*inputs)) <= TOL


def test_cached_gcn_after_its_first_call_uses_its_cache() -> None:
    model, inputs = _model("GCNConv-cached", "argument")
    with torch.no_grad():
        model(*inputs)  # fills the cache with the normalised graph
    _check_relax_and_harden(model, inputs)
    assert model.conv._cached_edge_index is not None


def test_cached_sgconv_after_its_first_call_is_kept() -> None:
    model = GraphArgument(SGConv(6, 4, K=2, cached=True))
    inputs = (torch.randn(NODES, 6), EDGES)
    with torch.no_grad():
        model(*inputs)  # SGConv now replays these propagated features, whatever x it gets
    (record,) = list(xdfx.relax(model, inputs).xdfx_report)
    assert record.status == "skipped" and "already cached" in record.detail


def test_relax_leaves_an_uncalled_cached_gcn_uncached() -> None:
    model, inputs = _model("GCNConv-cached", "buffer")
    xdfx.relax(model, inputs)
    assert model.conv._cached_edge_index is None  # relax ran a copy


def test_relax_is_quiet(capfd) -> None:
    model, inputs = _model("ChebConv-K3-sym", "argument")
    xdfx.relax(model, inputs)
    xdfx.relax(GraphArgument(GATConv(6, 4)), inputs)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


@pytest.mark.parametrize("conv, reason", [
    (GATConv(6, 4), "not a fixed linear operator"),
    (GraphConv(6, 4, aggr="max"), "not linear in x"),
])
def test_nonlinear_layers_are_kept_with_the_reason(conv, reason: str) -> None:
    model = GraphArgument(conv)
    inputs = (torch.randn(NODES, 6), EDGES)
    relaxed = xdfx.relax(model, inputs)
    (record,) = list(relaxed.xdfx_report)
    assert record.status == "skipped" and reason in record.detail
    assert torch.allclose(relaxed(*inputs), model(*inputs))


def test_directed_graph_is_kept_with_the_reason() -> None:
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])  # a directed 4-cycle: no real eigenbasis
    model = GraphArgument(GraphConv(3, 2))
    inputs = (torch.randn(4, 3), edges)
    (record,) = list(xdfx.relax(model, inputs).xdfx_report)
    assert record.status == "skipped" and "not symmetric" in record.detail


def test_large_graph_gets_the_polynomial_form(monkeypatch) -> None:
    monkeypatch.setattr(graph_ops, "EIGENBASIS_NODES", 20)  # the karate club is then a "large" graph
    model, inputs = _model("SGConv-K3", "argument")
    relaxed, hard = _check_relax_and_harden(model, inputs, polynomial_taps=4)
    (layer,) = [m for m in relaxed.modules() if isinstance(m, XDGraphConv)]
    assert not layer.eigenbasis and layer.K is None and not hasattr(layer, "basis")
    assert "EIGENBASIS_NODES = 20" in next(iter(relaxed.xdfx_report)).detail
    with pytest.raises(xdfx.XdfxUnsupportedError, match="EIGENBASIS_NODES"):
        graph_ops.eigen_decomposition(torch.eye(21))


def test_searched_layer_hardens_to_its_cheapest_exact_form() -> None:
    model, inputs = _model("GCNConv", "argument")
    relaxed = xdfx.relax(model, inputs, arch="monarch")
    assert len(xdfx.arch_parameters(relaxed)) == 3  # K, L, M
    with torch.no_grad():  # the search moved the eigenbasis: no longer a polynomial in A
        for p in xdfx.arch_parameters(relaxed):
            p.add_(0.01 * torch.randn_like(p))
    hard = xdfx.harden(relaxed, example_inputs=inputs, snap="never")
    assert [r.form for r in hard.xdfx_report] == ["frozen"]
    assert any(isinstance(m, FrozenGraphConv) for m in hard.modules())
    assert isinstance(hard.conv, FixedGraphLayer)  # the graph check stays
    with torch.no_grad():
        assert relative_error(hard(*inputs), relaxed(*inputs)) <= TOL


def test_relaxed_pyg_model_trains() -> None:
    model, inputs = _model("ChebConv-K3-sym", "buffer")
    relaxed = xdfx.relax(model, inputs)
    target = torch.randn(NODES, 4)
    opt = torch.optim.Adam(relaxed.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = ((relaxed(*inputs) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]


# ---------------------------------------------------------------- random small graphs
@st.composite
def graphs(draw):
    n = draw(st.integers(3, 16))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=3 * n))
    edges = torch.tensor(pairs, dtype=torch.long).T
    edges = to_undirected(edges[:, edges[0] != edges[1]], num_nodes=n) if bool((edges[0] != edges[1]).any()) else \
        torch.tensor([[0, 1], [1, 0]])
    weights = draw(st.booleans())
    return n, edges, weights, draw(st.integers(0, 2**16))


@settings(max_examples=12, deadline=None)
@given(graphs(), st.sampled_from(["gcn", "gcn-raw", "mean", "cheb-rw", "cheb-sym"]))
def test_random_graphs_relax_and_harden_exactly(graph, layer: str) -> None:
    n, edges, weighted, seed = graph
    torch.manual_seed(seed)
    weight = torch.rand(edges.shape[1]) + 0.5 if weighted else None
    if weight is not None:  # symmetric weights, as an undirected weighted graph has
        dense = torch.zeros(n, n).index_put_((edges[0], edges[1]), weight)
        weight = torch.maximum(dense, dense.T)[edges[0], edges[1]]
    conv = {"gcn": lambda: GCNConv(3, 2), "gcn-raw": lambda: GCNConv(3, 2, normalize=False),
            "mean": lambda: GraphConv(3, 2, aggr="mean"), "cheb-rw": lambda: ChebConv(3, 2, K=3, normalization="rw"),
            "cheb-sym": lambda: ChebConv(3, 2, K=3)}[layer]()

    class WithWeights(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x, edge_index, edge_weight):
            return self.conv(x, edge_index, edge_weight)

    model = WithWeights()
    inputs = (torch.randn(n, 3), edges, weight)
    relaxed = xdfx.relax(model, inputs)
    (record,) = list(relaxed.xdfx_report)
    assert record.status == "relaxed", record.detail
    with torch.no_grad():
        ref = model(*inputs)
        assert relative_error(relaxed(*inputs), ref) <= TOL
        hard = xdfx.harden(relaxed, example_inputs=inputs)
        assert [r.form for r in hard.xdfx_report] == ["graph_polynomial"]
        assert relative_error(hard(*inputs), ref) <= TOL


# ---------------------------------------------------------------- the same math written by hand
def _mean_aggregation() -> torch.Tensor:
    a = to_dense_adj(EDGES, max_num_nodes=NODES)[0]
    return a / a.sum(1, keepdim=True)


@pytest.mark.parametrize("layout, where", [("dense", "buffer"), ("coo", "buffer"), ("csr", "buffer"),
                                           ("coo", "argument"), ("csr", "argument")])
def test_hand_written_mean_aggregation(layout: str, where: str) -> None:
    a = _mean_aggregation()
    a = {"dense": a, "coo": a.to_sparse_coo(), "csr": a.to_sparse_csr()}[layout]

    def propagate(adj, h):
        return torch.sparse.mm(adj, h) if adj.layout != torch.strided else adj @ h

    class MeanBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("a", a)
            self.lin = nn.Linear(5, 3)

        def forward(self, h):
            return propagate(self.a, self.lin(h))

    class MeanArgument(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, h, adj):
            return torch.sparse.mm(adj, self.lin(h))

    h = torch.randn(NODES, 5)
    model, inputs = (MeanBuffer(), (h,)) if where == "buffer" else (MeanArgument(), (h, a))
    relaxed = xdfx.relax(model, inputs)
    assert [r.status for r in relaxed.xdfx_report] == ["relaxed"]
    assert relative_error(relaxed(*inputs), model(*inputs)) <= TOL
    hard = xdfx.harden(relaxed, example_inputs=inputs)
    assert [r.form for r in hard.xdfx_report] == ["graph_polynomial"]
    assert relative_error(hard(*inputs), model(*inputs)) <= TOL
    if where == "argument":
        other = _mean_aggregation()[:, torch.randperm(NODES)].to_sparse_coo()
        for m in (relaxed, hard):
            with pytest.raises(xdfx.XdfxInputError, match="'adj' differs"):
                m(h, other)


def test_symmetrizer_finds_the_degree_scaling() -> None:
    a = _mean_aggregation().double()
    s = graph_ops.symmetrizer(a)
    b = a * s[None, :] / s[:, None]
    assert torch.allclose(b, b.T, atol=1e-12)
    lam, k, m = graph_ops.eigen_decomposition(a)
    assert torch.allclose((k * lam) @ m, a, atol=1e-10) and torch.allclose(k @ m, torch.eye(NODES, dtype=a.dtype), atol=1e-10)
    directed = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert graph_ops.symmetrizer(directed) is None


@pytest.mark.parametrize("polynomial", ["power", "chebyshev"])
@pytest.mark.parametrize("c_in, c_out", [(5, 2), (2, 5)])  # narrowing layers take Horner's / Clenshaw's order
def test_message_passing_matches_the_eigenbasis(polynomial: str, c_in: int, c_out: int) -> None:
    torch.manual_seed(0)
    a = to_dense_adj(EDGES, max_num_nodes=NODES)[0].double()
    a = a / a.sum(1).sqrt()[:, None] / a.sum(1).sqrt()[None, :]
    lam, u = torch.linalg.eigh(a)
    h = torch.randn(3, NODES, c_in, dtype=torch.float64)
    for taps in (1, 2, 5):
        w = torch.randn(taps, c_in, c_out, dtype=torch.float64)
        basis = graph_ops.polynomial_basis(lam, taps, polynomial)
        ref = sum((u * basis[:, j]) @ u.T @ h @ w[j] for j in range(taps))
        got = graph_ops.polynomial_apply(h, graph_ops.to_edges(a), w, polynomial)
        assert torch.allclose(got, ref, atol=1e-10)
