"""The budget policy: small nets keep full growth, large ones are capped within the budget, and
every relaxed layer stays exact (float32, <= 1e-4 * max|y|)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xdfx
from tests.zoo import ZOO


class Wide(nn.Module):
    """Enough channels at 64x64 that full growth would not fit a small budget."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.body = nn.Conv2d(32, 32, 5, padding=2, bias=False)
        self.point = nn.Conv2d(32, 32, 1)
        self.down = nn.Conv2d(32, 16, 3, stride=2, padding=1, padding_mode="reflect")

    def forward(self, x):
        return self.down(torch.relu(self.point(torch.relu(self.body(torch.relu(self.stem(x)))))))


def _numbers(model: nn.Module) -> int:
    return sum(t.numel() for t in model.state_dict().values())


def _exact(model: nn.Module, relaxed: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        y, z = model(x), relaxed(x)
    return float((y - z).abs().max()) <= 1e-4 * float(y.abs().max())


def test_small_nets_keep_full_growth() -> None:
    entry = ZOO["resnet_basic"]
    torch.manual_seed(0)
    model = entry.make().eval()
    relaxed = xdfx.relax(model, entry.example_inputs())
    layers = [m for m in relaxed.modules() if isinstance(m, xdfx.XDConv)]
    assert layers and all(g.kernel_buffer == g.n for m in layers for g in m.geometry)
    assert "full growth" in " ".join(r.detail for r in relaxed.xdfx_report.relaxed())
    assert "budget:" in str(relaxed.xdfx_report)


def test_a_binding_budget_caps_kernels_and_keeps_pointwise_convs() -> None:
    torch.manual_seed(0)
    model, x = Wide().eval(), torch.randn(2, 3, 64, 64)
    budget = xdfx.Budget(ratio=4.0, floor=0)
    relaxed = xdfx.relax(model, x, budget=budget)
    by_name = {r.name: r for r in relaxed.xdfx_report}
    assert by_name["point"].status == "skipped" and "pointwise" in by_name["point"].detail
    assert all(by_name[n].status == "relaxed" and "capped at" in by_name[n].detail for n in ("stem", "body", "down"))
    caps = {g.kernel_buffer for n in ("stem", "body") for g in relaxed.get_submodule(n).geometry}
    assert max(caps) < 64  # no layer grew to the full transform
    assert _numbers(relaxed) <= budget.limit(_numbers(model))
    assert _exact(model, relaxed, x)
    # the plan counted exactly what the relaxed model stores
    assert f"stores {_numbers(relaxed):,} numbers" in relaxed.xdfx_report.summary()


def test_overrides_and_no_budget() -> None:
    torch.manual_seed(0)
    model, x = Wide().eval(), torch.randn(2, 3, 64, 64)
    budget = xdfx.Budget(floor=0, overrides=(("body", None), (nn.Conv2d, "keep")))
    relaxed = xdfx.relax(model, x, budget=budget)
    by_name = {r.name: r for r in relaxed.xdfx_report}
    assert by_name["body"].status == "relaxed"
    assert all(g.kernel_buffer == g.n for g in relaxed.get_submodule("body").geometry)
    assert all(by_name[n].status == "skipped" for n in ("stem", "point", "down"))
    assert _exact(model, relaxed, x)
    unlimited = xdfx.relax(model, x, budget=None)
    assert all(g.kernel_buffer == g.n for m in unlimited.modules() if isinstance(m, xdfx.XDConv) for g in m.geometry)
    assert len([m for m in unlimited.modules() if isinstance(m, xdfx.XDConv)]) == 4


def test_an_explicit_max_kernel_size_wins_over_the_budget() -> None:
    torch.manual_seed(0)
    model, x = Wide().eval(), torch.randn(2, 3, 64, 64)
    relaxed = xdfx.relax(model, x, max_kernel_size=9, budget=xdfx.Budget(floor=0))
    assert {g.kernel_buffer for m in relaxed.modules() if isinstance(m, xdfx.XDConv) for g in m.geometry} == {9}
    assert _exact(model, relaxed, x)


def test_functional_convs_follow_the_plan() -> None:
    """F.conv2d calls are capped or kept by the same plan as conv modules."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(32, 32, 3, 3))
            self.p = nn.Parameter(torch.randn(32, 32, 1, 1))

        def forward(self, x):
            return nn.functional.conv2d(nn.functional.conv2d(x, self.w, padding=1), self.p)

    torch.manual_seed(0)
    model, x = Functional().eval(), torch.randn(1, 32, 64, 64)
    relaxed = xdfx.relax(model, x, budget=xdfx.Budget(floor=0))
    statuses = [(r.status, r.detail) for r in relaxed.xdfx_report]
    assert statuses[0][0] == "relaxed" and "capped at" in statuses[0][1]
    assert statuses[1][0] == "skipped" and "pointwise" in statuses[1][1]
    assert all(g.kernel_buffer < g.n for m in relaxed.modules() if isinstance(m, xdfx.XDConv) for g in m.geometry)
    assert _exact(model, relaxed, x)


def test_recompute_is_on_where_the_budget_binds_and_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model, x = Wide().train(), torch.randn(3, 3, 64, 64)
    bound = xdfx.relax(model, x[:1], budget=xdfx.Budget(ratio=4.0, floor=0))
    small = xdfx.relax(model, x[:1])
    assert all(m.recompute for m in bound.modules() if isinstance(m, xdfx.XDConv))
    assert not any(m.recompute for m in small.modules() if isinstance(m, xdfx.XDConv))
    assert "recompute" in bound.xdfx_report.summary() and "recompute" not in small.xdfx_report.summary()

    def grads(recompute: bool, chunk_bytes: int) -> dict:
        import xdfx.ops.xd as xd_module
        old, xd_module.RECOMPUTE_CHUNK_BYTES = xd_module.RECOMPUTE_CHUNK_BYTES, chunk_bytes
        try:
            for m in bound.modules():
                if isinstance(m, xdfx.XDConv):
                    m.recompute = recompute
            bound.zero_grad()
            bound(x).square().mean().backward()
        finally:
            xd_module.RECOMPUTE_CHUNK_BYTES = old
        return {n: p.grad.clone() for n, p in bound.named_parameters() if p.grad is not None}

    stored = grads(False, 32 << 20)
    for chunk in (32 << 20, 1):  # one chunk, and one sample per chunk
        again = grads(True, chunk)
        assert stored.keys() == again.keys() and stored
        for name, g in stored.items():  # float32 round-off of the batch split
            assert torch.allclose(again[name], g, rtol=1e-5, atol=1e-7 * float(g.abs().max())), name


def test_recompute_can_be_forced_either_way() -> None:
    torch.manual_seed(0)
    model, x = Wide().eval(), torch.randn(1, 3, 64, 64)
    forced = xdfx.relax(model, x, budget=xdfx.Budget(recompute=True))
    assert all(m.recompute for m in forced.modules() if isinstance(m, xdfx.XDConv))
    off = xdfx.relax(model, x, budget=xdfx.Budget(ratio=4.0, floor=0, recompute=False))
    assert not any(m.recompute for m in off.modules() if isinstance(m, xdfx.XDConv))
    assert _exact(model, forced, x)
    with pytest.raises(xdfx.XdfxInputError, match="recompute"):
        xdfx.Budget(recompute="sometimes")


def test_a_capped_dilated_conv_keeps_its_taps_not_its_span() -> None:
    # dilation 12 on a 32x32 map: every tap reads the input, and the span (25) exceeds the cap
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=12, dilation=12), nn.ReLU(), nn.Conv2d(64, 8, 3, padding=1)).eval()
    x = torch.randn(2, 64, 32, 32)
    budget = xdfx.Budget(ratio=4.0, floor=0)
    relaxed = xdfx.relax(model, x[:1], budget=budget)
    dilated = relaxed.get_submodule("0")
    assert all(g.buffer_step == 12 and g.kernel_buffer < g.span for g in dilated.geometry)
    assert "@12" in next(r.detail for r in relaxed.xdfx_report if r.name == "0")
    assert _numbers(relaxed) <= budget.limit(_numbers(model))
    assert _exact(model, relaxed, x)
    # its growth lies on the dilated grid: a tap moved in the buffer moves by 12 on the axis
    with torch.no_grad():
        w = torch.zeros_like(dilated.weight)
        w[0, 0, 1, 0] = 1.0
        dilated.set_kernel(w)
        spatial = torch.fft.irfftn(dilated.spectrum()[0, 0].conj(), s=[g.n for g in dilated.geometry])
    assert spatial.abs().argmax() // spatial.shape[1] == 12


def test_taps_that_read_only_padding_are_dropped() -> None:
    # an ASPP branch: dilation 36 on an 8x8 map reads the input with its centre tap only
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=36, dilation=36), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1)).eval()
    x = torch.randn(2, 16, 8, 8)
    relaxed = xdfx.relax(model, x[:1])
    aspp = relaxed.get_submodule("0")
    assert [g.kernel for g in aspp.geometry] == [1, 1] and all(g.n <= 16 for g in aspp.geometry)
    assert "only ever read zero padding" in next(r.detail for r in relaxed.xdfx_report if r.name == "0")
    assert _exact(model, relaxed, x)
    hardened = xdfx.harden(relaxed, example_inputs=(x,))
    with torch.no_grad():
        assert torch.allclose(hardened(x), model(x), rtol=1e-5, atol=1e-5 * float(model(x).abs().max()))
