"""Harden forms that give back a convolution: an ``nn.Conv*d`` whose kernel, dilation, stride and
padding are recovered from the support of the XD layer's circulant kernel."""

from __future__ import annotations

import itertools
import math
from functools import reduce

import torch
from torch import nn

from ..ops import XDConv
from ..ops.hardened import Pad, make_conv
from .harden_context import Candidate, LayerContext, out_sizes

#: kernel entries below these fractions of the largest (and of tol) count as zero taps
SUPPORT_THRESHOLDS = (0.0, 1e-7)
SUPPORT_TOL_FRACTIONS = (1e-2, 1e-1)
SUPPORT_EPS_MULTIPLES = (4.0, 16.0)


def _circular_support(mask: torch.Tensor) -> tuple[int, int] | None:
    """Smallest circular arc ``[a, b]`` (``a`` may be negative) holding every True of ``mask``."""
    n = mask.numel()
    on = torch.nonzero(mask).flatten().tolist()
    if not on:
        return None
    gaps = [(on[(i + 1) % len(on)] - on[i]) % n or n for i in range(len(on))]
    widest = max(range(len(on)), key=lambda i: gaps[i])
    b, a = on[widest], on[(widest + 1) % len(on)]
    if a > b:
        a -= n
    elif len(on) == 1:
        a = b
    return (a, b) if a <= b else (a - n, b)


def recover_conv(xd: XDConv, kernel: torch.Tensor, threshold: float) -> tuple[nn.Module, str] | None:
    """An ``nn.Conv*d`` equal to ``xd`` (factors identity) if its circulant kernel is compact."""
    mask = kernel.abs() > threshold
    arcs = []
    for i, g in enumerate(xd.geometry):
        axis_mask = mask.transpose(2 + i, -1).reshape(-1, kernel.shape[2 + i]).any(0)
        arc = _circular_support(axis_mask)
        if arc is None:
            return None
        on = torch.nonzero(axis_mask).flatten().tolist()
        # the shortest arc, else the taps read in place (where the arc through 0 would read real data)
        arcs.append([(arc, axis_mask)] + ([((on[0], on[-1]), axis_mask)] if arc[0] < 0 else []))
    for choice in itertools.product(*arcs):
        offsets, taps_index, dilation = [], [], []
        for ((a, b), axis_mask), g in zip(choice, xd.geometry):
            on = [u - a for u in range(a, b + 1) if axis_mask[u % g.n]]
            dil = reduce(math.gcd, on, 0) or 1
            offsets.append(a)
            dilation.append(dil)
            taps_index.append(torch.tensor([(a + j * dil) % g.n for j in range((b - a) // dil + 1)], device=kernel.device))
        found = conv_from_taps(xd, kernel, offsets, dilation, taps_index, xd.bias)
        if found is not None:
            return found
    return None


def conv_from_taps(xd: XDConv, kernel: torch.Tensor, offsets: list[int], dilation: list[int],
                   taps_index: list[torch.Tensor], bias: torch.Tensor | None) -> tuple[nn.Module, str] | None:
    """The ``nn.Conv*d`` whose taps are ``kernel`` at the circular positions ``taps_index`` (per
    axis, from ``offsets[i]`` every ``dilation[i]``), padded and strided as ``xd``; None where a
    tap placed there would read real input that the circular layer reads wrapped around."""
    taps = kernel
    for i, idx in enumerate(taps_index):
        taps = taps.index_select(2 + i, idx)
    pads, stride = [], []
    for i, g in enumerate(xd.geometry):
        k = taps.shape[2 + i]
        span = (k - 1) * dilation[i] + 1
        left = (g.pad[0] if not g.prepad else 0) - offsets[i]
        total_in = g.in_size + (sum(g.pad) if g.prepad else 0)
        t = g.out_size(g.in_size)
        right = (t - 1) * g.stride + span - total_in - left
        # positions read outside the input, -left ... total_in + right - 1, must wrap onto the zero
        # extension [total_in, n) (a natively circular layer wraps onto the input, as its conv does)
        if not g.native_circular and (-left < total_in - g.n or total_in + right > g.n):
            return None
        if left >= 0 and (total_in + 2 * left - span) // g.stride + 1 == t:
            right = left  # the conv's floor division makes the two paddings equivalent
        pads.append((left, right))
        stride.append(g.stride)
    mode = xd.geometry[0].mode
    if any(g.prepad for g in xd.geometry):
        pre = [g.pad if g.prepad else (0, 0) for g in xd.geometry]
        core = make_conv(taps, bias, stride=stride, dilation=dilation, groups=xd.groups, pads=pads, mode="zeros")
        module = nn.Sequential(Pad(pre, mode), core)
    else:
        module = make_conv(taps, bias, stride=stride, dilation=dilation, groups=xd.groups, pads=pads,
                           mode="circular" if mode == "circular" else "zeros")
    detail = f"k={tuple(taps.shape[2:])} d={tuple(dilation)} s={tuple(stride)} pad={pads}"
    return module, detail



def conv_candidates(ctx: LayerContext) -> list[Candidate]:
    """Convs read off the kernel's support at a few zero thresholds (sparser kernels first tried
    exactly, then with taps below a fraction of ``tol`` dropped)."""
    out: list[Candidate] = []
    for view in ctx.views:
        xd = view.layer
        cin, cout, g = xd.in_channels, xd.out_channels, xd.groups
        t = out_sizes(xd.geometry, ctx.sizes)
        kernel = ctx.kernel()
        scale = float(kernel.abs().max()) or 1.0
        found_details: set[str] = set()
        # a half or bfloat16 layer's kernel carries round-off at its dtype's eps on every tap
        eps = torch.finfo(next((p.dtype for p in xd.parameters()), torch.float32)).eps
        noise = tuple(f * eps for f in SUPPORT_EPS_MULTIPLES) if eps > torch.finfo(torch.float32).eps else ()
        for rel in SUPPORT_THRESHOLDS + tuple(f * ctx.tol for f in SUPPORT_TOL_FRACTIONS) + noise:
            found = recover_conv(xd, kernel, rel * scale)
            if found is None or found[1] in found_details:
                continue
            module, detail = found
            found_details.add(detail)
            conv = next(m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd))
            flops = 2.0 * cout * (cin // g) * math.prod(conv.kernel_size) * math.prod(t)
            cand = Candidate("conv", module, flops, detail + view.note)
            out.append(view.wrap(cand) if view.wrap else cand)
    return out

