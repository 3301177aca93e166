"""Every conv the zoos use relaxes exactly or is reported with the reason: conv subclasses (with
nn.Conv's forward or their own: TF "same" padding, weight standardisation), parametrized and
old-style weight-normed convs, lazy convs, convs inside leaves, unused convs; hooks on convs, on
blocks and on the root are kept. Tolerance: outputs within 1e-4 * max|y| (float32, eval mode),
as tests/test_zoo.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

import xdfx
from tests.zoo import ZOO
from xdfx.ops import XDConv


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= tol * float(b.abs().max())


class PlainSubConv2d(nn.Conv2d):
    """A subclass that only adds an attribute: nn.Conv2d's own forward."""

    tag = "plain"


class PlainSubConv1d(nn.Conv1d):
    pass


class TFSamePadConv2d(nn.Conv2d):
    """TensorFlow "SAME" padding, computed in forward from the input size (traceable arithmetic)."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ph = (-(-ih // sh) - 1) * sh + (kh - 1) * dh + 1 - ih  # >= 0 here: kernel >= stride
        pw = (-(-iw // sw) - 1) * sw + (kw - 1) * dw + 1 - iw
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class TimmSamePadConv2d(nn.Conv2d):
    """timm's Conv2dSame: the same padding through math.ceil and max, which torch.fx cannot trace."""

    def forward(self, x):
        ih, iw = x.size()[-2:]
        ph = max((math.ceil(ih / self.stride[0]) - 1) * self.stride[0] + (self.kernel_size[0] - 1) * self.dilation[0] + 1 - ih, 0)
        pw = max((math.ceil(iw / self.stride[1]) - 1) * self.stride[1] + (self.kernel_size[1] - 1) * self.dilation[1] + 1 - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class WSConv2d(nn.Conv2d):
    """Weight standardisation: the weight is normalised in forward, on every call."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Gate(nn.Module):
    """Data-dependent control flow around a plain conv subclass: a leaf."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = PlainSubConv2d(c, c, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.tanh(y) if y.mean() > 0 else torch.sigmoid(y)


class Variants(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.same = TFSamePadConv2d(3, 8, 3, stride=2)
        self.ws = WSConv2d(8, 8, 3, padding=1)
        self.sub = PlainSubConv2d(8, 8, 3, padding=1, bias=False)
        self.wn = parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1))
        self.wn_old = torch.nn.utils.weight_norm(nn.Conv2d(8, 8, 1))  # old style: a forward pre-hook
        self.gate = Gate(8)
        self.conv1d = PlainSubConv1d(8, 4, 3, padding=1)
        self.unused = nn.Conv2d(8, 8, 3)

    def forward(self, x):
        x = F.relu(self.same(x))
        x = F.relu(self.ws(x))
        x = F.relu(self.sub(x))
        x = F.relu(self.wn(x))
        x = self.gate(self.wn_old(x))
        return self.conv1d(torch.flatten(x, 2))


def _variants():
    torch.manual_seed(0)
    return Variants().eval(), torch.randn(2, 3, 11, 9)


def _accounted(report) -> set[str]:
    """Conv module names the report mentions: rows of their own (not leaf rows), and functional
    conv calls made by their traced-through forward."""
    return {r.name for r in report if r.kind != "leaf"} | {r.module for r in report if r.module}


def _conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, nn.modules.conv._ConvTransposeNd)]


def _rows(report, name):
    return [r for r in report if r.name == name and r.kind != "leaf"]


pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")


