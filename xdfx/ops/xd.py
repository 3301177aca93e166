"""The XD-operation ``Real(K diag(L w) M x)`` over 1, 2 or 3 spatial axes.

Each of the three transforms is an FFT composed with a learnable real Monarch matrix per axis
(``arch="monarch"``), initialised to identity so that at warm start ``M = F``, ``L = F`` with the
kernel flip and ``K = F^-1`` exactly:

    M = F Q_M,    L = conj F Q_L  (conj F w = F flip(w) for real w),    K = Q_K F^-1.

Because ``Q_M x`` and ``Q_L w`` are real, ``diag(L w) M x`` is Hermitian and ``Real(F^-1 .)`` is
an inverse *real* FFT: every transform is a real FFT of an FFT-friendly (not power-of-two)
length, and the learnable factors can still move ``K``, ``L``, ``M`` away from the DFT (to
permutations, block-sparse or low-rank maps). ``arch="fixed"`` keeps plain FFTs.

The kernel ``w`` is as long as the transform (``max_kernel_size`` caps it), warm-started with the
conv's taps at their dilated positions and zeros elsewhere, so it can grow into a global filter.
A full-length owned kernel is stored as its diagonal ``L w = conj F w`` itself
(``spectral_weight``, in the layout of the per-frequency matmul): the same operator and the same
warm start, with no kernel FFT, conjugation or transposition per step (``kernel()`` /
``set_kernel()`` read and write it as the real ``w``). A truncated kernel (learnable ``Q_L``) or
one computed by the model (``F.conv*d`` weights) stays spatial. Where ``K`` is the plain inverse
DFT, a stride along a full frequency axis is taken in frequency (an aliased spectrum and a
``stride`` x shorter inverse FFT).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import XdfxShapeError
from .fft import irfftn_batch_major, rfftn, spectral_mix
from .geometry import AxisGeometry
from .monarch import Monarch, along

ARCHS = ("monarch", "fixed")


class LinearMap(nn.Module):
    """A learnable real ``n x k`` matrix applied along one axis (an architecture parameter).

    XD uses it for ``Q_L`` when the kernel buffer is truncated (initialised to the
    zero-extension ``[I; 0]``, so ``L = conj F Q_L`` starts as the DFT) and for the graph
    eigenbases of graph convolutions.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.n, self.k = matrix.shape
        self.matrix = nn.Parameter(matrix.clone())

    @classmethod
    def embedding(cls, k: int, n: int, *, device=None, dtype=None) -> "LinearMap":
        return cls(torch.eye(n, k, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.k} -> {self.n}"

    def forward(self, w: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Apply along axis ``dim`` of ``w``."""
        return along(self.matrix, w, dim % w.dim())


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


class XDConv(nn.Module):
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

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        geometry: Sequence[AxisGeometry],
        *,
        groups: int = 1,
        bias: bool = True,
        arch: str = "monarch",
        external_weight: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch {arch!r} is not one of {ARCHS}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.geometry = tuple(geometry)
        self.arch = arch
        self.external_weight = external_weight
        self.layer_name = ""
        self.origin: dict | None = None  # what relax built it from (harden prefers that form on ties)
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
        self.register_buffer("out_scale", None)  # fixed per-position scale (pooling divisors)
        has_bias = bias and not external_weight
        self.bias = nn.Parameter(torch.zeros(out_channels, **kw)) if has_bias else None
        monarchs = lambda: nn.ModuleList(Monarch(g.n, **kw) for g in self.geometry)  # noqa: E731
        self.M = monarchs() if learn else nn.ModuleList()
        self.K = monarchs() if learn else nn.ModuleList()
        # With a full-length kernel, a learnable L adds no expressivity (every diagonal is
        # already F w for some w), so L is learnable only where the kernel buffer is truncated.
        self.L = nn.ModuleList(LinearMap.embedding(g.kernel_buffer, g.n, **kw) for g in self.geometry) if learn and truncated else nn.ModuleList()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_conv(
        cls,
        conv: nn.Module,
        input_size: Sequence[int],
        *,
        max_kernel_size: int | None = None,
        arch: str = "monarch",
    ) -> "XDConv":
        """Warm-start an XD layer from an ``nn.Conv*d`` seen on inputs of spatial ``input_size``."""
        d = len(conv.kernel_size)
        if conv.padding_mode == "zeros":
            pads = conv_pads(conv.padding, conv.kernel_size, conv.dilation)
        else:
            rev = conv._reversed_padding_repeated_twice
            pads = [(rev[2 * (d - 1 - i)], rev[2 * (d - 1 - i) + 1]) for i in range(d)]
        geometry = cls.plan_geometry(
            input_size, conv.kernel_size, conv.stride, conv.dilation, pads, conv.padding_mode, max_kernel_size
        )
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
            xd.set_kernel(xd.embed(conv.weight))
            if conv.bias is not None:
                xd.bias.copy_(conv.bias)
        return xd

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
    @property
    def spatial_dims(self) -> int:
        return len(self.geometry)

    def embed(self, taps: torch.Tensor) -> torch.Tensor:
        """Place conv taps ``(C_out, C_in/g, *k)`` at their dilated positions in a kernel buffer."""
        buf = taps.new_zeros((*taps.shape[:2], *(g.kernel_buffer for g in self.geometry)))
        index = (Ellipsis, *(slice(0, g.span, g.dilation) for g in self.geometry))
        buf[index] = taps
        return buf

    @property
    def frequency_shape(self) -> tuple[int, ...]:
        """Shape of the real FFT of one spatial kernel: ``(n_1, ..., n_d // 2 + 1)``."""
        ns = [g.n for g in self.geometry]
        return (*ns[:-1], ns[-1] // 2 + 1)

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
            spec = self._from_mix_layout(torch.view_as_complex(self.spectral_weight)).conj()
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

    def _spectrum_key(self, weight: torch.Tensor | None) -> tuple:
        tensors = [t for t in (weight, self.weight, self.growth) if t is not None] + list(self.L.parameters())
        return tuple((id(t), t._version, t.device, t.dtype) for t in tensors)

    def diagonal(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``L w`` laid out ``(*freq, groups, C_in/g, C_out/g)``, the per-frequency matmul operand.

        A ``spectral`` layer stores it (no per-call transform). Otherwise it is ``conj F Q_L w``,
        cached while no gradient is needed until a parameter changes (their version counters).
        """
        if self.spectral:
            return torch.view_as_complex(self.spectral_weight)
        if torch.is_grad_enabled():
            self.__dict__.pop("_spectrum_cache", None)
            return self._diagonal(weight)
        key = self._spectrum_key(weight)
        cached = self.__dict__.get("_spectrum_cache")
        if cached is None or cached[0] != key:
            cached = (key, self._diagonal(weight))
            self.__dict__["_spectrum_cache"] = cached
        return cached[1]

    def _diagonal(self, weight: torch.Tensor | None) -> torch.Tensor:
        w = self.kernel(weight)
        for i, q in enumerate(self.L):
            w = q(w, 2 + i)
        return self.diagonal_of(w)

    def diagonal_of(self, w: torch.Tensor) -> torch.Tensor:
        """``conj F w`` of a real length-n kernel ``(C_out, C_in/g, *n)`` in the layout of
        :meth:`diagonal` (differentiable)."""
        dims = range(2, 2 + self.spatial_dims)
        return self._to_mix_layout(rfftn(w, [g.n for g in self.geometry], dims, conj=True)).contiguous()

    def spectrum(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``L w``: the diagonal applied per frequency, shape ``(C_out, C_in/g, n_1, ..., n_d//2+1)``."""
        return self._from_mix_layout(self.diagonal(weight))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise XdfxShapeError(
                f"layer {self.layer_name!r} expects (batch, {self.in_channels}, "
                f"{self.spatial_dims} spatial axes), got shape {tuple(x.shape)}"
            )
        for i, g in enumerate(self.geometry):
            g.check(x.shape[2 + i], self.layer_name, i)

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.apply_diagonal(x, self.diagonal(weight), self.bias if bias is None else bias)

    def apply_diagonal(self, x: torch.Tensor, diag: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``Real(K diag(L w) M x) + bias`` for ``L w`` from :meth:`diagonal`.

        The spectrum lives frequency-major ``(*freq, groups, B, C)`` between the two FFTs: the
        per-frequency channel matmul reads and writes it contiguously, strides are aliased along
        its leading axes, and the inverse FFT writes the batch-major result directly.
        """
        x, sizes = self.transform_in(x)
        ns = [g.n for g in self.geometry]
        z = spectral_mix(x, diag, ns, self.groups)
        folded = self._folded_axes(sizes)
        if any(folded):
            z = self._fold_strides(z, folded)
            ns = [g.n // g.stride if f else g.n for g, f in zip(self.geometry, folded)]
        y = irfftn_batch_major(z, ns)
        return self.transform_out(y, sizes, bias, folded)

    def _folded_axes(self, sizes: Sequence[int]) -> tuple[bool, ...]:
        """Per axis, whether the stride is taken in frequency: the full (complex) frequency axes
        (all but the last), where ``K`` is the plain inverse DFT (a learned ``K`` acts on the
        full-length result). On the last, half-spectrum axis the aliasing would need the
        Hermitian mirror across every axis, which costs more than the strided slice it saves."""
        d = self.spatial_dims
        if len(self.K):
            return (False,) * d
        return tuple(i < d - 1 and g.folds_stride(g.conv_input_size(s)) for i, (g, s) in enumerate(zip(self.geometry, sizes)))

    def _fold_strides(self, z: torch.Tensor, folded: Sequence[bool]) -> torch.Tensor:
        """Alias the frequency-major spectrum ``z`` along the folded axes (``AxisGeometry.fold_weights``)."""
        cache = self.__dict__.setdefault("_fold_cache", {})
        for i, g in enumerate(self.geometry):
            if not folded[i]:
                continue
            dim, s = i, g.stride
            key = (i, z.device, z.dtype)
            if key not in cache:
                alias, post = g.fold_weights()
                cache[key] = (alias.to(z.device, z.dtype), None if post is None else post.to(z.device, z.dtype))
            alias, post = cache[key]
            # the weighted sum of the s aliased blocks as one (1 x s) matmul over contiguous rows
            lead, m = z.shape[:dim], g.n // s
            zr = z.reshape(math.prod(lead), s, -1)
            z = torch.matmul(alias.reshape(1, s), zr).reshape(*lead, m, *z.shape[dim + 1 :])
            if post is not None:
                view = [1] * z.dim()
                view[dim] = -1
                z = z * post.reshape(view)
        return z

    def transform_in(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        """Check ``x``, pad it as the conv pads it and apply ``Q_M``; returns it and its padded sizes."""
        self._check_input(x)
        geo = self.geometry
        if any(g.prepad for g in geo):
            x = F.pad(x, [p for g in reversed(geo) for p in (g.pad if g.prepad else (0, 0))], mode=geo[0].mode)
        sizes = x.shape[2:]
        if len(self.M):
            if any(g.n != s for g, s in zip(geo, sizes)):  # F.pad copies even when padding nothing
                x = F.pad(x, [p for g, s in zip(reversed(geo), reversed(sizes)) for p in (0, g.n - s)])
            for i, q in enumerate(self.M):
                x = q(x, 2 + i)
        return x, sizes

    def transform_out(
        self, y: torch.Tensor, sizes: torch.Size, bias: torch.Tensor | None, folded: Sequence[bool] = ()
    ) -> torch.Tensor:
        """Apply ``Q_K`` to the circular result, keep the conv's outputs, scale (pools), add ``bias``.

        Along ``folded`` axes ``y`` is already the strided result, starting at the first output."""
        for i, q in enumerate(self.K):
            y = q(y, 2 + i)
        for i, g in enumerate(self.geometry):
            size = g.conv_input_size(sizes[i])
            if i < len(folded) and folded[i]:
                y = y.narrow(2 + i, 0, g.out_size(size))
            else:
                y = g.gather(y, 2 + i, size)
        if self.out_scale is not None:
            if y.shape[2:] != self.out_scale.shape:
                raise XdfxShapeError(
                    f"layer {self.layer_name!r} (a relaxed pooling) was built for outputs of size "
                    f"{tuple(self.out_scale.shape)}, got {tuple(y.shape[2:])}; relax with inputs of this size"
                )
            y = y * self.out_scale
        if bias is not None:
            y = y + bias.reshape(-1, *([1] * self.spatial_dims))
        return y

    def extra_repr(self) -> str:
        geo = ", ".join(
            f"n={g.n} k={g.kernel} s={g.stride} d={g.dilation} pad={g.pad} w={g.kernel_buffer}" for g in self.geometry
        )
        return (
            f"{self.in_channels}, {self.out_channels}, groups={self.groups}, arch={self.arch}, "
            f"mode={self.geometry[0].mode}, [{geo}]"
        )
