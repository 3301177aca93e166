"""The public API: parameter partition, no mutation, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xdfx
from examples.models import ResNetSmall, TCN


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class FunctionalConv(nn.Module):
    """Calls F.conv2d with its own weight tensors, one of them shared with a second call."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.b = nn.Parameter(torch.randn(6))
        self.w2 = nn.Parameter(torch.randn(4, 3, 1, 2))

    def forward(self, x):
        h = F.conv2d(x, self.w, self.b, padding=1)
        g = torch.conv2d(h, self.w2, None, 2, (0, 1), 1, 2)
        return F.conv2d(x, self.w, stride=2).sum() + g.sum() * 0 + g


class SharedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.conv(x)))


@pytest.mark.parametrize("arch", ["monarch", "fixed"])
def test_parameters_partition(arch: str) -> None:
    relaxed = xdfx.relax(TCN(), torch.randn(2, 1, 64), arch=arch)
    arch_p, model_p = xdfx.arch_parameters(relaxed), xdfx.model_parameters(relaxed)
    ids_a, ids_m = {id(p) for p in arch_p}, {id(p) for p in model_p}
    assert not ids_a & ids_m
    assert ids_a | ids_m == {id(p) for p in relaxed.parameters()}
    assert (len(arch_p) > 0) == (arch == "monarch")
    # K and M (the arch parameters) get gradients and move the operator away from the DFT
    x = torch.randn(2, 1, 64)
    before = relaxed(x).detach()
    relaxed(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in arch_p)
    with torch.no_grad():
        for p in arch_p:
            p -= 1e-2 * p.grad
    if arch == "monarch":
        assert (relaxed(x) - before).abs().max() > 1e-4


def test_partition_is_independent_of_names() -> None:
    model = nn.Sequential()
    model.add_module("arch_like_name_K", nn.Conv1d(2, 2, 3))
    relaxed = xdfx.relax(model, torch.randn(1, 2, 16))
    names = {id(p): n for n, p in relaxed.named_parameters()}
    assert {names[id(p)] for p in xdfx.model_parameters(relaxed)} == {"arch_like_name_K.spectral_weight", "arch_like_name_K.bias"}


def test_model_is_not_mutated_unless_inplace() -> None:
    model = ResNetSmall().train()
    before = _state(model)
    relaxed = xdfx.relax(model, torch.randn(2, 3, 16, 16))
    relaxed(torch.randn(2, 3, 16, 16))  # train-mode forward updates BatchNorm of the relaxed copy only
    assert _same_state(before, _state(model))
    assert isinstance(model.stem[0], nn.Conv2d)
    xdfx.relax(model, torch.randn(2, 3, 16, 16), inplace=True)
    assert isinstance(model.stem[0], xdfx.XDConv)


def test_functional_convs_use_the_models_weights() -> None:
    torch.manual_seed(0)
    model = FunctionalConv()
    x = torch.randn(2, 3, 11, 12)
    relaxed = xdfx.relax(model, x)
    assert sum(r.status == "relaxed" for r in relaxed.xdfx_report) == 3
    y, z = model(x), relaxed(x)
    assert float((y - z).detach().abs().max()) <= 1e-4 * float(y.detach().abs().max())
    z.sum().backward()
    assert relaxed.w.grad is not None and relaxed.w2.grad is not None  # the user's tensors still train


def test_shared_conv_stays_shared() -> None:
    model = SharedConv()
    x = torch.randn(3, 4, 20)
    relaxed = xdfx.relax(model, x)
    assert len([m for m in relaxed.modules() if isinstance(m, xdfx.XDConv)]) == 1
    assert len(relaxed.xdfx_report.relaxed()) == 2
    assert float((model(x) - relaxed(x)).abs().max()) <= 1e-4 * float(model(x).abs().max())


def test_report_lists_every_conv_with_its_error() -> None:
    model = ResNetSmall()
    relaxed = xdfx.relax(model, torch.randn(1, 3, 16, 16))
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert {r.name for r in relaxed.xdfx_report} == convs
    assert all(r.error is not None and r.error < 1e-5 for r in relaxed.xdfx_report)
    text = str(relaxed.xdfx_report)
    assert all(name in text for name in convs)


