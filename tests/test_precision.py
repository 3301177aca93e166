"""Mixed precision: half and bfloat16 models relax, and XD layers run under ``torch.autocast``.

XD layers compute their transforms in float32 when the input or their parameters are float16 /
bfloat16 (FFTs do not take those dtypes on CPU) and return what a conv would: the autocast
dtype under autocast, else the input's dtype.

Tolerances, as max abs error / max|y|:
- a relaxed half / bfloat16 model against the original model in the same dtype:
  ``4 * finfo(dtype).eps`` (3.9e-3 for float16, 3.1e-2 for bfloat16). Both sides round to the
  dtype, the conv in its accumulation and the XD layer in its stored diagonal, input and
  output; the errors seen are about one eps. ``nn.Conv*d`` runs in float16 on CPU here, so the
  reference is the half model itself.
- an XD layer under CPU bfloat16 autocast against the float32 conv: ``2 * eps(bfloat16)`` on a
  float32 input (the layer computes in float32 and rounds its output once; the autocast conv
  also rounds its input and weight, and lands further away), ``4 * eps`` on a bfloat16 input.
- ``nn.AvgPool3d`` has no float16 / bfloat16 CPU kernel, so no 3-d pooling model is compared.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from torch import nn

import xdfx
from tests.test_xd_property import _build, conv_configs
from tests.zoo import ZOO
from xdfx.demo import BurgersCNN
from xdfx.ops import FrozenXD, SpectralConv, XDConv
from xdfx.tasks import burgers

HALVES = [torch.float16, torch.bfloat16]


def tol(dtype: torch.dtype) -> float:
    return 4 * torch.finfo(dtype).eps


def rel(got: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    got, ref = got.detach().double(), ref.detach().double()
    return float((got - ref).abs().max()) / max(float(ref.abs().max()), floor)


# ----------------------------------------------------------------------------- half models
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv_configs())
def test_relaxed_half_conv_matches_the_half_conv(cfg) -> None:
    """A float16 / bfloat16 conv relaxes into an XD layer that keeps the conv's dtype (its
    parameters and its outputs) and matches it within the dtype's tolerance; gradients reach
    every parameter in that dtype."""
    base, x32 = _build(cfg, torch.float32)
    for dtype in HALVES:
        conv, x = copy.deepcopy(base).to(dtype), x32.to(dtype)
        relaxed = xdfx.relax(nn.Sequential(conv), (x,), arch=cfg["arch"])
        xd = relaxed.get_submodule("0")
        assert {p.dtype for p in xd.parameters()} == {dtype}
        y, z = conv(x), relaxed(x)
        assert z.dtype == dtype
        # floor: outputs that see only zero padding (see tests/test_xd_property.py)
        floor = 1e-2 * float(x32.abs().max()) * float(base.weight.detach().abs().flatten(1).sum(1).max())
        assert rel(z, y, floor) <= tol(dtype), f"{dtype}: error {rel(z, y, floor):.2e} for {cfg}"
        z.float().square().sum().backward()
        assert all(p.grad is not None and p.grad.dtype == dtype for p in xd.parameters())


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize(
    "name", ["resnet_basic", "mobilenetv2", "tcn_causal", "fno_style", "functional_conv", "pools"]
)
def test_relaxed_half_zoo_model_matches_the_half_model(name: str, dtype: torch.dtype) -> None:
    """``xdfx.relax(model.half(), x.half())``: convs (module and functional) and average pools
    relax in the model's dtype and the relaxed model matches the original in that dtype."""
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.make().eval().to(dtype)
    inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in entry.example_inputs())
    relaxed = xdfx.relax(model, *inputs)
    assert relaxed.xdfx_report.relaxed()
    with torch.no_grad():
        y, z = model(*inputs), relaxed(*inputs)
    assert z.dtype == dtype
    assert rel(z, y) <= tol(dtype), f"{name} {dtype}: error {rel(z, y):.2e}"


# ----------------------------------------------------------------------------- autocast
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv_configs())
def test_relaxed_conv_under_cpu_autocast(cfg) -> None:
    """Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` a relaxed conv returns bfloat16, as
    the conv does, within bfloat16's tolerance of the float32 conv, on float32 and on bfloat16
    inputs; gradients reach every (float32) parameter in float32."""
    conv, x = _build(cfg, torch.float32)
    relaxed = xdfx.relax(nn.Sequential(conv), (x,), arch=cfg["arch"])
    y = conv(x).detach()
    floor = 1e-2 * float(x.abs().max()) * float(conv.weight.detach().abs().flatten(1).sum(1).max())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = conv(x).dtype
        z, zb = relaxed(x), relaxed(x.bfloat16())
    assert z.dtype == zb.dtype == expected == torch.bfloat16
    assert rel(z, y, floor) <= 2 * torch.finfo(torch.bfloat16).eps, f"error {rel(z, y, floor):.2e} for {cfg}"
    assert rel(zb, y, floor) <= tol(torch.bfloat16), f"error {rel(zb, y, floor):.2e} for {cfg}"
    z.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in relaxed.parameters())


