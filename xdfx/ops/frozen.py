"""A frozen XD layer: the learned transforms fixed and ``L w`` computed once, real-valued
throughout (what harden keeps where no cheaper form is exact enough)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .circular import CircularLayer, as_dtype, full_precision
from .dft import (dft_bases, factored_axes, factored_conv, factored_matrices, inverse_real_dft, real_block, real_dft,
                  slot_index, store_bases, store_factored, stored_bases, stored_factored)
from .fft import batched_matmul, irfftn_batch_major, rfftn, spectral_mix
from .monarch import FixedMonarch
from .xd import XDConv

METHODS = ("matmul", "factored", "fft")


class FrozenXD(CircularLayer):
    """``Real(K diag(v) M x) + b`` with ``K``, ``M`` and the diagonal ``v = L w`` frozen.

    Complex values appear only inside real FFTs (``method="fft"``, the default: frequency-major
    complex GEMMs between them, as the relaxed layer computes) or not at all (``method="matmul"``:
    the DFTs as dense real cos/sin matmuls; ``method="factored"``: Cooley-Tukey DFTs as two batched matmuls per
    axis, see :func:`~xdfx.ops.dft.factored_rdft`), so the layer exports to ONNX and compiles;
    there the per-frequency channel mixing is one real block matmul.

    ``onnx_method`` is the method :func:`xdfx.export.onnx` exports with, ``"factored"``: eager
    PyTorch runs FFTs (long transforms) or dense bases (short ones) faster, onnxruntime runs its
    ``DFT`` op far slower than matmuls, and the dense path's layout changes slowly
    (``benchmarks/bench_export.py``).
    """

    def __init__(self, xd: XDConv, weight: torch.Tensor | None = None, method: str | None = None) -> None:
        super().__init__(xd.in_channels, xd.out_channels, xd.geometry, xd.groups)
        ns = [g.n for g in self.geometry]
        method = method or "fft"  # frequency-major complex GEMMs: faster than dense bases at every n (bench_forms)
        if method not in METHODS:
            raise ValueError(f"method {method!r} is not one of {METHODS}")
        self.method = method
        self.layer_name = xd.layer_name
        if xd.out_scale is not None:
            self.out_scale = xd.out_scale.detach().clone()
        self.M = nn.ModuleList(FixedMonarch.of(q) for q in xd.M)
        self.K = nn.ModuleList(FixedMonarch.of(q) for q in xd.K)
        with torch.no_grad():
            diag = torch.view_as_real(xd.diagonal(weight).detach().resolve_conj())  # (*freq, g, cin, cout, 2)
        g, cin, cout = self.groups, self.in_channels // self.groups, self.out_channels // self.groups
        p = math.prod(self.frequency_shape)
        if cin == 1:  # depthwise-like: a broadcast product, no matmul
            mix = diag.reshape(p, g, cout, 2).permute(1, 2, 0, 3)  # (g, cout, p, 2)
        else:
            mix = diag.reshape(p, g, cin, cout, 2)  # the block matmul weight is built from it per call
        self.register_buffer("mix", mix.contiguous())
        self.bias = nn.Parameter(xd.bias.detach().clone()) if xd.bias is not None else None
        if method == "matmul":
            store_bases(self, self._bases(self._transform_sizes(), mix.device, mix.dtype))
        self.onnx_method = "factored"  # faster in onnxruntime than the dense bases at every n measured
        if "factored" in (method, self.onnx_method):
            self.factored_axes = factored_axes(ns)
            store_factored(self, [factored_matrices(a, mix.device, mix.dtype) for a in self.factored_axes])
            positions = [torch.arange(f) for f in self.frequency_shape]
            self.register_buffer("slot_index", slot_index(self.factored_axes, positions).to(mix.device), persistent=False)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, groups={self.groups}, method={self.method}, "
                f"learned K/M axes={len(self.K)}/{len(self.M)}, [{self.describe_geometry()}]")

    def _transform_sizes(self) -> list[int]:
        """Input sizes as the transform sees them for the built input (zero-extended to n where K, M act)."""
        if len(self.M):
            return [g.n for g in self.geometry]
        return [g.in_size + (sum(g.pad) if g.prepad else 0) for g in self.geometry]

    def _bases(self, sizes, device, dtype):
        """:func:`dft_bases` of every axis: all frequencies, onto all ``n`` circular positions
        (``Q_K`` and the crop to the conv's outputs come after)."""
        d = self.spatial_dims
        return [
            dft_bases(g.n, torch.arange(self.frequency_shape[i]), torch.arange(sizes[i]), torch.arange(g.n),
                      i == d - 1, device, dtype)
            for i, g in enumerate(self.geometry)
        ]

    @full_precision
    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        bias = self.bias if bias is None else bias
        if self.method == "factored":
            return self._forward_factored(x, bias)
        x, sizes = self.transform_in(x)
        if self.method == "matmul":
            same = list(x.shape[2:]) == self._transform_sizes() and self.dft_0_0.dtype == x.dtype
            bases = stored_bases(self, self.spatial_dims) if same else self._bases(x.shape[2:], x.device, x.dtype)
            z = self._mix(torch.stack(real_dft(x, bases), -1))
            y = inverse_real_dft(z[..., 0], z[..., 1], bases)
        elif self.mix.dim() == 5 and not torch.compiler.is_compiling():  # the relaxed layer's own path
            ns = [g.n for g in self.geometry]
            diag = torch.view_as_complex(as_dtype(self.mix, x.dtype)).reshape(*self.frequency_shape, *self.mix.shape[1:4])
            y = irfftn_batch_major(spectral_mix(x, diag, ns, self.groups), ns)
        else:
            ns = [g.n for g in self.geometry]
            dims = tuple(range(2, 2 + self.spatial_dims))
            z = self._mix(torch.view_as_real(rfftn(x, ns, dims)))
            y = torch.fft.irfftn(torch.view_as_complex(z), s=ns, dim=dims)
        return self.transform_out(y, sizes, bias)

    def _forward_factored(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``Q_M`` and ``Q_K`` applied inside the factored transforms, in their layout (the Monarch
        factors' own layout changes reverse axes, which onnxruntime transposes slowly)."""
        self.check_input(x)
        x = self.pad_input(x)
        sizes = x.shape[2:]
        y = factored_conv(self.extend(x), self._slot_weights(), self.groups, self.factored_axes,
                          stored_factored(self, self.spatial_dims), self.slot_index,
                          [(q.blocks1, q.blocks2) for q in self.M], [(q.blocks1, q.blocks2) for q in self.K])
        return self.crop(y, sizes, bias)

    def _slot_weights(self) -> torch.Tensor:
        """The diagonal as ``(F, G, C_in/G, C_out/G, 2)`` over the flattened frequencies."""
        if self.mix.dim() == 4:  # depthwise layout (G, C_out/G, F, 2)
            return self.mix.permute(2, 0, 1, 3).unsqueeze(2)
        return self.mix

    def _mix(self, xf: torch.Tensor) -> torch.Tensor:
        """``z[b, o] = sum_i x[b, i] v[i, o]`` per frequency and group, on (real, imag) pairs
        ``(b, C_in, *freq, 2)`` -> ``(b, C_out, *freq, 2)``."""
        b, g = xf.shape[0], self.groups
        freq = xf.shape[2:-1]
        p = math.prod(freq)
        cin, cout = self.in_channels // g, self.out_channels // g
        mix = as_dtype(self.mix, xf.dtype)  # a half model's diagonal, upcast with the input
        if cin == 1:
            vr, vi = mix[..., 0], mix[..., 1]
            xf = xf.reshape(b, g, 1, p, 2)
            xr, xi = xf[..., 0], xf[..., 1]
            z = torch.stack([xr * vr - xi * vi, xi * vr + xr * vi], -1)  # (b, g, cout, p, 2)
        else:
            x2 = xf.reshape(b, g, cin, p, 2).permute(3, 1, 0, 4, 2).reshape(p, g, b, 2 * cin)
            z = batched_matmul(x2, real_block(mix)).reshape(p, g, b, 2, cout).permute(2, 1, 4, 0, 3)  # (b, g, cout, p, 2)
        return z.contiguous().reshape(b, self.out_channels, *freq, 2)