def test_variants_relax_exactly_and_are_reported() -> None:
    model, x = _variants()
    relaxed = xdfx.relax(model, x)
    with torch.no_grad():
        y, z = model(x), relaxed(x)
    assert _close(z, y)
    report = relaxed.xdfx_report
    (sub,) = _rows(report, "sub")
    assert sub.status == "relaxed" and sub.kind == "conv_subclass" and "runs nn.Conv2d's forward" in sub.detail
    assert isinstance(relaxed.sub, XDConv)
    (wn,) = _rows(report, "wn")
    assert wn.status == "relaxed" and "_WeightNorm of weight folded into the XD kernel" in wn.detail
    assert not any("parametrizations" in k for k in relaxed.state_dict())  # folded: the XD layer owns the kernel
    (old,) = _rows(report, "wn_old")
    assert old.status == "relaxed" and "WeightNorm hook of weight folded" in old.detail
    (inner,) = _rows(report, "gate.conv")
    assert inner.status == "relaxed" and isinstance(relaxed.gate.conv, XDConv)
    (c1,) = _rows(report, "conv1d")
    assert c1.status == "relaxed" and c1.kind == "conv_subclass"
    # own forward, traced through: the F.conv2d call is relaxed, computed weight and padding included
    same = [r for r in report if r.module == "same"]
    ws = [r for r in report if r.module == "ws"]
    assert [r.status for r in same] == ["relaxed"] and "called by same's forward (TFSamePadConv2d)" in same[0].detail
    assert [r.status for r in ws] == ["relaxed"] and ws[0].kind == "conv_function"
    (unused,) = _rows(report, "unused")
    assert unused.status == "skipped" and "not called" in unused.detail
    assert set(_conv_names(model)) <= _accounted(report)


def test_variants_survive_harden() -> None:
    model, x = _variants()
    hard = xdfx.harden(xdfx.relax(model, x), example_inputs=x)
    assert not any(isinstance(m, XDConv) for m in hard.modules())
    with torch.no_grad():
        assert _close(hard(x), model(x))


def test_weight_standardisation_stays_live_after_relax() -> None:
    """The standardised weight is computed on every call: changing the raw weight changes the
    relaxed model exactly as it changes the original."""
    torch.manual_seed(0)
    model = nn.Sequential(WSConv2d(3, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 9, 9)
    relaxed = xdfx.relax(model, x)
    with torch.no_grad():
        model[0].weight.mul_(3.0).add_(0.5)
        relaxed.get_parameter("0.weight").mul_(3.0).add_(0.5)
        assert _close(relaxed(x), model(x))


def test_parametrized_subclass_with_its_own_forward_keeps_the_parametrization_live() -> None:
    """fx would keep the parametrized module whole (its class lives in torch.nn.utils.parametrize):
    it is traced through instead, so its F.conv2d is relaxed on the weight computed per call."""
    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.weight_norm(WSConv2d(3, 4, 3, padding=1)), nn.ReLU()).eval()
    x = torch.randn(2, 3, 9, 9)
    relaxed = xdfx.relax(model, x)
    (row,) = [r for r in relaxed.xdfx_report if r.module == "0"]
    assert row.status == "relaxed" and row.kind == "conv_function"
    with torch.no_grad():
        assert _close(relaxed(x), model(x))
        for m in (model, relaxed):  # the parametrization's magnitude g still scales the output
            m.get_parameter("0.parametrizations.weight.original0").mul_(2.0)
        assert _close(relaxed(x), model(x))


def test_hooked_conv_with_its_own_forward_is_kept_and_reported() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(WSConv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    model[0].register_forward_hook(lambda m, args, out: out + 1.0)
    x = torch.randn(2, 3, 9, 9)
    relaxed = xdfx.relax(model, x)
    with torch.no_grad():
        assert _close(relaxed(x), model(x))
    (row,) = _rows(relaxed.xdfx_report, "0")
    assert row.status == "skipped" and "has hooks" in row.detail and "not relaxed" in row.detail


def test_untraceable_same_padding_is_kept_whole_and_reported() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(TimmSamePadConv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 17, 15)
    relaxed = xdfx.relax(model, x)
    with torch.no_grad():
        assert _close(relaxed(x), model(x))
    (row,) = _rows(relaxed.xdfx_report, "0")
    assert row.status == "skipped" and row.kind == "conv_subclass"
    assert "own forward" in row.detail and "untraceable" in row.detail and "not relaxed" in row.detail
    assert type(relaxed.get_submodule("0")) is TimmSamePadConv2d
    assert _rows(relaxed.xdfx_report, "2")[0].status == "relaxed"


def test_lazy_conv_before_and_after_its_first_call() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LazyConv2d(5, 3, padding=1)).eval()
    x = torch.randn(2, 3, 8, 8)
    relaxed = xdfx.relax(model, x)
    (row,) = _rows(relaxed.xdfx_report, "1")
    assert row.status == "skipped" and "has not run yet" in row.detail
    model(x)  # materialised: a plain nn.Conv2d now
    relaxed = xdfx.relax(model, x)
    assert _rows(relaxed.xdfx_report, "1")[0].status == "relaxed"
    with torch.no_grad():
        assert _close(relaxed(x), model(x))


