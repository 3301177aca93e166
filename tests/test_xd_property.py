"""Property tests: a relaxed conv equals the conv, for random conv configurations.

Tolerances: float32 max abs error <= 1e-4 * max|y|; float64 <= 1e-10 * max|y|. The same bound
holds for gradients w.r.t. the input and the conv weight. The scale max|y| is floored at 1% of
the largest possible |y| (max|x| * sum|w| per output; for the gradients the analogous bounds),
for references that are (nearly) identically zero: outputs that see only zero padding, where
float32 round-off of the transforms is ~1e-9 against exact zeros.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import xdfx

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
MAX_SIZE = {1: 40, 2: 14, 3: 7}


@st.composite
def conv_configs(draw):
    d = draw(st.sampled_from([1, 2, 3]))
    grouping = draw(st.sampled_from(["dense", "groups", "depthwise"]))
    if grouping == "dense":
        groups, cin, cout = 1, draw(st.integers(1, 4)), draw(st.integers(1, 4))
    elif grouping == "groups":
        groups = draw(st.integers(2, 3))
        cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    else:
        cin = groups = draw(st.integers(1, 4))
        cout = cin * draw(st.integers(1, 2))
    kmax, dmax = (5, 3) if d < 3 else (3, 2)
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, dmax)) for _ in range(d))
    mode = draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
    padding_kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = (1,) * d if padding_kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(d))
    if padding_kind == "int":
        padding = draw(st.integers(0, 3))
    elif padding_kind == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(d))
    else:
        padding = padding_kind
    pads = _pads(padding, kernel, dilation)
    sizes = []
    for i in range(d):
        span = (kernel[i] - 1) * dilation[i] + 1
        low = max(span - sum(pads[i]), 1, max(pads[i]) + 1)  # reflect needs pad < size
        sizes.append(draw(st.integers(low, max(low, MAX_SIZE[d]))))
    return dict(
        d=d, cin=cin, cout=cout, groups=groups, kernel=kernel, stride=stride, dilation=dilation,
        padding=padding, mode=mode, bias=draw(st.booleans()), sizes=tuple(sizes),
        batch=draw(st.integers(1, 3)), seed=draw(st.integers(0, 2**16)),
        arch=draw(st.sampled_from(["monarch", "fixed"])),
        max_kernel_size=draw(st.sampled_from([None, None, 1, 3, 6, 9])),  # truncated kernels: L as DFT matmuls
    )


def _pads(padding, kernel, dilation):
    if padding == "valid":
        return [(0, 0)] * len(kernel)
    if padding == "same":
        return [((k - 1) * dl // 2, (k - 1) * dl - (k - 1) * dl // 2) for k, dl in zip(kernel, dilation)]
    p = padding if isinstance(padding, tuple) else (padding,) * len(kernel)
    return [(v, v) for v in p]


def _build(cfg, dtype):
    torch.manual_seed(cfg["seed"])
    conv = CONVS[cfg["d"]](
        cfg["cin"], cfg["cout"], cfg["kernel"], stride=cfg["stride"], padding=cfg["padding"],
        dilation=cfg["dilation"], groups=cfg["groups"], bias=cfg["bias"], padding_mode=cfg["mode"],
    ).to(dtype)
    x = torch.randn(cfg["batch"], cfg["cin"], *cfg["sizes"], dtype=dtype)
    return conv, x


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / max(float(b.abs().max()), floor))


def kernel_grad(xd: xdfx.XDConv) -> torch.Tensor:
    """The gradient w.r.t. the real kernel ``w``: a spectral layer's parameter gradient mapped
    back through the (linear) adjoint of its parametrisation ``w -> conj F w``."""
    if not xd.spectral:
        return xd.weight.grad
    w = torch.zeros_like(xd.kernel()).requires_grad_()
    (grad,) = torch.autograd.grad(torch.view_as_real(xd.diagonal_of(w)), w, xd.spectral_weight.grad)
    return grad


def _check(cfg, dtype, tol):
    conv, x = _build(cfg, dtype)
    model = nn.Sequential(conv)
    relaxed = xdfx.relax(model, (x,), arch=cfg["arch"], max_kernel_size=cfg["max_kernel_size"])
    xd = relaxed.get_submodule("0")
    assert isinstance(xd, xdfx.XDConv)
    # a different batch size than the example's
    x2 = torch.randn(cfg["batch"] + 2, *x.shape[1:], dtype=dtype, requires_grad=True)
    x3 = x2.detach().clone().requires_grad_()
    y, z = conv(x2), relaxed(x3)
    assert z.shape == y.shape
    w_sum = float(conv.weight.detach().abs().flatten(1).sum(1).max())
    floor = 1e-2 * float(x2.detach().abs().max()) * w_sum
    assert _rel(z, y, floor) <= tol, f"forward error {_rel(z, y, floor):.3e} for {cfg}"
    g = torch.randn_like(y)
    y.backward(g)
    z.backward(g)
    assert _rel(x3.grad, x2.grad, 1e-2 * w_sum) <= tol, f"input-gradient error for {cfg}"
    taps = (Ellipsis, *(g.buffer_index() for g in xd.geometry))  # a capped dilated kernel keeps only its taps
    live = (Ellipsis, *(slice(a, b + 1) for a, b in xdfx.XDConv.live_taps(conv, x.shape[2:])))
    dead = conv.weight.grad.clone()
    dead[live] = 0  # taps relax dropped read only zero padding: the conv's gradient there is zero
    assert float(dead.abs().max()) == 0.0
    assert _rel(kernel_grad(xd)[taps], conv.weight.grad[live], 1e-2) <= tol, f"weight-gradient error for {cfg}"
    if cfg["bias"]:
        assert _rel(xd.bias.grad, conv.bias.grad, 1e-2) <= tol


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv_configs())
def test_relaxed_conv_matches_float32(cfg):
    _check(cfg, torch.float32, 1e-4)


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv_configs())
def test_relaxed_conv_matches_float64(cfg):
    _check(cfg, torch.float64, 1e-10)


@pytest.mark.parametrize(
    "conv,size,folds",
    [
        (nn.Conv2d(4, 6, 3, stride=2, padding=1), (32, 32), (True, False)),  # ResNet downsampling
        (nn.Conv2d(4, 6, 1, stride=2), (16, 16), (True, False)),  # projection shortcut
        (nn.Conv2d(3, 5, (4, 3), stride=3, padding=1, padding_mode="circular"), (33, 10), (True, False)),  # n = N = 33
        (nn.Conv2d(3, 5, (4, 3), stride=2, padding=2, padding_mode="circular"), (33, 10), (False, False)),  # 33 is odd
        (nn.Conv3d(2, 2, 3, stride=(1, 2, 3), padding=(1, 0, 2), padding_mode="reflect"), (6, 9, 11), (False, True, False)),
        (nn.Conv1d(3, 5, 4, stride=2, padding=2), (33,), (False,)),  # the last axis: a strided slice
    ],
)
def test_strides_are_taken_in_frequency(conv: nn.Module, size: tuple, folds: tuple) -> None:
    """Without a learned K, strided outputs along the full frequency axes come from an aliased
    spectrum and an inverse FFT ``stride`` times shorter; exact like the rest (float64, 1e-10)."""
    torch.manual_seed(0)
    conv = conv.double()
    x = torch.randn(2, conv.in_channels, *size, dtype=torch.float64)
    relaxed = xdfx.relax(nn.Sequential(conv), x, arch="fixed")
    xd = relaxed.get_submodule("0")
    padded = [s + (sum(g.pad) if g.prepad else 0) for s, g in zip(size, xd.geometry)]
    assert xd.folded_axes(padded, learned_k=False) == folds
    y = conv(x)
    assert float((relaxed(x) - y).abs().max()) <= 1e-10 * float(y.abs().max())
    monarch = xdfx.relax(nn.Sequential(conv), x, arch="monarch").get_submodule("0")
    assert not any(monarch.folded_axes(padded, learned_k=len(monarch.K) > 0))  # a learned K needs the full-length result


@st.composite
def wide_dilation_configs(draw):
    """Dilations and paddings as large as an ASPP branch's, on maps smaller than the span."""
    k, d = draw(st.integers(1, 4)), draw(st.integers(1, 40))
    pad = draw(st.integers(0, 40))
    span = (k - 1) * d + 1
    size = draw(st.integers(max(1, span - 2 * pad), max(1, span - 2 * pad) + 9))
    return k, d, pad, size, draw(st.integers(1, 3)), draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(wide_dilation_configs())
