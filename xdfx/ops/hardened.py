"""Small standard operators that hardened layers are made of: zeros, a conv with an explicit pad,
zero-extension, index gathers (learned permutations of K or M) and the sum of two branches."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import AxisGeometry

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class Zero(nn.Module):
    """Outputs zeros (plus the bias) of the shape the replaced layer produced."""

    def __init__(self, out_channels: int, geometry: Sequence[AxisGeometry], bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.geometry = tuple(geometry)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = [g.out_size(x.shape[2 + i]) for i, g in enumerate(self.geometry)]
        y = x.new_zeros(x.shape[0], self.out_channels, *sizes)
        return y if self.bias is None else y + self.bias.reshape(-1, *([1] * len(sizes)))


class LocalPlusModes(nn.Module):
    """``local(x) + modes(x)``: a conv on a few taps and a spectral conv on a few low modes, the
    two parts of an FNO layer (pointwise or local path plus truncated Fourier path)."""

    def __init__(self, local: nn.Module, modes: nn.Module) -> None:
        super().__init__()
        self.local = local
        self.modes = modes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local(x) + self.modes(x)


class Pad(nn.Module):
    """``F.pad`` with per-axis ``(left, right)`` pads (negative pads crop), first axis first."""

    def __init__(self, pads: Sequence[tuple[int, int]], mode: str) -> None:
        super().__init__()
        self.pads = [p for lr in reversed(pads) for p in lr]
        self.mode = "constant" if mode == "zeros" else mode

    def extra_repr(self) -> str:
        return f"pads={self.pads}, mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, mode=self.mode)


def make_conv(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    pads: Sequence[tuple[int, int]],
    mode: str,
) -> nn.Module:
    """An ``nn.Conv*d`` computing ``conv(pad(x, pads, mode), weight)``; an explicit :class:`Pad`
    goes in front only where ``nn.Conv*d`` cannot express the padding (asymmetric, negative)."""
    d = weight.dim() - 2
    negative = any(left < 0 or right < 0 for left, right in pads)
    symmetric = all(left == right and left >= 0 for left, right in pads) and not (mode != "zeros" and negative)
    conv = CONVS[d](
        weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=tuple(stride),
        padding=tuple(p[0] for p in pads) if symmetric else 0, dilation=tuple(dilation), groups=groups,
        bias=bias is not None, padding_mode=mode if symmetric else "zeros", device=weight.device, dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    if symmetric:
        return conv
    if mode != "zeros" and negative:
        pos = [(max(left, 0), max(right, 0)) for left, right in pads]
        neg = [(min(left, 0), min(right, 0)) for left, right in pads]
        return nn.Sequential(Pad(pos, mode), Pad(neg, "zeros"), conv)
    return nn.Sequential(Pad(pads, mode), conv)


class PadTo(nn.Module):
    """Zero-extend the spatial axes to ``sizes``."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = tuple(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [p for n, s in zip(reversed(self.sizes), reversed(x.shape[2:])) for p in (0, n - s)]
        return F.pad(x, pads)


class Gather(nn.Module):
    """``x.index_select(dim, index)``: a permutation (or selection) along one axis."""

    def __init__(self, index: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("index", index.detach().clone().long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(self.dim, self.index)
