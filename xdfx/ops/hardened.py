"""Operators that hardened XD layers become: standard, real-valued, traceable, exportable.

* :class:`Zero` - the layer learned to output nothing (but its bias).
* :func:`make_conv` - an ``nn.Conv*d`` (with an explicit :class:`Pad` where the recovered padding
  is asymmetric or negative).
* :class:`SpectralConv` - FNO-style: a diagonal over truncated Fourier modes. ``method="matmul"``
  writes the truncated DFT as real matmuls with precomputed cos/sin bases, with the output
  crop/stride folded into the inverse basis; ``method="fft"`` uses real FFTs.
* :class:`FrozenXD` - anything else: the XD layer with ``L w`` computed once (eager: the XD
  layer's own complex arithmetic; traced by torch.export / torch.compile: real (re, im) pairs
  around the real FFTs, which the ONNX exporter can translate).
* :class:`PadTo`, :class:`Gather` - zero-extension and index permutations (learned
  permutations of K or M).
* :class:`GraphPolynomial`, :class:`FrozenGraphConv` - graph convolutions.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .fft import batched_matmul, rfftn
from .geometry import AxisGeometry
from .monarch import along
from .xd import XDConv

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
    symmetric = all(left == right and left >= 0 for left, right in pads)
    if mode != "zeros" and any(left < 0 or right < 0 for left, right in pads):
        symmetric = False
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
    if mode != "zeros" and any(left < 0 or right < 0 for left, right in pads):
        pos = [(max(left, 0), max(right, 0)) for left, right in pads]
        neg = [(min(left, 0), min(right, 0)) for left, right in pads]
        return nn.Sequential(Pad(pos, mode), Pad(neg, "zeros"), conv)
    return nn.Sequential(Pad(pads, mode), conv)


def kept_frequencies(n: int, modes: int, last: bool) -> torch.Tensor:
    """Indices of the kept Fourier modes of an axis: ``0..m-1`` on the last (real-FFT) axis,
    ``0..m-1`` and ``n-m..n-1`` elsewhere."""
    if last:
        return torch.arange(min(modes, n // 2 + 1))
    if 2 * modes >= n:
        return torch.arange(n)
    return torch.cat([torch.arange(modes), torch.arange(n - modes, n)])


class SpectralConv(nn.Module):
    """``y = crop(irfft(G * rfft(x)))`` with ``G`` nonzero on low modes only (an FNO layer).

    Parameters
    ----------
    spectrum : Tensor
        Complex diagonal ``G``, ``(C_out, C_in/groups, *n[:-1], n[-1]//2+1)`` (the full one-sided
        spectrum of the XD layer); only ``modes`` of it are kept.
    modes : sequence of int
        Modes kept per axis (see :func:`kept_frequencies`).
    geometry : sequence of AxisGeometry
        Padding, transform length and output positions, as in the XD layer.
    method : {"matmul", "fft"}
        Real cos/sin matmuls (exportable; cheap for few modes) or real FFTs.
    """

    def __init__(self, spectrum: torch.Tensor, modes: Sequence[int], geometry: Sequence[AxisGeometry], *,
                 groups: int = 1, bias: torch.Tensor | None = None, method: str = "matmul") -> None:
        super().__init__()
        self.geometry = tuple(geometry)
        self.groups, self.method = groups, method
        d = len(self.geometry)
        self.modes = tuple(int(m) for m in modes)
        g = spectrum
        for i, geo in enumerate(self.geometry):
            g = g.index_select(2 + i, kept_frequencies(geo.n, self.modes[i], i == d - 1).to(g.device))
        self.kept_shape = tuple(g.shape[2:])
        real = torch.view_as_real(g.resolve_conj()).to(torch.float32 if g.dtype == torch.complex64 else torch.float64)
        self.weight = nn.Parameter(real.contiguous())  # (C_out, C_in/g, *kept, 2)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.out_channels, self.in_channels = g.shape[0], g.shape[1] * groups

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, modes={self.modes}, n={[g.n for g in self.geometry]}, "
                f"method={self.method}, mode={self.geometry[0].mode}")

    # -------------------------------------------------------------- shared pieces
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        geo = self.geometry
        if any(g.prepad for g in geo):
            x = F.pad(x, [p for g in reversed(geo) for p in (g.pad if g.prepad else (0, 0))], mode=geo[0].mode)
        return x

    def _mix(self, yr: torch.Tensor, yi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per kept mode and group, ``z = sum_i G[o, i] y[i]`` as one real batched matmul,
        ``[yr, yi] @ [[Gr, Gi], [-Gi, Gr]]`` over contiguous ``(mode, group, batch, channel)``
        layouts (einsum over a mode batch copies matrix by matrix; complex ops do not export)."""
        b, g = yr.shape[0], self.groups
        shape = yr.shape[2:]
        p = math.prod(shape)
        cin, cout = self.in_channels // g, self.out_channels // g
        y = torch.stack([yr, yi], 1).reshape(b, 2, g, cin, p).permute(4, 2, 0, 1, 3).reshape(p, g, b, 2 * cin)
        z = torch.matmul(y.contiguous(), self._block()).reshape(p, g, b, 2, cout).permute(2, 3, 1, 4, 0)
        z = z.reshape(b, 2, self.out_channels, *shape)
        return z[:, 0], z[:, 1]

    def _block(self) -> torch.Tensor:
        """``[[Gr, Gi], [-Gi, Gr]]`` per kept mode and group, ``(p, g, 2 C_in/g, 2 C_out/g)``;
        in eager inference built once per weight version (as XD caches its diagonal)."""
        caching = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        key = (id(self.weight), self.weight._version, self.weight.device, self.weight.dtype) if caching else None
        cached = self.__dict__.get("_block_cache")
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        g, cin, cout = self.groups, self.in_channels // self.groups, self.out_channels // self.groups
        w = self.weight.reshape(g, cout, cin, -1, 2).permute(3, 0, 2, 1, 4)  # (p, g, cin, cout, 2)
        block = real_block(w).contiguous()
        if key is not None:
            self.__dict__["_block_cache"] = (key, block)
        return block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._forward_matmul(x) if self.method == "matmul" else self._forward_fft(x)
        return y if self.bias is None else y + self.bias.reshape(-1, *([1] * len(self.geometry)))

    # -------------------------------------------------------------- FFT path
    def _forward_fft(self, x: torch.Tensor) -> torch.Tensor:
        # Complex values live as (real, imag) pairs between the two real FFTs: the ONNX exporter
        # translates rfftn / irfftn, view_as_real / view_as_complex and real ops, but not
        # index_select, einsum or writes on complex tensors.
        geo, d = self.geometry, len(self.geometry)
        x = self._prepare(x)
        sizes = x.shape[2:]
        dims = tuple(range(2, 2 + d))
        ns = [g.n for g in geo]
        full = [n // 2 + 1 if i == d - 1 else n for i, n in enumerate(ns)]
        xf = torch.view_as_real(torch.fft.rfftn(x, s=ns, dim=dims))
        xr, xi = xf[..., 0], xf[..., 1]
        keep = [kept_frequencies(g.n, self.modes[i], i == d - 1) for i, g in enumerate(geo)]
        truncated = [len(k) < f for k, f in zip(keep, full)]
        keep = [k.to(x.device) for k in keep]
        for i, k in enumerate(keep):
            if truncated[i]:
                xr, xi = xr.index_select(2 + i, k), xi.index_select(2 + i, k)
        zr, zi = self._mix(xr, xi)
        for i in reversed(range(d)):
            if truncated[i]:
                shape = list(zr.shape)
                shape[2 + i] = full[i]
                zr = zr.new_zeros(shape).index_copy(2 + i, keep[i], zr)
                zi = zi.new_zeros(shape).index_copy(2 + i, keep[i], zi)
        y = torch.fft.irfftn(torch.view_as_complex(torch.stack([zr, zi], -1)), s=ns, dim=dims)
        for i, g in enumerate(geo):
            y = g.gather(y, 2 + i, g.conv_input_size(sizes[i]))
        return y

    # -------------------------------------------------------------- matmul path
    def _bases(self, sizes: Sequence[int], device, dtype):
        """Per axis: forward (cos, sin) over input positions, inverse (cos, sin) over outputs."""
        key = (tuple(sizes), device, dtype)
        # Not cached while torch.export / torch.compile trace: the bases would be fake tensors.
        cache = {} if torch.compiler.is_compiling() else self.__dict__.setdefault("_basis_cache", {})
        if key in cache:
            return cache[key]
        d, out = len(self.geometry), []
        for i, g in enumerate(self.geometry):
            k = kept_frequencies(g.n, self.modes[i], i == d - 1)
            idx = g.out_index(g.conv_input_size(sizes[i]), torch.device("cpu"))
            pos_out = torch.arange(g.n)[idx] if isinstance(idx, slice) else idx
            out.append(dft_bases(g.n, k, torch.arange(sizes[i]), pos_out, i == d - 1, device, dtype))
        cache[key] = out
        return out

    def _forward_matmul(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)
        bases = self._bases(x.shape[2:], x.device, x.dtype)
        zr, zi = self._mix(*real_dft(x, bases))
        return inverse_real_dft(zr, zi, bases)


def dft_bases(n: int, k: torch.Tensor, pos_in: torch.Tensor, pos_out: torch.Tensor, last: bool, device, dtype):
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


def real_dft(x: torch.Tensor, bases) -> tuple[torch.Tensor, torch.Tensor]:
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


def inverse_real_dft(zr: torch.Tensor, zi: torch.Tensor, bases) -> torch.Tensor:
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


class FrozenXD(nn.Module):
    """An XD layer with every transform frozen and ``L w`` computed once (no per-call L).

    Traced (torch.compile, ONNX), transforms no longer than ``dft_matmul_up_to`` are real DFT
    matmuls: onnxruntime's ``DFT`` op ran 2-2.6x slower than them at n = 64-1024 (width 32), and
    up to 256 their float32 error stays below 1e-5 of the output (3e-5 at n = 1024)."""

    dft_matmul_up_to = 256

    def __init__(self, xd: XDConv, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        frozen = copy.deepcopy(xd)
        for p in frozen.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            diag = xd.diagonal(weight)
        frozen.weight = frozen.growth = frozen.spectral_weight = None
        frozen.L = nn.ModuleList()
        self.xd = frozen
        self.register_buffer("diagonal", torch.view_as_real(diag.resolve_conj()).contiguous())
        self.bias = nn.Parameter(xd.bias.detach().clone()) if xd.bias is not None else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b = self.bias if bias is None else bias
        if not torch.compiler.is_compiling():  # eager: exactly the XD layer's own computation
            return self.xd.apply_diagonal(x, torch.view_as_complex(self.diagonal), b)
        return self.forward_real(x, b)

    def forward_real(self, x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """``XDConv.apply_diagonal`` with the per-frequency channel mixing on (real, imag) pairs,
        so that the only complex values are the real FFTs' own: what torch.compile traces
        (inductor generates no code for complex ops) and what ONNX gets, with the real block
        weight a constant of the graph."""
        xd = self.xd
        dims = tuple(range(2, 2 + xd.spatial_dims))
        ns = [g.n for g in xd.geometry]
        x, sizes = xd.transform_in(x)
        if max(ns) <= self.dft_matmul_up_to:
            bases = self._bases(x.shape[2:], x.device, x.dtype)  # sizes as the transform sees x
            z = self._mix(torch.stack(real_dft(x, bases), -1))
            y = inverse_real_dft(z[..., 0], z[..., 1], bases)
        else:
            z = self._mix(torch.view_as_real(rfftn(x, ns, dims)))
            y = torch.fft.irfftn(torch.view_as_complex(z), s=ns, dim=dims)
        return xd.transform_out(y, sizes, b)

    def _bases(self, sizes: Sequence[int], device, dtype):
        """:func:`dft_bases` of every axis: all frequencies, onto all ``n`` circular positions
        (``transform_out`` applies ``Q_K`` and keeps the conv's outputs after)."""
        key = (tuple(sizes), device, dtype)
        cache = {} if torch.compiler.is_compiling() else self.__dict__.setdefault("_basis_cache", {})
        if key not in cache:
            d = self.xd.spatial_dims
            cache[key] = [
                dft_bases(g.n, torch.arange(g.n // 2 + 1 if i == d - 1 else g.n), torch.arange(sizes[i]),
                          torch.arange(g.n), i == d - 1, device, dtype)
                for i, g in enumerate(self.xd.geometry)
            ]
        return cache[key]

    def _mix(self, xf: torch.Tensor) -> torch.Tensor:
        """``z[b, o] = sum_i x[b, i] v[i, o]`` (``v`` the diagonal) per frequency and group, on
        (real, imag) pairs ``(b, C_in, *freq, 2)`` -> ``(b, C_out, *freq, 2)``: for ``C_in/g > 1``
        one real batched matmul ``[xr, xi] @ [[vr, vi], [-vi, vr]]`` (the flops of the complex one)."""
        xd = self.xd
        b, g = xf.shape[0], xd.groups
        freq = xf.shape[2:-1]
        p = math.prod(freq)
        cin, cout = xd.in_channels // g, xd.out_channels // g
        if cin == 1:  # depthwise-like: a broadcast product, no matmul
            v = self.diagonal.reshape(p, g, cout, 2).permute(1, 2, 0, 3)  # (g, cout, p, 2)
            vr, vi = v[..., 0], v[..., 1]
            xf = xf.reshape(b, g, 1, p, 2)
            xr, xi = xf[..., 0], xf[..., 1]
            z = torch.stack([xr * vr - xi * vi, xi * vr + xr * vi], -1)  # (b, g, cout, p, 2)
        else:
            x2 = xf.reshape(b, g, cin, p, 2).permute(3, 1, 0, 4, 2).reshape(p, g, b, 2 * cin)
            z2 = batched_matmul(x2, self._block_weight())  # (p, g, b, 2 cout)
            z = z2.reshape(p, g, b, 2, cout).permute(2, 1, 4, 0, 3)  # (b, g, cout, p, 2)
        return z.contiguous().reshape(b, xd.out_channels, *freq, 2)

    def _block_weight(self) -> torch.Tensor:
        """``[[vr, vi], [-vi, vr]]`` per frequency and group: ``(p, g, 2 C_in/g, 2 C_out/g)``
        (a constant of the traced graph)."""
        xd, g = self.xd, self.xd.groups
        return real_block(self.diagonal.reshape(-1, g, xd.in_channels // g, xd.out_channels // g, 2))


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


class GraphPolynomial(nn.Module):
    """``y = sum_j A^j h W_j + b``: a polynomial graph filter on a fixed graph (GCN: ``j = 1``)."""

    def __init__(self, propagation: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("adj", propagation.detach().clone())
        self.weight = nn.Parameter(weights.detach().clone())  # (taps, C_in, C_out)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = None
        power = h
        for j in range(self.weight.shape[0]):
            if j:
                power = torch.matmul(self.adj, power)
            term = torch.matmul(power, self.weight[j])
            y = term if y is None else y + term
        return y if self.bias is None else y + self.bias


class FrozenGraphConv(nn.Module):
    """``y = K (S * (M h)) + b`` with the transforms and the spectral filter ``S`` frozen."""

    def __init__(self, k: torch.Tensor, m: torch.Tensor, spectrum: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("k", k.detach().clone())
        self.register_buffer("m", m.detach().clone())
        self.register_buffer("spectrum", spectrum.detach().clone())  # (C_out, C_in, N)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("...ni,oin->...no", torch.matmul(self.m, h), self.spectrum)
        y = torch.matmul(self.k, y)
        return y if self.bias is None else y + self.bias
