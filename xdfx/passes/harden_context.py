"""What the harden form builders share: the layer under test with its probe inputs, candidates,
their measurement, and the FLOP counts of the XD layer itself."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..ops import XDConv
from ..ops.geometry import AxisGeometry
from ..ops.hardened import Gather, Pad, PadTo
from ..records import Origin


@dataclass
class Candidate:
    """One way to replace a layer: a module (or a function call), its FLOPs and measured error."""

    form: str  # a name from xdfx.forms.FORMS
    module: nn.Module | None
    flops: float
    detail: str = ""
    error: float = math.inf
    permuted: str = ""  # "M", "K" or "MK": learned permutations peeled off as index gathers
    function: Callable | None = None  # a functional replacement: function(x, weight, bias, **options)
    options: dict = field(default_factory=dict)
    lost: float | None = None  # snapped forms: the fraction of the layer's energy the projection dropped
    efficiency: float | None = None  # time per FLOP where it differs from its form's (a spectral form's method)
    paths: int = 1  # separate branches summed (each a few ops whose fixed cost FLOPs do not count)

    @property
    def name(self) -> str:
        return self.form + ("+permutation" if self.permuted else "")

    @property
    def stored(self) -> int:
        """Every number the replacement stores in its state (see :func:`stored_numbers`)."""
        return 0 if self.module is None else stored_numbers(self.module)


def stored_numbers(module: nn.Module) -> int:
    """Numbers in the module's state: parameters and persistent buffers (a frozen ``L w`` counts;
    DFT bases, recomputable from the geometry, do not)."""
    return sum(t.numel() for t in module.state_dict().values())


@dataclass
class CoreView:
    """The layer as its core forms (conv, spectral, fft) see it: with K and M the DFT pair, and a
    wrapper that puts learned permutations around a core module (None: nothing to wrap)."""

    layer: XDConv
    note: str = ""
    wrap: Callable[[Candidate], Candidate] | None = None


@dataclass
class LayerContext:
    """One XD layer being hardened: the layer, its probe inputs and what was measured of it."""

    layer: nn.Module
    probes: Sequence[torch.Tensor]
    tol: float
    weight: torch.Tensor | None = None  # the conv taps of a functional conv's XD layer
    bias: torch.Tensor | None = None
    origin: Origin | None = None
    views: list[CoreView] = field(default_factory=list)
    spectrum: torch.Tensor | None = None  # L w of an XD layer, (C_out, C_in/g, *freq)
    energy: float = 0.99  # the fraction of the layer's energy a snapped form keeps
    fits: Callable[[Candidate], bool] | None = None  # harden(fill=True): whether a candidate meets the speed target
    cache: dict = field(default_factory=dict)  # what several form builders compute once per layer

    def kernel(self) -> torch.Tensor:
        """The length-n real kernel whose conjugate DFT is ``L w``."""
        ns = [g.n for g in self.layer.geometry]
        return torch.fft.irfftn(self.spectrum.conj(), s=ns, dim=tuple(range(2, 2 + len(ns))))

    @property
    def is_grid(self) -> bool:
        return isinstance(self.layer, XDConv)

    @property
    def sizes(self) -> list[int]:
        return list(self.probes[0].shape[2:])

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, XDConv):
            return self.layer(x, self.weight, self.bias)
        return self.layer(x)

    def run(self, candidate: Candidate, x: torch.Tensor) -> torch.Tensor:
        """The candidate's output on ``x``, called as it will be once installed."""
        if candidate.function is not None:
            return candidate.function(x, self.weight, self.bias, **candidate.options)
        if candidate.form == "frozen" and isinstance(self.layer, XDConv):
            return candidate.module(x, self.bias)
        return candidate.module(x)

    def measure(self, candidate: Candidate) -> float:
        """Relative max error of a candidate on the probes (for ``zero``: relative to the input)."""
        worst = 0.0
        with torch.no_grad():
            for x in self.probes:
                ref = self.reference(x)
                try:
                    got = self.run(candidate, x)
                except RuntimeError:  # e.g. a circular padding longer than the input: not this form
                    return math.inf
                if got.shape != ref.shape:
                    return math.inf
                scale = float((x if candidate.form == "zero" else ref).abs().max())
                worst = max(worst, float((got - ref).abs().max()) / max(scale, 1e-30))
        return worst


