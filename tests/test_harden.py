"""xdfx.harden: round trips give back the original ops; planted operators are recognised.

Tolerances: outputs within 1e-4 * max|y| (float32); recovered conv weights within 1e-6.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import fx, nn

import xdfx
from tests.zoo import ZOO
from xdfx.ops import XDConv
from xdfx.ops.graph import XDGraphConv

CONV_POOL = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
             nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= tol * float(b.abs().max())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_round_trip(name: str) -> None:
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.make().eval()
    inputs = entry.example_inputs()
    relaxed = xdfx.relax(model, inputs)
    hard = xdfx.harden(relaxed)
    assert not any(isinstance(m, (XDConv, XDGraphConv)) for m in hard.modules())
    assert not any(p.is_complex() for p in hard.parameters())
    with torch.no_grad():
        assert _close(hard(*inputs), model(*inputs)), name
    for mname, m in model.named_modules():
        if isinstance(m, CONV_POOL):
            h = hard.get_submodule(mname)
            assert type(h) is type(m), f"{mname}: {type(m).__name__} came back as {type(h).__name__}"
            if isinstance(m, nn.modules.conv._ConvNd):
                assert torch.allclose(h.weight, m.weight, rtol=0, atol=1e-6), mname
                assert (h.stride, h.dilation, h.groups) == (m.stride, m.dilation, m.groups)
    assert {r.form for r in hard.xdfx_report} <= {"conv", "pool", "conv_function", "graph_polynomial"}


def _relaxed_layer(conv: nn.Module, length: int, arch: str = "fixed"):
    relaxed = xdfx.relax(nn.Sequential(conv), torch.randn(2, conv.in_channels, length), arch=arch)
    return relaxed, relaxed.get_submodule("0")


def test_planted_dilated_conv() -> None:
    torch.manual_seed(0)
    relaxed, xd = _relaxed_layer(nn.Conv1d(4, 4, 3, padding=1), 64)
    n = xd.geometry[0].n
    w = torch.zeros(4, 4, n)  # 7 taps, dilation 2, centred: circular offsets -5, -3, ..., 7 (pad 1)
    w[..., [(-5 + 2 * j) % n for j in range(7)]] = torch.randn(4, 4, 7)
    xd.set_kernel(w)
    hard = xdfx.harden(relaxed)
    (rec,) = hard.xdfx_report.records
    conv = hard.get_submodule("0")
    assert rec.form == "conv" and isinstance(conv, nn.Conv1d)
    assert conv.kernel_size == (7,) and conv.dilation == (2,) and conv.padding == (6,)
    x = torch.randn(3, 4, 64)
    assert _close(hard(x), relaxed(x))


def test_planted_fno_layer() -> None:
    torch.manual_seed(0)
    relaxed, xd = _relaxed_layer(nn.Conv1d(16, 16, 5, padding=2, padding_mode="circular"), 512)
    spec = torch.zeros(16, 16, 257, dtype=torch.complex64)
    spec[..., :12] = torch.randn(16, 16, 12, dtype=torch.complex64)
    spec[..., 0] = spec[..., 0].real
    xd.set_kernel(torch.fft.irfft(spec.conj(), n=512))
    hard = xdfx.harden(relaxed, tol=1e-4)
    (rec,) = hard.xdfx_report.records
    assert rec.form == "spectral" and rec.detail.startswith("modes=12"), rec
    # 12 of 257 modes: a fraction of the parameters, and cheaper than every mode
    assert rec.params_after < 0.1 * rec.params_before and rec.runner_up == "fft"
    x = torch.randn(3, 16, 512)
    assert _close(hard(x), relaxed(x))


def test_planted_permuted_input_conv() -> None:
    torch.manual_seed(0)
    relaxed, xd = _relaxed_layer(nn.Conv1d(3, 3, 3, padding=1), 60, arch="monarch")
    n = xd.geometry[0].n
    perm = torch.randperm(n)
    with torch.no_grad():
        xd.M[0].blocks1[0].copy_(torch.eye(n)[perm])  # Q_M x = x[perm]
    hard = xdfx.harden(relaxed)
    (rec,) = hard.xdfx_report.records
    assert rec.form == "conv+permutation", rec
    x = torch.randn(2, 3, 60)
    assert _close(hard(x), relaxed(x))
    assert any(isinstance(m, nn.Conv1d) for m in hard.modules())


@pytest.mark.parametrize("planted", ["identity", "zero"])
def test_planted_identity_and_zero(planted: str) -> None:
    relaxed, xd = _relaxed_layer(nn.Conv1d(4, 4, 3, padding=1), 33)
    w = torch.zeros(4, 4, xd.geometry[0].n)
    if planted == "identity":
        w[:, :, 1] = torch.eye(4)  # the centre tap: y = x
    xd.set_kernel(w)
    with torch.no_grad():
        xd.bias.zero_()
    hard = xdfx.harden(relaxed)
    assert hard.xdfx_report.records[0].form == planted
    x = torch.randn(2, 4, 33)
    assert torch.allclose(hard(x), relaxed(x), atol=1e-6)


def test_learned_general_factors_fall_back_to_frozen() -> None:
    torch.manual_seed(0)
    relaxed, xd = _relaxed_layer(nn.Conv1d(3, 3, 3, padding=1), 40, arch="monarch")
    with torch.no_grad():
        xd.K[0].blocks1.add_(0.05 * torch.randn_like(xd.K[0].blocks1))
    hard = xdfx.harden(relaxed, snap="never")  # the default snaps it instead (tests/test_snap.py)
    rec = hard.xdfx_report.records[0]
    assert rec.form == "frozen" and rec.error <= 1e-4
    x = torch.randn(2, 3, 40)
    assert _close(hard(x), relaxed(x))
    assert not any(p.requires_grad and p.is_complex() for p in hard.parameters())
    # the frozen form holds no XD layer and no architecture parameter, and the report says so
    assert not any(isinstance(m, (XDConv, XDGraphConv)) for m in hard.modules())
    assert xdfx.arch_parameters(hard) == []
    assert hard.xdfx_report.kept_xd == [] and "learnable XD layers kept: none" in str(hard.xdfx_report)
    # the count covers what the frozen layer stores: its precomputed L w and its factors
    assert rec.params_after == sum(t.numel() for t in hard.get_submodule("0").state_dict().values())
    assert rec.params_after > xd.geometry[0].n ** 2


def test_hardened_model_is_traceable_and_round_trips_state() -> None:
    from examples.models import TCN

    torch.manual_seed(0)
    x = torch.randn(2, 1, 50)
    relaxed = xdfx.relax(TCN(), x)
    hard = xdfx.harden(relaxed, example_inputs=x)
    assert hard.xdfx_report.end_to_end_error <= 1e-4
    traced = fx.symbolic_trace(hard)
    assert torch.allclose(traced(x), hard(x))
    twin = xdfx.harden(xdfx.relax(TCN(), x))
    twin.load_state_dict(hard.state_dict())
    assert torch.equal(twin(x), hard(x))


def test_harden_errors() -> None:
    with pytest.raises(xdfx.XdfxInputError, match="no XD layers"):
        xdfx.harden(nn.Sequential(nn.Conv1d(1, 1, 3)))
    relaxed, xd = _relaxed_layer(nn.Conv1d(2, 2, 3), 16)
    with torch.no_grad():
        xd.spectral_weight[0, 0, 0, 0] = math.nan
    with pytest.raises(xdfx.XdfxError, match=r"'0.spectral_weight' has NaN"):
        xdfx.harden(relaxed)


def test_provenance_survives_a_copy_of_the_relaxed_model() -> None:
    """Harden gives back the original pooling from the relax report, also for a deep copy."""
    import copy

    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.AvgPool2d(2, ceil_mode=True)).eval()
    x = torch.randn(2, 2, 9, 9)
    relaxed = copy.deepcopy(xdfx.relax(model, x))
    assert relaxed.xdfx_report.origins()["1"].kind == "avg_pool"
    hard = xdfx.harden(relaxed, example_inputs=x)
    assert [r.form for r in hard.xdfx_report] == ["conv", "pool"]
    assert type(hard.get_submodule("1")) is nn.AvgPool2d and hard.get_submodule("1").ceil_mode
    assert _close(hard(x), model(x))


def test_every_op_kind_restores_to_a_known_form() -> None:
    from xdfx.forms import FORM_BY_NAME
    from xdfx.op_kinds import OP_KINDS

    for kind in OP_KINDS:
        assert (kind.relax is None) == bool(kind.kept_because), kind.name
        if kind.relax is not None:
            assert kind.restore in FORM_BY_NAME, kind.name
