"""The XD-operation ``Real(K diag(L w) M x)`` over 1, 2 or 3 spatial axes.

Each transform is an FFT composed with a learnable real Monarch matrix per axis
(``arch="monarch"``), initialised to identity so that at warm start ``M = F``, ``L = F`` with the
kernel flip and ``K = F^-1`` exactly:

    M = F Q_M,    L = conj F Q_L  (conj F w = F flip(w) for real w),    K = Q_K F^-1.

Because ``Q_M x`` and ``Q_L w`` are real, every transform is a real FFT of an FFT-friendly length,
and the factors can still move ``K``, ``L``, ``M`` away from the DFT. ``arch="fixed"`` keeps plain
FFTs. The kernel ``w`` is as long as the transform (``max_kernel_size`` caps it), warm-started with
the conv's taps at their dilated positions, so it can grow into a global filter. A full-length
owned kernel is stored as its diagonal ``L w`` itself (``spectral_weight``): the same operator with
no kernel FFT per step; a truncated kernel (learnable ``Q_L``) or one the model computes
(``F.conv*d`` weights) stays spatial.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import XdfxShapeError
from .fft import irfftn_batch_major, rfftn, spectral_mix
from .geometry import AxisGeometry
from .circular import CircularLayer, as_dtype, compute_dtype, full_precision
from .monarch import LinearMap, Monarch, along

ARCHS = ("monarch", "fixed")
#: with ``recompute``, the most bytes of complex spectrum one checkpointed chunk of the batch spans
RECOMPUTE_CHUNK_BYTES = 32 << 20


def _ntuple(v, d: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d


def conv_pads(padding, kernel: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    """Per-axis ``(left, right)`` zero padding of a conv's ``padding`` argument."""
    d = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * d
        if padding == "same":
            totals = [dl * (k - 1) for k, dl in zip(kernel, dilation)]
            return [(t // 2, t - t // 2) for t in totals]
        raise ValueError(f"padding {padding!r} is not 'same', 'valid', an int or a tuple")
    return [(int(p), int(p)) for p in _ntuple(padding, d)]


def _reads_input(offset: int, stride: int, outputs: int, size: int) -> bool:
    """Whether some output ``o < outputs`` reads input position ``o * stride + offset`` in ``[0, size)``."""
    o = max(0, -(offset // stride))  # the first output at or right of position 0
    return o < outputs and o * stride + offset < size


class XDConv(CircularLayer):
    """An XD-operation, a drop-in replacement for ``nn.Conv{1,2,3}d`` (see the module docstring).

    Parameters
    ----------
    in_channels, out_channels, groups : int
        As in ``nn.Conv*d``.
    geometry : sequence of AxisGeometry
        One entry per spatial axis (see :mod:`xdfx.ops.geometry`).
    bias : bool
        Whether the layer owns a bias (ignored with ``external_weight``).
    arch : {"monarch", "fixed"}
        Learnable structured factors around the FFTs, or plain FFTs.
    external_weight : bool
        The conv taps come in as ``forward(x, weight, bias)`` (a functional ``F.conv*d`` call);
        the layer then owns a zero-initialised ``growth`` kernel added to them.
    """

    #: training recomputes the forward in backward instead of storing its intermediates (set by the budget)
    recompute: bool = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        geometry: Sequence[AxisGeometry],
        *,
        groups: int = 1,
        bias: bool = True,
        arch: str = "fixed",
        external_weight: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_channels, out_channels, geometry, groups)
        if arch not in ARCHS:
            raise ValueError(f"arch {arch!r} is not one of {ARCHS}")
        self.arch = arch
        self.external_weight = external_weight
        kw = {"device": device, "dtype": dtype}
        learn = arch == "monarch"
        truncated = any(g.kernel_buffer < g.n for g in self.geometry)
        # A full-length owned kernel is stored as its diagonal ``L w`` itself (see ``spectral``).
        self.spectral = not external_weight and not truncated
        shape = (out_channels, in_channels // groups, *(g.kernel_buffer for g in self.geometry))
        self.register_parameter("weight", None)
        self.register_parameter("growth", None)
        self.register_parameter("spectral_weight", None)
        if external_weight:
            self.growth = nn.Parameter(torch.zeros(shape, **kw))
        elif self.spectral:
            cin, cout = in_channels // groups, out_channels // groups
            self.spectral_weight = nn.Parameter(torch.zeros((*self.frequency_shape, groups, cin, cout, 2), **kw))
        else:
            self.weight = nn.Parameter(torch.zeros(shape, **kw))
        has_bias = bias and not external_weight
        self.bias = nn.Parameter(torch.zeros(out_channels, **kw)) if has_bias else None
        monarchs = lambda: nn.ModuleList(Monarch(g.n, **kw) for g in self.geometry)  # noqa: E731
        self.M = monarchs() if learn else nn.ModuleList()
        self.K = monarchs() if learn else nn.ModuleList()
        # With a full-length kernel, a learnable L adds no expressivity (every diagonal is
        # already F w for some w), so L is learnable only where the kernel buffer is truncated.
        self.L = (nn.ModuleList(LinearMap(g.buffer_embedding(**kw)) for g in self.geometry) if learn and truncated
                  else nn.ModuleList())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_conv(
        cls,
        conv: nn.Module,
        input_size: Sequence[int],
        *,
        max_kernel_size: int | None = None,
        arch: str = "fixed",
    ) -> "XDConv":
        """Warm-start an XD layer from an ``nn.Conv*d`` seen on inputs of spatial ``input_size``."""
        geometry = cls.conv_geometry(conv, input_size, max_kernel_size)
        live = cls.live_taps(conv, input_size)
        xd = cls(
            conv.in_channels,
            conv.out_channels,
            geometry,
            groups=conv.groups,
            bias=conv.bias is not None,
            arch=arch,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            xd.set_kernel(xd.embed(conv.weight[(Ellipsis, *(slice(a, b + 1) for a, b in live))]))
            if conv.bias is not None:
                xd.bias.copy_(conv.bias)
        return xd

    @classmethod
    def conv_geometry(cls, conv: nn.Module, input_size: Sequence[int], max_kernel_size: int | None = None) -> list[AxisGeometry]:
        """The per-axis geometry of ``conv`` on inputs of spatial ``input_size``."""
        d = len(conv.kernel_size)
        if conv.padding_mode == "zeros":
            pads = conv_pads(conv.padding, conv.kernel_size, conv.dilation)
        else:
            rev = conv._reversed_padding_repeated_twice
            pads = [(rev[2 * (d - 1 - i)], rev[2 * (d - 1 - i) + 1]) for i in range(d)]
        kernel = list(conv.kernel_size)
        if conv.padding_mode == "zeros":  # taps that only ever read the zero padding are dropped
            for i, (a, b) in enumerate(cls.live_taps(conv, input_size)):
                dl = conv.dilation[i]
                kernel[i], pads[i] = b - a + 1, (pads[i][0] - a * dl, pads[i][1] - (conv.kernel_size[i] - 1 - b) * dl)
        return cls.plan_geometry(input_size, kernel, conv.stride, conv.dilation, pads, conv.padding_mode,
                                 max_kernel_size)

    @staticmethod
    def live_taps(conv: nn.Module, input_size: Sequence[int]) -> list[tuple[int, int]]:
        """Per axis, the first and last tap of a zero-padded conv that read the input somewhere
        (an ASPP branch of dilation 36 on an 8x8 map reads only padding with all but its centre);
        every tap for other padding modes, or where dropping taps would need negative padding."""
        d = len(conv.kernel_size)
        full = [(0, k - 1) for k in conv.kernel_size]
        if conv.padding_mode != "zeros":
            return full
        pads = conv_pads(conv.padding, conv.kernel_size, conv.dilation)
        out = []
        for i in range(d):
            k, s, dl, (pl, pr), size = conv.kernel_size[i], conv.stride[i], conv.dilation[i], pads[i], int(input_size[i])
            t = (size + pl + pr - (k - 1) * dl - 1) // s + 1
            live = [j for j in range(k) if _reads_input(j * dl - pl, s, t, size)]
            a, b = (live[0], live[-1]) if live else (0, k - 1)
            out.append((a, b) if pl - a * dl >= 0 and pr - (k - 1 - b) * dl >= 0 else (0, k - 1))
        return out

    @staticmethod
    def plan_geometry(input_size, kernel, stride, dilation, pads, mode, max_kernel_size=None) -> list[AxisGeometry]:
        """One :class:`AxisGeometry` per spatial axis."""
        d = len(kernel)
        kernel, stride, dilation = _ntuple(kernel, d), _ntuple(stride, d), _ntuple(dilation, d)
        mks = _ntuple(max_kernel_size, d)
        return [
            AxisGeometry.plan(int(input_size[i]), kernel[i], stride[i], dilation[i], tuple(pads[i]), mode, mks[i])
            for i in range(d)
        ]

    # ------------------------------------------------------------------ the operator
    def embed(self, taps: torch.Tensor) -> torch.Tensor:
        """Place conv taps ``(C_out, C_in/g, *k)`` at their dilated positions in a kernel buffer."""
        buf = taps.new_zeros((*taps.shape[:2], *(g.kernel_buffer for g in self.geometry)))
        index = (Ellipsis, *(g.buffer_index() for g in self.geometry))
        buf[index] = taps
        return buf

    def frequency_weights(self, power: float = 2.0) -> torch.Tensor:
        """``(|f| / |f|_max) ** power`` per frequency of the transform (``|f|`` the distance from
        zero frequency, each axis in cycles per sample), shaped to broadcast against
        ``spectral_weight``: 0 at the mean, 1 at the highest frequency."""
        axes = []
        for i, g in enumerate(self.geometry):
            k = torch.arange(self.frequency_shape[i], dtype=torch.float64)
            axes.append(torch.minimum(k, g.n - k) / g.n)
        grids = torch.meshgrid(*axes, indexing="ij")
        radius = torch.sqrt(sum(a**2 for a in grids))
        rho = (radius / radius.max().clamp_min(1e-12)) ** power
        ref = next(p for p in (self.spectral_weight, self.weight, self.growth) if p is not None)
        return rho.reshape(*rho.shape, 1, 1, 1, 1).to(ref)

    def _to_mix_layout(self, spec: torch.Tensor) -> torch.Tensor:
        """``(C_out, C_in/g, *freq)`` -> ``(*freq, g, C_in/g, C_out/g)``."""
        d, g = self.spatial_dims, self.groups
        spec = spec.reshape(g, self.out_channels // g, *spec.shape[1:])
        return spec.permute(*range(3, 3 + d), 0, 2, 1)

    def _from_mix_layout(self, diag: torch.Tensor) -> torch.Tensor:
        """``(*freq, g, C_in/g, C_out/g)`` -> ``(C_out, C_in/g, *freq)``."""
        d, g = self.spatial_dims, self.groups
        diag = diag.permute(d, d + 2, d + 1, *range(d))  # (g, cout, cin, *freq)
        return diag.reshape(self.out_channels, self.in_channels // g, *diag.shape[3:])

    def kernel(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The real kernel ``w`` ``(C_out, C_in/g, *kernel_buffer)``: the owned weight, external
        taps plus growth, or (``spectral``) the inverse real FFT of the stored diagonal."""
        if self.external_weight:
            if weight is None:
                raise XdfxShapeError(f"layer {self.layer_name!r} takes its conv weight as an input")
            return self.embed(weight) + self.growth
        if self.spectral:
            ns = [g.n for g in self.geometry]
            spec = self._from_mix_layout(self._stored_diagonal()).conj()
            return torch.fft.irfftn(spec, s=ns, dim=tuple(range(2, 2 + self.spatial_dims)))
        return self.weight

    @torch.no_grad()
    def set_kernel(self, w: torch.Tensor) -> None:
        """Set the owned kernel to the real ``w`` ``(C_out, C_in/g, *kernel_buffer)`` (for
        external weights: the growth)."""
        shape = (self.out_channels, self.in_channels // self.groups, *(g.kernel_buffer for g in self.geometry))
        if tuple(w.shape) != shape:
            raise XdfxShapeError(
                f"layer {self.layer_name!r}: set_kernel needs a real kernel of shape {shape} "
                f"(C_out, C_in/groups, *kernel buffer), got {tuple(w.shape)}; place conv taps with embed()"
            )
        if self.external_weight:
            self.growth.copy_(w)
        elif self.spectral:
            self.spectral_weight.copy_(torch.view_as_real(self.diagonal_of(w.to(self.spectral_weight.dtype))))
        else:
            self.weight.copy_(w)

    def diagonal(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``L w`` laid out ``(*freq, groups, C_in/g, C_out/g)``, the per-frequency matmul operand:
        stored by a ``spectral`` layer, else ``conj F Q_L w`` of the (owned or given) kernel."""
        if self.spectral:
            return self._stored_diagonal()
        return self._diagonal(weight)

    def _stored_diagonal(self) -> torch.Tensor:
        w = self.spectral_weight
        return torch.view_as_complex(as_dtype(w, compute_dtype(w.dtype)))  # a half diagonal is upcast for the FFTs

    def _diagonal(self, weight: torch.Tensor | None) -> torch.Tensor:
        w = self.kernel(weight)
        w = as_dtype(w, compute_dtype(w.dtype))  # L and the FFT run in float32 on a half kernel
        if self.external_weight:
            return self.diagonal_of(w)
        # a truncated kernel: L = conj F Q_L as one small complex matrix per axis, applied to the
        # kb taps directly (no zero-extended FFT of every channel pair on every call)
        real = w.dtype
        for i, g in enumerate(self.geometry):
            kw = {"device": w.device, "dtype": real}
            angle = (2 * math.pi / g.n) * torch.outer(torch.arange(self.frequency_shape[i], **kw), torch.arange(g.n, **kw))
            dft = torch.polar(torch.ones_like(angle), angle)  # conj F, (rows, n)
            q = self.L[i].matrix if len(self.L) else g.buffer_embedding(**kw)
            w = along(dft @ q.to(dft.dtype), w.to(dft.dtype), 2 + i)
        return self._to_mix_layout(w).contiguous()

    def diagonal_of(self, w: torch.Tensor) -> torch.Tensor:
        """``conj F w`` of a real length-n kernel ``(C_out, C_in/g, *n)`` in the layout of
        :meth:`diagonal` (differentiable; a half ``w`` is transformed in float32)."""
        dims = range(2, 2 + self.spatial_dims)
        w = as_dtype(w, compute_dtype(w.dtype))
        return self._to_mix_layout(rfftn(w, [g.n for g in self.geometry], dims, conj=True)).contiguous()

    def spectrum(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``L w``: the diagonal applied per frequency, shape ``(C_out, C_in/g, n_1, ..., n_d//2+1)``."""
        return self._from_mix_layout(self.diagonal(weight))

    @full_precision
    def forward(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not (self.recompute and torch.is_grad_enabled()):
            return self._forward(x, weight, bias)
        # keep only x for backward; the spectra and factor products are rebuilt there, a few samples
        # at a time where one sample's spectrum is large (a stem conv at 224x224), so that the
        # rebuilt intermediates of one layer never hold the whole batch
        chunk = max(1, RECOMPUTE_CHUNK_BYTES // self._spectrum_bytes_per_sample())
        parts = [checkpoint(self._forward, xc, weight, bias, use_reentrant=False) for xc in x.split(chunk)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _spectrum_bytes_per_sample(self) -> int:
        freq = math.prod(g.n for g in self.geometry[:-1]) * (self.geometry[-1].n // 2 + 1)
        return max(self.in_channels, self.out_channels) * freq * 8

    def _forward(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        return self.apply_diagonal(x, self.diagonal(weight), self.bias if bias is None else bias)

    def apply_diagonal(self, x: torch.Tensor, diag: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``Real(K diag(L w) M x) + bias`` for ``L w`` from :meth:`diagonal`.

        The spectrum lives frequency-major ``(*freq, groups, B, C)`` between the two FFTs: the
        per-frequency channel matmul reads and writes it contiguously, strides are aliased along
        its leading axes, and the inverse FFT writes the batch-major result directly.
        """
        x, sizes = self.transform_in(x)
        z = spectral_mix(x, diag, [g.n for g in self.geometry], self.groups)
        folded = self.folded_axes(sizes, learned_k=len(self.K) > 0)
        if any(folded):
            z = self.fold(z, folded)
        y = irfftn_batch_major(z, self.folded_lengths(folded))
        return self.transform_out(y, sizes, bias, folded)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, groups={self.groups}, arch={self.arch}, "
            f"mode={self.geometry[0].mode}, [{self.describe_geometry()}]" + (", recompute" if self.recompute else "")
        )