def test_taps_that_read_only_padding_are_dropped_exactly(cfg) -> None:
    k, d, pad, size, stride, seed = cfg
    torch.manual_seed(seed)
    conv = nn.Conv1d(3, 2, k, padding=pad, dilation=d, stride=stride).double()
    x = torch.randn(2, 3, size, dtype=torch.float64)
    relaxed = xdfx.relax(nn.Sequential(conv), (x,))
    y = conv(x)
    xd = relaxed.get_submodule("0")
    outputs = (size + 2 * pad - (k - 1) * d - 1) // stride + 1
    live = [j for j in range(k) if any(0 <= o * stride + j * d - pad < size for o in range(outputs))]
    # exactly the taps from the first to the last one that reads the input are kept, unless the
    # taps before the first one are fewer than the padding they read (dropping them would crop the input)
    if live and pad >= live[0] * d and pad >= (k - 1 - live[-1]) * d:
        assert xd.geometry[0].kernel == live[-1] - live[0] + 1
    else:
        assert xd.geometry[0].kernel == k
    assert float((relaxed(x) - y).abs().max()) <= 1e-10 * max(float(y.abs().max()), 1e-30)
    hardened = xdfx.harden(relaxed, tol=1e-8, example_inputs=(x,))
    # a plain conv, or zero when no tap reads the input (the bias stays); exact below
    assert hardened.xdfx_report.records[0].form in ("conv", "snapped_conv", "zero")
    assert float((hardened(x) - y).abs().max()) <= 1e-10 * max(float(y.abs().max()), 1e-30)