# ---------------------------------------------------------------- learned factors
def factor_kind(matrix: torch.Tensor, tol: float) -> tuple[str, torch.Tensor | None]:
    """``("identity", None)`` if ``matrix`` is the identity within ``tol`` (max abs), a
    ``("permutation", index)`` if it is a permutation matrix (``(Q x)[i] = x[index[i]]``), or
    ``("general", None)``."""
    eye = torch.eye(*matrix.shape, dtype=matrix.dtype, device=matrix.device)
    if torch.allclose(matrix, eye, rtol=0, atol=tol):
        return "identity", None
    big = matrix.abs() > 0.5
    if bool((big.sum(1) == 1).all()):
        index = big.float().argmax(1)
        if len(set(index.tolist())) == matrix.shape[0]:
            perm = torch.zeros_like(matrix)
            perm[torch.arange(matrix.shape[0]), index] = 1
            if torch.allclose(matrix, perm, rtol=0, atol=tol):
                return "permutation", index
    return "general", None


def factor_kinds(xd: XDConv, tol: float) -> tuple[list, list]:
    """Kinds of ``Q_M`` and ``Q_K`` per axis (all identity for ``arch="fixed"``)."""
    kinds_m, kinds_k = [], []
    for kinds, qs in ((kinds_m, xd.M), (kinds_k, xd.K)):
        for i in range(xd.spatial_dims):
            kinds.append(factor_kind(qs[i].dense(), tol) if len(qs) else ("identity", None))
    return kinds_m, kinds_k


def without_factors(xd: XDConv) -> XDConv:
    """A copy of ``xd`` with K and M the plain DFT pair."""
    twin = copy.deepcopy(xd)
    twin.M, twin.K = nn.ModuleList(), nn.ModuleList()
    return twin


# ---------------------------------------------------------------- cost model (multiply-adds x 2)
def fft_flops(channels: int, ns: Sequence[int]) -> float:
    n = math.prod(ns)
    return 2.5 * channels * n * math.log2(max(n, 2))


