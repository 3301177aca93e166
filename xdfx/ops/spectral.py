"""FNO-style spectral convolution: a per-frequency channel mixing on the lowest Fourier modes."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .circular import CircularLayer, as_dtype, full_precision
from .dft import (dft_bases, factored_axes, factored_conv, factored_matrices, inverse_real_dft, packed_bases,
                  real_block, real_dft, slot_index, store_bases, store_factored, stored_bases, stored_factored)
from .fft import irfftn_batch_major, spectral_mix
from .geometry import AxisGeometry

METHODS = ("matmul", "factored", "fft")


def kept_frequencies(n: int, modes: int, last: bool) -> torch.Tensor:
    """Indices of the kept Fourier modes of an axis: ``0..m-1`` on the last (real-FFT) axis,
    ``0..m-1`` and ``n-m..n-1`` elsewhere."""
    if last:
        return torch.arange(min(modes, n // 2 + 1))
    if 2 * modes >= n:
        return torch.arange(n)
    return torch.cat([torch.arange(modes), torch.arange(n - modes, n)])


class SpectralConv(CircularLayer):
    """``y = crop(irfft(G * rfft(x)))`` with ``G`` nonzero on low modes only (an FNO layer).

    Parameters
    ----------
    spectrum : Tensor
        Complex diagonal ``G``, ``(C_out, C_in/groups, *n[:-1], n[-1]//2+1)`` (the full one-sided
        spectrum of the XD layer); only ``modes`` of it are kept, as a trainable parameter.
    modes : sequence of int
        Modes kept per axis (see :func:`kept_frequencies`).
    geometry : sequence of AxisGeometry
        Padding, transform length and output positions, as in the XD layer.
    method : {"matmul", "factored", "fft"}
        The transforms as real cos/sin matmuls onto the kept modes and the conv's outputs (no FFT
        op in an exported graph; cheap for few modes), as factored (Cooley-Tukey) matmuls over
        all positions (no FFT op; for many modes on long axes), or as real FFTs. ``onnx_method``
        is what :func:`xdfx.export.onnx` exports: the FFTs as factored matmuls.
    """

    def __init__(self, spectrum: torch.Tensor, modes: Sequence[int], geometry: Sequence[AxisGeometry], *,
                 groups: int = 1, bias: torch.Tensor | None = None, method: str = "matmul") -> None:
        if method not in METHODS:
            raise ValueError(f"method {method!r} is not one of {METHODS}")
        super().__init__(spectrum.shape[1] * groups, spectrum.shape[0], geometry, groups)
        self.method = method
        d = self.spatial_dims
        self.modes = tuple(int(m) for m in modes)
        self.kept = [kept_frequencies(g.n, self.modes[i], i == d - 1) for i, g in enumerate(self.geometry)]
        g = spectrum
        for i, keep in enumerate(self.kept):
            g = g.index_select(2 + i, keep.to(g.device))
        self.kept_shape = tuple(g.shape[2:])
        real = torch.view_as_real(g.resolve_conj()).to(torch.float64 if g.dtype == torch.complex128 else torch.float32)
        self.weight = nn.Parameter(real.contiguous())  # (C_out, C_in/g, *kept, 2)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        if method == "matmul":
            sizes = [g.in_size + (sum(g.pad) if g.prepad else 0) for g in self.geometry]
            bases = self._bases(sizes, real.device, real.dtype)
            if self.spatial_dims == 1:  # one axis packs its cos and sin bases (see _forward_packed)
                for name, t in zip(("dft_in", "dft_out"), packed_bases(bases[0])):
                    self.register_buffer(name, t, persistent=False)
            else:
                store_bases(self, bases)
        self.onnx_method = "factored" if method == "fft" else method
        if "factored" in (method, self.onnx_method):
            self.factored_axes = factored_axes([g.n for g in self.geometry], max_freq_last=int(self.kept[-1].max()))
            store_factored(self, [factored_matrices(a, real.device, real.dtype) for a in self.factored_axes])
            positions = []
            for keep, f in zip(self.kept, self.frequency_shape):
                pos = torch.full((f,), -1, dtype=torch.long)
                pos[keep] = torch.arange(len(keep))
                positions.append(pos)
            self.register_buffer("slot_index", slot_index(self.factored_axes, positions).to(real.device),
                                 persistent=False)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, modes={self.modes}, n={[g.n for g in self.geometry]}, "
                f"method={self.method}, mode={self.geometry[0].mode}")

    def _mix(self, yr: torch.Tensor, yi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per kept mode and group, ``z = sum_i G[o, i] y[i]`` as one real batched matmul,
        ``[yr, yi] @ [[Gr, Gi], [-Gi, Gr]]`` over contiguous ``(mode, group, batch, channel)``
        layouts (complex ops do not export)."""
        b, g = yr.shape[0], self.groups
        shape = yr.shape[2:]
        p = math.prod(shape)
        cin, cout = self.in_channels // g, self.out_channels // g
        y = torch.stack([yr, yi], 1).reshape(b, 2, g, cin, p).permute(4, 2, 0, 1, 3).reshape(p, g, b, 2 * cin)
        z = torch.matmul(y.contiguous(), self._block(y.dtype)).reshape(p, g, b, 2, cout).permute(2, 3, 1, 4, 0)
        z = z.reshape(b, 2, self.out_channels, *shape)
        return z[:, 0], z[:, 1]

    @full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "matmul":
            y = self._forward_matmul(x)
        elif self.method == "factored":
            y = self._forward_factored(x)
        else:
            y = self._forward_fft(x)
        return y if self.bias is None else y + as_dtype(self.bias, y.dtype).reshape(-1, *([1] * self.spatial_dims))

    def _forward_fft(self, x: torch.Tensor) -> torch.Tensor:
        # complex ops in eager mode (export swaps in the factored matmuls: ``onnx_method``)
        d, g = self.spatial_dims, self.groups
        x = self.pad_input(x)
        sizes = x.shape[2:]
        dims = tuple(range(2, 2 + d))
        ns = [a.n for a in self.geometry]
        full = list(self.frequency_shape)
        keep = [k.to(x.device) for k in self.kept]
        truncated = [len(k) < f for k, f in zip(keep, full)]
        p, cin, cout = math.prod(full), self.in_channels // g, self.out_channels // g
        w = torch.view_as_complex(as_dtype(self.weight, x.dtype))
        if not any(truncated):  # every mode: the relaxed layer's own frequency-major path
            z = spectral_mix(x, self._mix_diagonal(w), ns, g)
            return self.crop(irfftn_batch_major(z, ns), sizes, None)
        xf = torch.fft.rfftn(x, s=ns, dim=dims)
        for i, k in enumerate(keep):
            if truncated[i]:
                xf = xf.index_select(2 + i, k)
        b, shape = xf.shape[0], xf.shape[2:]
        p = math.prod(shape)
        # contiguous (modes, groups, ., .) operands: one batched complex GEMM, no per-matrix copies
        w = w.reshape(g, cout, cin, p).permute(3, 0, 2, 1)
        z = torch.matmul(xf.reshape(b, g, cin, p).permute(3, 1, 0, 2).contiguous(), w.contiguous())
        z = z.permute(2, 1, 3, 0).reshape(b, self.out_channels, *shape)
        for i in reversed(range(d)):
            if truncated[i]:
                filled = list(z.shape)
                filled[2 + i] = full[i]
                z = z.new_zeros(filled).index_copy(2 + i, keep[i], z)
        y = torch.fft.irfftn(z, s=ns, dim=dims)
        return self.crop(y, sizes, None)

    def _kept_between_calls(self, name: str, dtype: torch.dtype, make) -> torch.Tensor:
        """``make()``, kept between calls while the weight is unchanged and not trained (a
        re-layout of the weight costs as much as the small transforms it feeds)."""
        if (torch.is_grad_enabled() and self.weight.requires_grad) or torch.compiler.is_compiling():
            return make()
        key = (self.weight._version, self.weight.data_ptr(), dtype, self.weight.device)
        cache = self.__dict__.setdefault("_layouts", {})
        if cache.get(name, (None,))[0] != key:
            cache[name] = (key, make())
        return cache[name][1]

    def _mix_diagonal(self, w: torch.Tensor) -> torch.Tensor:
        """The complex weight laid out ``(*freq, groups, C_in/g, C_out/g)`` (the FFT path's)."""
        d, g = self.spatial_dims, self.groups
        return self._kept_between_calls("diagonal", w.dtype, lambda: w.reshape(
            g, self.out_channels // g, self.in_channels // g, *w.shape[2:]).permute(*range(3, 3 + d), 0, 2, 1).contiguous())

    def _block(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as real blocks ``(modes, groups, 2 C_in/g, 2 C_out/g)`` (see :func:`real_block`)."""
        g, cout, cin = self.groups, self.out_channels // self.groups, self.in_channels // self.groups
        return self._kept_between_calls("block", dtype, lambda: real_block(
            as_dtype(self.weight, dtype).reshape(g, cout, cin, -1, 2).permute(3, 0, 2, 1, 4)).contiguous())

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {k: v for k, v in state.items() if k != "_layouts"}

    def _forward_factored(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad_input(x)
        sizes = x.shape[2:]
        g = self.groups
        cout, cin = self.out_channels // g, self.in_channels // g
        w = self.weight.reshape(g, cout, cin, -1, 2).permute(3, 0, 2, 1, 4)  # (kept, g, cin, cout, 2)
        y = factored_conv(self.extend(x), w, g, self.factored_axes, stored_factored(self, self.spatial_dims),
                          self.slot_index)
        return self.crop(y, sizes, None)

    def _bases(self, sizes: Sequence[int], device, dtype):
        """Per axis: forward (cos, sin) over input positions, inverse (cos, sin) onto the outputs."""
        d, out = self.spatial_dims, []
        for i, g in enumerate(self.geometry):
            idx = g.out_index(g.conv_input_size(sizes[i]), torch.device("cpu"))
            pos_out = torch.arange(g.n)[idx] if isinstance(idx, slice) else idx
            out.append(dft_bases(g.n, self.kept[i], torch.arange(sizes[i]), pos_out, i == d - 1, device, dtype))
        return out

    def _forward_matmul(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad_input(x)
        built = [g.in_size + (sum(g.pad) if g.prepad else 0) for g in self.geometry]
        stored = self.dft_in if self.spatial_dims == 1 else self.dft_0_0
        same = list(x.shape[2:]) == built and stored.dtype == x.dtype
        if self.spatial_dims == 1:
            packed = (self.dft_in, self.dft_out) if same else packed_bases(self._bases(x.shape[2:], x.device, x.dtype)[0])
            return self._forward_packed(x, *packed)
        bases = stored_bases(self, self.spatial_dims) if same else self._bases(x.shape[2:], x.device, x.dtype)
        zr, zi = self._mix(*real_dft(x, bases))
        return inverse_real_dft(zr, zi, bases)

    def _forward_packed(self, x: torch.Tensor, forward: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        """One axis: three matmuls, onto the kept modes (real and imaginary parts side by side),
        the per-mode channel mixing, and back onto the outputs (few ops: small layers are
        dominated by per-op overhead)."""
        b, g = x.shape[0], self.groups
        cin, cout, k = self.in_channels // g, self.out_channels // g, forward.shape[0] // 2
        y = torch.matmul(x, forward.T).reshape(b, g, cin, 2, k).permute(4, 1, 0, 3, 2).reshape(k, g, b, 2 * cin)
        z = torch.matmul(y, self._block(y.dtype)).reshape(k, g, b, 2, cout).permute(2, 1, 4, 3, 0)
        return torch.matmul(z.reshape(b, self.out_channels, 2 * k), inverse.T)
