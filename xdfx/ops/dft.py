"""The real DFT of one axis as matrices (cos/sin bases), restricted to chosen frequencies and
output positions: how spectral and frozen layers take their transforms without FFT ops, which
export to plain MatMuls."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .monarch import along

Bases = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def dft_bases(n: int, k: torch.Tensor, pos_in: torch.Tensor, pos_out: torch.Tensor, last: bool, device=None,
              dtype=None) -> Bases:
    """The real DFT of one axis of length ``n`` restricted to frequencies ``k``, as matrices:
    forward ``(cos, sin)`` ``(K, N_in)`` over input positions ``pos_in``, inverse ``(cos, sin)``
    ``(T, K)`` onto output positions ``pos_out``, scaled by ``1/n`` (doubled for the interior
    bins of the ``last``, one-sided axis: each stands for a conjugate pair)."""
    k, pos_in, pos_out = (t.to(torch.float64) for t in (k, pos_in, pos_out))
    ang_in = 2 * math.pi * k[:, None] * pos_in[None, :] / n
    ang_out = 2 * math.pi * pos_out[:, None] * k[None, :] / n
    scale = torch.full_like(k, 1.0 / n)
    if last:
        scale = torch.where((k == 0) | (2 * k == n), scale, 2 * scale)
    bases = (ang_in.cos(), ang_in.sin(), ang_out.cos() * scale, ang_out.sin() * scale)
    return tuple(b.to(device=device, dtype=dtype) for b in bases)


def real_dft(x: torch.Tensor, bases: Sequence[Bases]) -> tuple[torch.Tensor, torch.Tensor]:
    """``rfftn`` of real ``x`` ``(B, C, *spatial)`` over its spatial axes as real matmuls with
    :func:`dft_bases` (one per axis, the last axis one-sided): ``(real, imag)``."""
    d = len(bases)
    last = 1 + d
    cf, sf, _, _ = bases[-1]
    yr, yi = along(cf, x, last), -along(sf, x, last)
    for i in range(d - 1):
        c, s, _, _ = bases[i]
        yr, yi = along(c, yr, 2 + i) + along(s, yi, 2 + i), along(c, yi, 2 + i) - along(s, yr, 2 + i)
    return yr, yi


def inverse_real_dft(zr: torch.Tensor, zi: torch.Tensor, bases: Sequence[Bases]) -> torch.Tensor:
    """The inverse of :func:`real_dft` onto the bases' output positions (a real result)."""
    d = len(bases)
    for i in range(d - 1):
        _, _, c, s = bases[i]
        zr, zi = along(c, zr, 2 + i) - along(s, zi, 2 + i), along(c, zi, 2 + i) + along(s, zr, 2 + i)
    _, _, c, s = bases[-1]
    return along(c, zr, 1 + d) - along(s, zi, 1 + d)


def real_block(v: torch.Tensor) -> torch.Tensor:
    """``[[vr, vi], [-vi, vr]]`` of complex matrices given as (real, imag) pairs ``(..., i, o, 2)``:
    ``(..., 2i, 2o)``, so that ``[xr, xi] @ block = [Re(x v), Im(x v)]`` (one real matmul)."""
    vr, vi = v[..., 0], v[..., 1]
    return torch.cat([torch.cat([vr, vi], -1), torch.cat([-vi, vr], -1)], -2)


def store_bases(module: nn.Module, bases: Sequence[Bases]) -> None:
    """Keep ``bases`` on ``module`` as non-persistent buffers (they follow ``.to()``, stay out of
    the state dict, and become constants of a traced graph)."""
    for i, axis in enumerate(bases):
        for j, t in enumerate(axis):
            module.register_buffer(f"dft_{i}_{j}", t, persistent=False)


def stored_bases(module: nn.Module, axes: int) -> list[Bases]:
    return [tuple(getattr(module, f"dft_{i}_{j}") for j in range(4)) for i in range(axes)]