def test_hardened_forms_follow_autocast_and_input_dtype() -> None:
    """The frozen and spectral forms share the XD layer's precision rule: the autocast dtype
    under autocast, the input's dtype outside it (float64 stays float64 under autocast, as
    autocast leaves it), and float32 / float64 computed as before."""
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 6, 5, padding=2, padding_mode="circular")
    x = torch.randn(3, 4, 30)
    xd = XDConv.from_conv(conv, [30])
    layers = [xd, FrozenXD(xd, method="matmul"), FrozenXD(xd, method="fft"),
              SpectralConv(xd.spectrum().detach(), [16], xd.geometry, bias=xd.bias, method="fft")]
    y = conv(x).detach()
    for layer in layers:
        ref = layer(x)
        assert rel(ref, y) <= 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(x).dtype == torch.bfloat16
            assert rel(layer(x), ref) <= 2 * torch.finfo(torch.bfloat16).eps
        for dtype in HALVES:
            assert layer(x.to(dtype)).dtype == dtype
            assert rel(layer(x.to(dtype)), ref) <= tol(dtype)
    xd64 = XDConv.from_conv(copy.deepcopy(conv).double(), [30])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert xd64(x.double()).dtype == torch.float64


def test_float32_path_has_no_casts() -> None:
    """Outside autocast a float32 layer computes exactly as without the precision rule: its
    traced graph holds no dtype conversion."""
    from torch.fx.experimental.proxy_tensor import make_fx

    torch.manual_seed(0)
    xd = XDConv.from_conv(nn.Conv2d(3, 4, 3, stride=2, padding=1), [10, 10])
    graph = make_fx(xd)(torch.randn(2, 3, 10, 10)).graph
    assert not [n for n in graph.nodes if n.op == "call_function" and "to_copy" in str(n.target)]


# ----------------------------------------------------------------------------- training
def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, steps: int, *, device_type: str = "cpu",
          dtype: torch.dtype = torch.bfloat16, scaler=None, lr: float = 1e-3) -> list[float]:
    """Full-batch training under autocast with :func:`xdfx.optimizers`; the loss per step. With
    a ``GradScaler`` both optimizers of the pair step through it."""
    opt = xdfx.optimizers(model, lambda p: torch.optim.Adam(p, lr=lr), arch_lr=lr)
    losses = []
    for _ in range(steps):
        with torch.autocast(device_type, dtype=dtype):
            out = model(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            for o in (opt.model, opt.arch):
                if o is not None:
                    scaler.step(o)
            scaler.update()
        losses.append(loss.item())
    return losses


def templates_task(n: int = 16, size: int = 12, classes: int = 4, seed: int = 0):
    """A tiny classification problem: one random image per class plus noise."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randn(classes, 3, size, size, generator=gen)
    labels = torch.arange(n) % classes
    return templates[labels] + 0.5 * torch.randn(n, 3, size, size, generator=gen), labels


def rel_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)).mean()


def assert_converges(losses: list[float], factor: float = 0.25) -> None:
    assert all(torch.isfinite(torch.tensor(losses))), losses
    tail = sum(losses[-3:]) / 3
    assert tail < factor * losses[0], f"loss {losses[0]:.3g} -> {tail:.3g}: {losses}"


def test_relaxed_resnet_trains_under_cpu_bfloat16_autocast() -> None:
    """A relaxed ResNet (BatchNorm, strides, 1x1 shortcut, Monarch factors) trains under CPU
    bfloat16 autocast: the loss falls below a quarter of its start, finite throughout, and the
    parameters stay float32 (autocast casts activations, not weights)."""
    x, labels = templates_task()
    torch.manual_seed(0)
    relaxed = xdfx.relax(ZOO["resnet_basic"].make(), x[:2]).train()
    losses = train(relaxed, x, labels, F.cross_entropy, 10)
    assert_converges(losses)
    assert all(p.dtype == torch.float32 for p in relaxed.parameters())


def pointwise(name: str, module: nn.Module | None) -> bool:
    """The Burgers net's 1x1 convs, which the demo leaves as they are."""
    return module is not None and all(k == 1 for k in module.kernel_size)


def test_relaxed_burgers_net_trains_under_cpu_bfloat16_autocast() -> None:
    """The demo's Burgers CNN, its circular 5-tap convs relaxed to full-length spectral kernels,
    trains under CPU bfloat16 autocast on the Burgers task (relative L2 loss)."""
    u0, u1 = burgers.generate(64, 64, seed=0)
    grid = torch.linspace(0, 1, 65)[:-1].expand(len(u0), 1, 64)
    x, y = torch.cat([u0[:, None], grid], 1), u1[:, None]
    torch.manual_seed(0)
    relaxed = xdfx.relax(BurgersCNN(width=16), x[:2], exclude=[pointwise])
    assert len(relaxed.xdfx_report.relaxed()) == 4
    losses = train(relaxed, x, y, rel_l2, 20)
    assert_converges(losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float16_autocast_training_with_grad_scaler() -> None:
    """CUDA float16 autocast with a ``GradScaler``, what GPU training usually runs: the relaxed
    layers return float16 (their FFTs run in float32, also at lengths that are not powers of
    two, where half FFTs are refused), match the float32 model, and the relaxed ResNet trains."""
    device = torch.device("cuda")
    x, labels = templates_task()
    x, labels = x.to(device), labels.to(device)
    torch.manual_seed(0)
    relaxed = xdfx.relax(ZOO["resnet_basic"].make(), x[:2].cpu()).to(device)
    assert any(g.n & (g.n - 1) for m in relaxed.modules() if isinstance(m, XDConv) for g in m.geometry)
    relaxed.eval()
    with torch.no_grad():
        ref = relaxed(x)
        with torch.autocast("cuda", dtype=torch.float16):
            got = relaxed(x)
    assert got.dtype == torch.float16
    assert rel(got, ref) <= tol(torch.float16)
    relaxed.train()
    losses = train(relaxed, x, labels, F.cross_entropy, 15, device_type="cuda", dtype=torch.float16,
                   scaler=torch.amp.GradScaler("cuda"))
    assert_converges(losses)