def xd_flops(xd: XDConv, with_kernel_fft: bool = True) -> float:
    """FLOPs of one XD layer call per sample: FFTs, the per-frequency mixing, the factors and (for
    a spatially stored kernel) the kernel FFT."""
    ns = [g.n for g in xd.geometry]
    freq = math.prod(ns[:-1]) * (ns[-1] // 2 + 1)
    cin, cout = xd.in_channels, xd.out_channels
    flops = fft_flops(cin + cout, ns) + 8.0 * cout * (cin // xd.groups) * freq
    if with_kernel_fft and not xd.spectral:
        flops += fft_flops(cout * cin // xd.groups, ns)
    for q in list(xd.M) + list(xd.K):
        flops += 2.0 * (cin + cout) / 2 * math.prod(ns) * (q.n1 + q.n2)
    return flops


def original_conv_flops(xd: XDConv, sizes: Sequence[int]) -> float:
    """FLOPs per sample of the direct convolution an XD layer was relaxed from, on inputs of ``sizes``."""
    taps = math.prod(g.kernel for g in xd.geometry)
    return 2.0 * xd.out_channels * (xd.in_channels // xd.groups) * taps * math.prod(out_sizes(xd.geometry, sizes))


def original_conv(xd: XDConv) -> Callable[[torch.Tensor], torch.Tensor]:
    """A direct convolution shaped as the one ``xd`` was relaxed from (random taps: it is only timed)."""
    ref = next(xd.parameters())
    weight = torch.randn(xd.out_channels, xd.in_channels // xd.groups, *(g.kernel for g in xd.geometry),
                         dtype=ref.dtype, device=ref.device)
    conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[xd.spatial_dims - 1]
    pads = [p for g in reversed(xd.geometry) for p in g.pad]
    strides, dilations = [g.stride for g in xd.geometry], [g.dilation for g in xd.geometry]
    return lambda x: conv(torch.nn.functional.pad(x, pads), weight, None, strides, 0, dilations, xd.groups)


def out_sizes(geometry: Sequence[AxisGeometry], sizes: Sequence[int]) -> list[int]:
    return [g.out_size(s) for g, s in zip(geometry, sizes)]


# ---------------------------------------------------------------- the core views of a layer
def core_views(xd: XDConv, sizes: Sequence[int], tol: float) -> list[CoreView]:
    """How core forms may see ``xd``: as it is (K and M the DFT pair), with learned factors close
    to the DFT dropped (measurement decides), and with learned permutations of K or M peeled off
    around a core built for the full circular buffer."""
    kinds_m, kinds_k = factor_kinds(xd, tol)
    plain_m = all(k == "identity" for k, _ in kinds_m)
    plain_k = all(k == "identity" for k, _ in kinds_k)
    if plain_m and plain_k:
        return [CoreView(xd)]
    views = [CoreView(without_factors(xd), ", K and M taken as the DFT")]
    if all(k != "general" for k, _ in kinds_m + kinds_k):
        twin = without_factors(xd)
        twin.geometry = tuple(_buffer_geometry(xd, sizes, outputs_full=not plain_k))
        twin.out_scale = None
        views.append(CoreView(twin, "", lambda core: _wrap_permutations(xd, sizes, kinds_m, kinds_k, core)))
    return views


def _wrap_permutations(xd: XDConv, sizes: Sequence[int], kinds_m, kinds_k, core: Candidate) -> Candidate:
    """Put learned permutations of M (before) and K (after) around a core form built for the
    full circular buffer (the input padded as the layer pads it, then zero-extended to n); where
    K permuted the full buffer, crop and stride as the layer did."""
    layers: list[nn.Module] = []
    permuted_k = any(k == "permutation" for k, _ in kinds_k)
    if any(g.prepad for g in xd.geometry):
        layers.append(Pad([g.pad if g.prepad else (0, 0) for g in xd.geometry], xd.geometry[0].mode))
    layers.append(PadTo([g.n for g in xd.geometry]))
    layers += [Gather(index, 2 + i) for i, (kind, index) in enumerate(kinds_m) if kind == "permutation"]
    layers.append(core.module)
    layers += [Gather(index, 2 + i) for i, (kind, index) in enumerate(kinds_k) if kind == "permutation"]
    if permuted_k:
        device = next((p.device for p in xd.parameters()), torch.device("cpu"))
        for i, g in enumerate(xd.geometry):
            idx = g.out_index(sizes[i], device)
            layers.append(Gather(torch.arange(g.n, device=device)[idx] if isinstance(idx, slice) else idx, 2 + i))
    which = ("M" if any(k == "permutation" for k, _ in kinds_m) else "") + ("K" if permuted_k else "")
    return Candidate(core.form, nn.Sequential(*layers), core.flops, f"{core.detail}, permuted {which}", permuted=which)


def _buffer_geometry(xd: XDConv, sizes: Sequence[int], outputs_full: bool) -> list[AxisGeometry]:
    """Geometry of the same layer on its (padded, zero-extended) length-n buffer, circularly:
    all n outputs (``outputs_full``, K permuted them), or exactly the layer's outputs."""
    geo = []
    for g, size in zip(xd.geometry, sizes):
        if outputs_full:
            stride, pad = 1, (0, g.span - 1)
        else:
            left = 0 if g.prepad else g.pad[0]
            t = g.out_size(size)
            stride, pad = g.stride, (left, (t - 1) * g.stride + g.span - g.n - left)
        geo.append(AxisGeometry(g.n, g.kernel, stride, g.dilation, pad, "circular", g.n, g.kernel_buffer, g.buffer_step))
    return geo