def test_hooks_on_convs_move_onto_the_xd_layers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), PlainSubConv2d(8, 4, 3, padding=1)).eval()
    seen = []
    model[0].register_forward_hook(lambda m, args, out: out * 1.5)
    model[0].register_forward_pre_hook(lambda m, args: (args[0] - 0.25,))
    model[2].register_forward_hook(lambda m, args, out: seen.append(type(m).__name__))
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        y = model(x)
    assert seen == ["PlainSubConv2d"]
    relaxed = xdfx.relax(model, x)
    assert seen == ["PlainSubConv2d"], "relax itself must not run the user's hooks"
    with torch.no_grad():
        z = relaxed(x)
    assert _close(z, y)
    assert seen == ["PlainSubConv2d", "XDConv"]  # the hook receives the XD layer
    report = relaxed.xdfx_report
    assert "hooks moved onto the XD layer" in _rows(report, "0")[0].detail
    assert "1 forward pre, 1 forward" in _rows(report, "0")[0].detail
    with torch.no_grad():  # the original keeps its hooks
        assert torch.equal(model(x), y)
    hard = xdfx.harden(relaxed, example_inputs=x)  # measured without the hooks, which go on the chosen forms
    with torch.no_grad():
        assert _close(hard(x), y)
    assert [r.form for r in hard.xdfx_report] == ["conv", "conv"]


def test_hooks_on_a_block_keep_it_whole() -> None:
    """A hooked block would be traced through and its hook lost: it is kept whole, its convs
    relaxed inside it."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return F.relu(self.conv(x))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Block()).eval()
    model[1].register_forward_hook(lambda m, args, out: out - 0.5)
    x = torch.randn(2, 3, 9, 9)
    relaxed = xdfx.relax(model, x)
    with torch.no_grad():
        assert _close(relaxed(x), model(x))
    report = relaxed.xdfx_report
    assert any(r.name == "1" and r.kind == "leaf" and "has hooks" in r.detail for r in report)
    assert _rows(report, "1.conv")[0].status == "relaxed" and isinstance(relaxed.get_submodule("1.conv"), XDConv)


def test_root_hooks_are_copied_onto_the_relaxed_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3)).eval()
    model.register_forward_pre_hook(lambda m, args: (args[0] * 2.0 + 1.0,))
    model.register_forward_hook(lambda m, args, out: out.flip(-1))
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        y = model(x)
        plain = model.forward(x)
    assert not _close(plain, y)  # the hooks matter
    relaxed = xdfx.relax(model, x)
    with torch.no_grad():
        assert _close(relaxed(x), y)
        assert _close(copy.deepcopy(relaxed)(x), y)  # GraphModule's deepcopy alone would drop them
        assert _close(xdfx.harden(relaxed)(x), y)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_report_names_every_conv_module(name: str) -> None:
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.make().eval()
    report = xdfx.relax(model, entry.example_inputs()).xdfx_report
    accounted = _accounted(report)
    for conv in _conv_names(model):
        assert conv in accounted, f"{name}: {conv} is not in the report\n{report}"
        assert all(r.status == "relaxed" or r.detail for r in _rows(report, conv))
