"""Choose, for one XD layer, the cheapest standard operator that reproduces it within ``tol``.

Every applicable form is built and measured on probe inputs (the layer's real activations when
the caller has them): zero, identity, the original pooling, a conv with the recovered kernel
(size, dilation, stride, padding), an FNO-style spectral conv on the fewest modes that suffice,
a full FFT conv, and, always available, the frozen XD layer. Learned permutations of K or M are
peeled off as index gathers around the core form. The cheapest form within ``tol`` wins; ties go
to the form the layer was relaxed from.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from functools import reduce
from typing import Callable, Sequence

import torch
from torch import nn

from ..ops import XDConv
from ..ops.geometry import AxisGeometry
from ..ops.graph import XDGraphConv
from ..ops.hardened import (
    FrozenGraphConv, FrozenXD, Gather, GraphPolynomial, PadTo, SpectralConv, Zero, kept_frequencies, make_conv,
)

#: Time per FLOP of each form relative to a direct conv on CPU (measured with
#: benchmarks/bench_relax.py: the real-FFT path ran at ~28 GFLOP/s where mkldnn's conv ran at
#: ~126; the DFT-as-matmul path is plain GEMMs). Forms are ranked by flops * this factor.
EFFICIENCY = {"spectral": 2.0, "fft": 4.5, "frozen": 4.5}
#: The DFT of the kept modes as real matmuls beats real FFTs (eager, CPU) until its flops reach
#: about 12x the FFTs' (measured: SpectralConv at width 64 and n = 256 switches between 32 and
#: 64 modes; at n = 1024, 64 modes still favour the matmuls; small layers favour them).
DFT_MATMUL_CROSSOVER = 12.0
FORM_ORDER = ("zero", "identity", "pool", "conv", "conv_function", "graph_polynomial", "spectral", "fft", "frozen")
MODE_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclass
class Candidate:
    form: str
    module: nn.Module | None
    flops: float
    detail: str = ""
    error: float = math.inf
    function: Callable | None = None  # a functional replacement (conv_function): function(x, weight, bias, **options)
    options: dict = field(default_factory=dict)

    @property
    def cost(self) -> float:
        """Estimated time, in direct-conv FLOP units."""
        return self.flops * EFFICIENCY.get(self.form.split("+")[0], 1.0)

    @property
    def params(self) -> int:
        return 0 if self.module is None else sum(p.numel() for p in self.module.parameters())


# ---------------------------------------------------------------- factor classification
def factor_kind(matrix: torch.Tensor, reference: torch.Tensor, tol: float) -> tuple[str, torch.Tensor | None]:
    """``("identity", None)`` if ``matrix`` is ``reference`` within ``tol`` (max abs), a
    ``("permutation", index)`` with ``matrix @ v == v[index] @ reference``-style rows, or
    ``("general", None)``."""
    if torch.allclose(matrix, reference, rtol=0, atol=tol):
        return "identity", None
    if matrix.shape == reference.shape and torch.equal(reference, torch.eye(*reference.shape, dtype=reference.dtype, device=reference.device)):
        big = matrix.abs() > 0.5
        rows_ok = bool((big.sum(1) == 1).all())
        if rows_ok:
            index = big.float().argmax(1)
            if len(set(index.tolist())) == matrix.shape[0]:
                perm = torch.zeros_like(matrix)
                perm[torch.arange(matrix.shape[0]), index] = 1
                if torch.allclose(matrix, perm, rtol=0, atol=tol):
                    return "permutation", index
    return "general", None


def _factors(xd: XDConv, tol: float) -> tuple[list, list]:
    """Kinds of ``Q_M`` and ``Q_K`` per axis (all identity for ``arch="fixed"``)."""
    kinds_m, kinds_k = [], []
    for kinds, qs in ((kinds_m, xd.M), (kinds_k, xd.K)):
        for i, g in enumerate(xd.geometry):
            if len(qs) == 0:
                kinds.append(("identity", None))
                continue
            dense = qs[i].dense()
            kinds.append(factor_kind(dense, torch.eye(g.n, dtype=dense.dtype, device=dense.device), tol))
    return kinds_m, kinds_k


# ---------------------------------------------------------------- cost model (multiply-adds x 2)
def _fft_flops(channels: int, ns: Sequence[int]) -> float:
    n = math.prod(ns)
    return 2.5 * channels * n * math.log2(max(n, 2))


def _kernel_fft_flops(xd: XDConv) -> float:
    """``L w`` every call, unless the layer stores the diagonal itself."""
    return 0.0 if xd.spectral else _fft_flops(xd.out_channels * xd.in_channels // xd.groups, [g.n for g in xd.geometry])


def xd_flops(xd: XDConv, sizes: Sequence[int]) -> float:
    ns = [g.n for g in xd.geometry]
    freq = math.prod(ns[:-1]) * (ns[-1] // 2 + 1)
    cin, cout = xd.in_channels, xd.out_channels
    flops = _fft_flops(cin + cout, ns) + 8.0 * cout * (cin // xd.groups) * freq
    flops += _kernel_fft_flops(xd)
    for q in list(xd.M) + list(xd.K):
        flops += 2.0 * (cin + cout) / 2 * math.prod(ns) * (q.n1 + q.n2)
    return flops


def _out_sizes(geometry: Sequence[AxisGeometry], sizes: Sequence[int]) -> list[int]:
    return [g.out_size(s) for g, s in zip(geometry, sizes)]


# ---------------------------------------------------------------- conv recovery
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
    d = xd.spatial_dims
    mask = kernel.abs() > threshold
    offsets, taps_index, dilation = [], [], []
    for i, g in enumerate(xd.geometry):
        axis_mask = mask.transpose(2 + i, -1).reshape(-1, kernel.shape[2 + i]).any(0)
        arc = _circular_support(axis_mask)
        if arc is None:
            return None
        a, b = arc
        on = [u - a for u in range(a, b + 1) if axis_mask[u % g.n]]
        dil = reduce(math.gcd, on, 0) or 1
        offsets.append(a)
        dilation.append(dil)
        taps_index.append(torch.tensor([(a + j * dil) % g.n for j in range((b - a) // dil + 1)], device=kernel.device))
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
        if left >= 0 and (total_in + 2 * left - span) // g.stride + 1 == t:
            right = left  # the conv's floor division makes the two paddings equivalent
        pads.append((left, right))
        stride.append(g.stride)
    mode = xd.geometry[0].mode
    if any(g.prepad for g in xd.geometry):
        pre = [g.pad if g.prepad else (0, 0) for g in xd.geometry]
        core = make_conv(taps, xd.bias, stride=stride, dilation=dilation, groups=xd.groups, pads=pads, mode="zeros")
        from ..ops.hardened import Pad

        module = nn.Sequential(Pad(pre, mode), core)
    else:
        module = make_conv(taps, xd.bias, stride=stride, dilation=dilation, groups=xd.groups, pads=pads,
                           mode="circular" if mode == "circular" else "zeros")
    detail = f"k={tuple(taps.shape[2:])} d={tuple(dilation)} s={tuple(stride)} pad={pads}"
    return module, detail


# ---------------------------------------------------------------- candidates for XDConv
def _core_candidates(xd: XDConv, spectrum: torch.Tensor, sizes: Sequence[int], tol: float,
                     measure_fn: Callable[[nn.Module], float] | None = None, note: str = "") -> list[Candidate]:
    """Forms for an XD layer whose K and M are the plain DFT pair (spectrum = L w).

    The truncated spectral form keeps the fewest low modes whose *measured* error on the
    layer's probe inputs is within ``tol`` (binary search over :data:`MODE_STEPS`): a mode the
    inputs never excite costs nothing to drop."""
    out: list[Candidate] = []
    cin, cout, g = xd.in_channels, xd.out_channels, xd.groups
    ns = [geo.n for geo in xd.geometry]
    t = _out_sizes(xd.geometry, sizes)
    kernel = torch.fft.irfftn(spectrum.conj(), s=ns, dim=tuple(range(2, 2 + xd.spatial_dims)))
    scale = float(kernel.abs().max()) or 1.0
    for rel in (0.0, 1e-7, tol * 1e-2, tol * 1e-1):
        found = recover_conv(xd, kernel, rel * scale)
        if found is not None and all(c.detail != found[1] for c in out):
            module, detail = found
            conv = next(m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd))
            flops = 2.0 * cout * (cin // g) * math.prod(conv.kernel_size) * math.prod(t)
            out.append(Candidate("conv", module, flops, detail))
    if xd.out_scale is None and measure_fn is not None:
        steps = [m for m in MODE_STEPS if any(m < (n // 2 + 1) for n in ns)]
        lo, hi, best = 0, len(steps) - 1, None
        while lo <= hi:  # the error falls as modes are added: find the fewest within tol
            mid = (lo + hi) // 2
            m = steps[mid]
            k = [len(kept_frequencies(n, m, i == len(ns) - 1)) for i, n in enumerate(ns)]
            method = "matmul" if max(k) <= 64 else "fft"
            sc = SpectralConv(spectrum, [m] * len(ns), xd.geometry, groups=g, bias=xd.bias, method=method)
            if measure_fn(sc) <= tol:
                best, hi = (m, k), mid - 1
            else:
                lo = mid + 1
        if best is not None:
            m, k = best
            mix = 8.0 * cout * (cin // g) * math.prod(k)
            by_fft = _fft_flops(cin + cout, ns)
            by_matmul = 4.0 * (cin * math.prod(sizes) + cout * math.prod(t)) * sum(k)
            method = "matmul" if max(k) <= 64 and by_matmul < DFT_MATMUL_CROSSOVER * by_fft else "fft"
            sc = SpectralConv(spectrum, [m] * len(ns), xd.geometry, groups=g, bias=xd.bias, method=method)
            flops = (by_matmul if method == "matmul" else by_fft) + mix
            out.append(Candidate("spectral", sc, flops, f"modes={m} ({'matmul DFT' if method == 'matmul' else 'FFT'}){note}"))
    if xd.out_scale is None:
        fft_flops = _fft_flops(cin + cout, ns) + 8.0 * cout * (cin // g) * math.prod(ns[:-1]) * (ns[-1] // 2 + 1)
        full = SpectralConv(spectrum, ns, xd.geometry, groups=g, bias=xd.bias, method="fft")
        out.append(Candidate("fft", full, fft_flops, f"all modes (FFT){note}"))
    for c in out:
        if c.form == "conv":
            c.detail += note
    return out


def _wrap_permutations(xd: XDConv, kinds_m, kinds_k, core: Candidate) -> Candidate:
    """Put learned permutations of M (before) and K (after) around a core form built for the
    full circular buffer (the input padded as the layer pads it, then zero-extended to n)."""
    from ..ops.hardened import Pad

    layers: list[nn.Module] = []
    permuted_m = any(k == "permutation" for k, _ in kinds_m)
    permuted_k = any(k == "permutation" for k, _ in kinds_k)
    if any(g.prepad for g in xd.geometry):
        layers.append(Pad([g.pad if g.prepad else (0, 0) for g in xd.geometry], xd.geometry[0].mode))
    layers.append(PadTo([g.n for g in xd.geometry]))
    layers += [Gather(index, 2 + i) for i, (kind, index) in enumerate(kinds_m) if kind == "permutation"]
    layers.append(core.module)
    layers += [Gather(index, 2 + i) for i, (kind, index) in enumerate(kinds_k) if kind == "permutation"]
    which = ("M" if permuted_m else "") + ("K" if permuted_k else "")
    return Candidate(core.form + "+permutation", nn.Sequential(*layers), core.flops, f"{core.detail}, permuted {which}")


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
        geo.append(AxisGeometry(g.n, g.kernel, stride, g.dilation, pad, "circular", g.n, g.kernel_buffer))
    return geo


def xdconv_candidates(xd: XDConv, probes: Sequence[torch.Tensor], tol: float, weight: torch.Tensor | None,
                      weight_bias: torch.Tensor | None = None) -> list[Candidate]:
    sizes = list(probes[0].shape[2:])
    kinds_m, kinds_k = _factors(xd, tol)
    with torch.no_grad():
        spectrum = xd.spectrum(weight).detach()
    cands = [Candidate("zero", Zero(xd.out_channels, xd.geometry, xd.bias if xd.bias is not None else None), 0.0)]
    if xd.in_channels == xd.out_channels and _out_sizes(xd.geometry, sizes) == sizes:
        cands.append(Candidate("identity", nn.Identity(), 0.0))
    origin = xd.origin or {}
    if origin.get("kind") == "pool":
        pool = copy.deepcopy(origin["module"])
        t = _out_sizes(xd.geometry, sizes)
        k = [g.kernel for g in xd.geometry]
        cands.append(Candidate("pool", pool, float(xd.in_channels * math.prod(k) * math.prod(t)), repr(pool)))
    plain_m = all(k == "identity" for k, _ in kinds_m)
    plain_k = all(k == "identity" for k, _ in kinds_k)
    if origin.get("kind") == "conv_function" and plain_m and plain_k and xd.growth is not None and float(xd.growth.detach().abs().max()) <= 0:
        fn = origin["function"]
        options = {k: origin[k] for k in ("stride", "padding", "dilation", "groups")}
        cands.append(Candidate("conv_function", None, 0.0, fn.__name__, function=fn, options=options))
    reference = lambda t: xd(t, weight, weight_bias)  # noqa: E731
    measure_fn = lambda module: measure(reference, Candidate("spectral", module, 0.0), probes, weight, weight_bias)  # noqa: E731
    if plain_m and plain_k:
        cands += _core_candidates(xd, spectrum, sizes, tol, measure_fn)
    else:  # learned factors close to the DFT pair may still be dropped: measurement decides
        twin = copy.deepcopy(xd)
        twin.M, twin.K = torch.nn.ModuleList(), torch.nn.ModuleList()
        cands += _core_candidates(twin, spectrum, sizes, tol, measure_fn, note=", K and M taken as the DFT")
    if not (plain_m and plain_k) and all(k != "general" for k, _ in kinds_m + kinds_k):
        twin = copy.deepcopy(xd)
        twin.M, twin.K = torch.nn.ModuleList(), torch.nn.ModuleList()
        twin.geometry = tuple(_buffer_geometry(xd, sizes, outputs_full=not plain_k))
        twin.out_scale = None
        for core in _core_candidates(twin, spectrum, [g.n for g in twin.geometry], tol):
            wrapped = _wrap_permutations(xd, kinds_m, kinds_k, core)
            if not plain_k:  # K permuted the full buffer: crop / stride as the layer did
                for i, g in enumerate(xd.geometry):
                    idx = g.out_index(sizes[i], probes[0].device)
                    idx = torch.arange(g.n, device=probes[0].device)[idx] if isinstance(idx, slice) else idx
                    wrapped.module.append(Gather(idx, 2 + i))
            cands.append(wrapped)
    frozen = FrozenXD(xd, weight)
    cands.append(Candidate("frozen", frozen, xd_flops(xd, sizes) - _kernel_fft_flops(xd), "L w precomputed"))
    return cands


# ---------------------------------------------------------------- candidates for graph convs
def graph_candidates(layer: XDGraphConv, probes, tol: float) -> list[Candidate]:
    a = layer.propagation.to(layer.weight.dtype)
    lam, u = torch.linalg.eigh(a.to(torch.float64))
    n, (c_out, c_in, taps) = layer.nodes, layer.weight.shape
    cands = []
    plain = True
    if layer.K is not None:
        k, m = layer.K.matrix.detach().double(), layer.M.matrix.detach().double()
        eye = torch.eye(n, dtype=k.dtype, device=k.device)
        plain = torch.allclose(k @ torch.diag(lam) @ m, a.double(), atol=tol) and torch.allclose(k @ m, eye, atol=tol)
        v = layer.L.matrix.detach().double()
        plain = plain and torch.allclose(v, lam[:, None] ** torch.arange(taps, dtype=torch.float64, device=v.device), atol=tol)
    if plain:
        w = layer.weight.detach()
        if layer.depthwise:
            weights = torch.stack([torch.diag(w[:, 0, j]) for j in range(taps)])
        else:
            weights = w.permute(2, 1, 0)  # (taps, C_in, C_out)
        used = [j for j in range(taps) if float(weights[j].abs().max()) > 0]
        last = (max(used) + 1) if used else 1
        poly = GraphPolynomial(a, weights[:last], layer.bias)
        nnz = int((a != 0).sum())
        flops = 2.0 * n * c_in * c_out * last + 2.0 * nnz * c_out * max(last - 1, 0)
        cands.append(Candidate("graph_polynomial", poly, flops, f"taps={last}"))
    with torch.no_grad():
        spec = layer.spectrum().detach()
    kmat = layer.K.matrix.detach() if layer.K is not None else layer.basis
    mmat = layer.M.matrix.detach() if layer.M is not None else layer.basis.T
    frozen = FrozenGraphConv(kmat, mmat, spec if not layer.depthwise else torch.diag_embed(spec[:, 0, :].T).permute(1, 2, 0), layer.bias)
    cands.append(Candidate("frozen", frozen, 4.0 * n * n * max(c_in, c_out) + 2.0 * n * c_in * c_out, "dense eigenbasis"))
    return cands


# ---------------------------------------------------------------- measuring
def measure(reference: Callable, candidate: Candidate, probes: Sequence[torch.Tensor], weight, bias) -> float:
    """Relative max error of a candidate on the probes (for ``zero``: relative to the input)."""
    worst = 0.0
    with torch.no_grad():
        for x in probes:
            ref = reference(x)
            try:
                if candidate.function is not None:
                    got = candidate.function(x, weight, bias, **candidate.options)
                elif candidate.form == "frozen" and isinstance(candidate.module, FrozenXD):
                    got = candidate.module(x, bias)
                else:
                    got = candidate.module(x)
            except RuntimeError:  # e.g. a circular padding longer than the input: not this form
                return math.inf
            if got.shape != ref.shape:
                return math.inf
            denom = float(x.abs().max()) if candidate.form == "zero" else float(ref.abs().max())
            worst = max(worst, float((got - ref).abs().max()) / max(denom, 1e-30))
    return worst


def choose(candidates: list[Candidate], tol: float) -> tuple[Candidate, Candidate | None]:
    """The cheapest candidate within ``tol`` (ties by :data:`FORM_ORDER`), and the runner-up."""
    ok = [c for c in candidates if c.error <= tol]
    rank = lambda c: (c.cost, FORM_ORDER.index(c.form.split("+")[0]))  # noqa: E731
    ok.sort(key=rank)
    if not ok:  # nothing within tol: the most accurate form
        ok = sorted(candidates, key=lambda c: c.error)
    return ok[0], (ok[1] if len(ok) > 1 else None)