def test_other_spatial_sizes_are_exact_or_refused() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(2, 3, 5, padding=2)
    relaxed = xdfx.relax(nn.Sequential(conv), torch.randn(1, 2, 50))
    smaller = torch.randn(4, 2, 33)
    assert torch.allclose(relaxed(smaller), conv(smaller), atol=1e-5)
    with pytest.raises(xdfx.XdfxShapeError, match=r"layer '0'.*length 80.*Relax the model again"):
        relaxed(torch.randn(1, 2, 80))
    circ = nn.Conv1d(2, 3, 5, padding=2, padding_mode="circular")
    relaxed = xdfx.relax(nn.Sequential(circ), torch.randn(1, 2, 50))
    with pytest.raises(xdfx.XdfxShapeError, match="exactly 50"):
        relaxed(smaller)
    with pytest.raises(xdfx.XdfxShapeError, match=r"expects \(batch, 2"):
        relaxed(torch.randn(1, 3, 50))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return -self.conv(x)


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 3)

    def forward(self, x):
        return self.conv(x).view(-1, 7)


def test_bad_input_errors() -> None:
    with pytest.raises(xdfx.XdfxInputError, match="expects an nn.Module"):
        xdfx.relax(lambda x: x, torch.randn(1))
    with pytest.raises(xdfx.XdfxInputError, match="example_inputs"):
        xdfx.relax(TCN(), None)
    model = Untraceable()
    before = _state(model)
    with pytest.raises(xdfx.XdfxTraceError, match="could not trace Untraceable.*control flow"):
        xdfx.relax(model, torch.randn(1, 1, 8))
    assert _same_state(before, _state(model))
    with pytest.raises(xdfx.XdfxShapeError, match=r"example inputs.*\(1, 3, 8\)"):
        xdfx.relax(TCN(), torch.randn(1, 3, 8))
    with pytest.raises(xdfx.XdfxShapeError, match="failed at node"):
        xdfx.relax(Raises(), torch.randn(1, 2, 8))
    relaxed = xdfx.relax(TCN(), torch.randn(1, 1, 8))
    with pytest.raises(xdfx.XdfxInputError, match="already relaxed"):
        xdfx.relax(relaxed, torch.randn(1, 1, 8))


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 40)
    a = xdfx.relax(TCN(), x)
    with torch.no_grad():
        for p in xdfx.arch_parameters(a):
            p.add_(0.01 * torch.randn_like(p))
    b = xdfx.relax(TCN(), x)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))
    c = copy.deepcopy(a)
    assert torch.equal(a(x), c(x))


def test_inference_follows_parameter_updates() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(2, 3, 5, padding=2)
    # a truncated kernel is stored spatially, so its diagonal L w is a transform of the weight
    relaxed = xdfx.relax(nn.Sequential(conv), torch.randn(1, 2, 30), max_kernel_size=9)
    assert not relaxed.get_submodule("0").spectral
    x = torch.randn(4, 2, 30)
    with torch.no_grad():
        first = relaxed(x)
        assert torch.equal(relaxed(x), first)
        relaxed.get_submodule("0").weight.mul_(2.0)  # an in-place update (as optimizers do)
        assert torch.allclose(relaxed(x), 2 * first - relaxed.get_submodule("0").bias[:, None], atol=1e-5)
    relaxed(x).sum().backward()
    assert relaxed.get_submodule("0").weight.grad is not None


def test_set_kernel_checks_the_shape() -> None:
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(2, 3, 5, padding=2)), torch.randn(1, 2, 30))
    xd = relaxed.get_submodule("0")
    before = xd.spectral_weight.detach().clone()
    with pytest.raises(xdfx.XdfxShapeError, match=r"set_kernel needs a real kernel of shape \(3, 2, 32\)"):
        xd.set_kernel(torch.zeros(3, 2, 5))
    assert torch.equal(xd.spectral_weight, before)  # nothing written
    xd.set_kernel(xd.embed(torch.ones(3, 2, 5)))  # the embedded taps are accepted
