"""Average pooling and fixed-graph convolution become exact XD layers; filters choose what to relax."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import xdfx
from xdfx.nn import GraphConv
from xdfx.ops.graph import XDGraphConv

POOLS = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


@st.composite
def pool_configs(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(d))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    sizes = tuple(draw(st.integers(k, 12 if d < 3 else 7)) for k in kernel)
    kw = dict(ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()))
    if d > 1 and draw(st.booleans()):
        kw["divisor_override"] = draw(st.integers(1, 5))
    return d, kernel, stride, padding, sizes, kw, draw(st.booleans())


@settings(max_examples=150, deadline=None, derandomize=True)
@given(pool_configs())
def test_avg_pool_is_exact(cfg) -> None:
    d, kernel, stride, padding, sizes, kw, functional = cfg
    pool = POOLS[d](kernel, stride, padding, **kw)
    if functional:
        f = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[d]

        class Fn(nn.Module):
            def forward(self, x):
                return f(x, kernel, stride, padding, **kw)

        model = Fn()
    else:
        model = nn.Sequential(pool)
    x = torch.randn(2, 3, *sizes)
    relaxed = xdfx.relax(model, x)
    (record,) = relaxed.xdfx_report.records
    assert record.status == "relaxed", record
    y = pool(x)
    assert float((relaxed(x) - y).abs().max()) <= 1e-4 * float(y.abs().max())


@pytest.mark.parametrize(
    "pool,shape,relaxed",
    [
        (nn.AdaptiveAvgPool2d(1), (2, 3, 7, 9), True),
        (nn.AdaptiveAvgPool2d((3, None)), (2, 3, 9, 5), True),
        (nn.AdaptiveAvgPool1d(4), (2, 3, 12), True),
        (nn.AdaptiveAvgPool2d((3, 5)), (2, 3, 7, 9), False),  # unequal windows: not a convolution
    ],
)
def test_adaptive_pool(pool, shape, relaxed) -> None:
    x = torch.randn(*shape)
    r = xdfx.relax(nn.Sequential(pool), x)
    (record,) = r.xdfx_report.records
    assert (record.status == "relaxed") == relaxed
    if not relaxed:
        assert "unequal" in record.detail
    assert torch.allclose(r(x), pool(x), atol=1e-5)


def _karate():
    g = nx.karate_club_graph()
    labels = torch.tensor([0 if g.nodes[v]["club"] == "Mr. Hi" else 1 for v in g.nodes])
    return g, labels


class GCN(nn.Module):
    def __init__(self, graph) -> None:
        super().__init__()
        self.gc1 = GraphConv(graph, 34, 8)
        self.gc2 = GraphConv(graph, 8, 2)

    def forward(self, x):
        return self.gc2(torch.relu(self.gc1(x)))


@pytest.mark.parametrize("arch", ["monarch", "fixed"])
def test_graph_conv_module_is_exact(arch: str) -> None:
    torch.manual_seed(0)
    g, _ = _karate()
    model = GCN(g)
    x = torch.eye(34)
    r = xdfx.relax(model, x, arch=arch)
    layers = [m for m in r.modules() if isinstance(m, XDGraphConv)]
    assert len(layers) == 2 and not any(isinstance(m, GraphConv) for m in r.modules())
    assert all(not m.depthwise for m in layers)  # A (x W) fused into one layer
    assert [rec.op for rec in r.xdfx_report] == ["graph conv A(hW)"] * 2
    assert torch.allclose(r(x), model(x), atol=1e-5)
    assert (len(xdfx.arch_parameters(r)) == 6) == (arch == "monarch")  # K, L, M per layer


def test_sparse_and_plain_propagation() -> None:
    g, _ = _karate()
    adj = torch.as_tensor(nx.to_numpy_array(g, weight=None), dtype=torch.float32)
    from xdfx.ops.graph import normalized_adjacency

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("a", normalized_adjacency(adj).float().to_sparse())
            self.lin = nn.Linear(5, 5)

        def forward(self, h):
            return torch.sparse.mm(self.a, self.lin(h))

    model = Plain()
    h = torch.randn(34, 5)
    r = xdfx.relax(model, h)
    assert [rec.op for rec in r.xdfx_report] == ["graph propagation A h"]
    assert torch.allclose(r(h), model(h), atol=1e-5)
    with pytest.raises(xdfx.XdfxShapeError, match="34 nodes"):
        r(torch.randn(30, 5))


def test_gcn_trains_on_karate_club() -> None:
    torch.manual_seed(0)
    g, labels = _karate()
    x = torch.eye(34)
    r = xdfx.relax(GCN(g), x, arch="monarch")
    train = torch.tensor([0, 33])  # one labelled node per club, as in Kipf & Welling's demo
    weights = torch.optim.Adam(xdfx.model_parameters(r), lr=0.02)
    arch = torch.optim.Adam(xdfx.arch_parameters(r), lr=1e-3)
    for _ in range(100):
        weights.zero_grad()
        arch.zero_grad()
        F.cross_entropy(r(x)[train], labels[train]).backward()
        weights.step()
        arch.step()
    acc = float((r(x).argmax(1) == labels).float().mean())
    assert acc >= 0.9  # the plain GCN reaches 0.94-0.97 with these settings


def test_include_exclude_filters() -> None:
    from examples.models import ResNetSmall

    model = ResNetSmall()
    x = torch.randn(1, 3, 16, 16)
    r = xdfx.relax(model, x, include=["layer1.*"])
    relaxed = {rec.name for rec in r.xdfx_report.relaxed()}
    assert relaxed == {"layer1.conv1", "layer1.conv2"}
    assert all(rec.detail == "excluded by filter" for rec in r.xdfx_report.skipped())
    r = xdfx.relax(model, x, exclude=[lambda name, m: m is not None and m.kernel_size == (1, 1)])
    assert {rec.name for rec in r.xdfx_report.skipped()} == {"layer2.shortcut.0", "layer3.shortcut.0"}
    assert isinstance(r.get_submodule("layer2.shortcut.0"), nn.Conv2d)
    assert torch.allclose(r(x), model(x), atol=1e-5)
    r = xdfx.relax(model, x, exclude=[nn.Conv2d])
    assert not r.xdfx_report.relaxed()


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        if x.mean() > 0:
            return self.pool(self.conv(x))
        return self.pool(-self.conv(x))


class WithGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.stem(x))


def test_untraceable_submodule_becomes_a_relaxed_leaf() -> None:
    torch.manual_seed(0)
    model = WithGate()
    x = torch.randn(2, 3, 13, 13)
    r = xdfx.relax(model, x)
    by_name = {rec.name: rec for rec in r.xdfx_report}
    assert by_name["gate"].status == "leaf" and "control flow" in by_name["gate"].detail
    assert "zoo" not in by_name["gate"].detail and "test_pool_graph.py" in by_name["gate"].detail
    assert by_name["gate.conv"].status == "relaxed" and by_name["gate.pool"].status == "relaxed"
    assert isinstance(r.get_submodule("gate.conv"), xdfx.XDConv)
    for sign in (1, -1):  # both branches of the data-dependent flow
        xs = sign * x.abs()
        assert torch.allclose(r(xs), model(xs), atol=1e-5)
    r = xdfx.relax(model, x, leaf_classes=[Gate], leaf_modules=["stem"])
    by_name = {rec.name: rec for rec in r.xdfx_report}
    assert by_name["gate"].detail == "kept whole (leaf_classes option)"
    assert by_name["stem"].detail == "kept whole (leaf_modules option)"
    assert isinstance(r.get_submodule("stem"), xdfx.XDConv)  # a conv leaf is still relaxed
    assert isinstance(r.get_submodule("gate.conv"), xdfx.XDConv)
