"""Every architecture of the zoo relaxes exactly (float32, <= 1e-4 * max|y|, eval mode), and the
report accounts for every conv, pool and graph convolution call: rewritten or skipped with a reason."""

from __future__ import annotations

import pytest
import torch

import xdfx
from tests.zoo import ZOO


def _relax(entry):
    torch.manual_seed(0)
    model = entry.make().eval()
    inputs = entry.example_inputs()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    relaxed = xdfx.relax(model, inputs)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    return model, inputs, relaxed


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_relaxes_exactly(name: str) -> None:
    entry = ZOO[name]
    model, inputs, relaxed = _relax(entry)
    with torch.no_grad():
        y, z = model(*inputs), relaxed(*inputs)
    assert z.shape == y.shape
    assert float((y - z).abs().max()) <= 1e-4 * float(y.abs().max()), name


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_report_accounts_for_every_layer(name: str) -> None:
    entry = ZOO[name]
    _, _, relaxed = _relax(entry)
    report = relaxed.xdfx_report
    kinds = [r.kind for r in report]
    assert kinds.count("conv") + kinds.count("conv_function") == entry.convs, str(report)  # modules + functions
    assert kinds.count("avg_pool") == entry.avg_pools, str(report)
    assert kinds.count("max_pool") == entry.max_pools, str(report)
    assert kinds.count("graph_conv") == entry.graph_convs, str(report)
    for r in report:
        assert r.status in ("relaxed", "skipped", "leaf")
        if r.status != "relaxed":
            assert r.detail, f"{r.name} is {r.status} without a reason"
    assert all(r.status == "skipped" for r in report if r.kind == "max_pool")
    assert (kinds.count("leaf") > 0) == (not entry.traceable and name != "nontensor_args")
