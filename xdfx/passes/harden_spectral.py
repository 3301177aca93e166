"""Harden forms in frequency: an FNO-style spectral conv on the fewest modes that are exact
enough, the full FFT conv, and the frozen XD layer (every transform kept as learned)."""

from __future__ import annotations

import math
from typing import Sequence

from ..ops import XDConv
from ..ops.frozen import FrozenXD
from ..ops.spectral import SpectralConv, kept_frequencies
from .harden_context import Candidate, LayerContext, fft_flops, out_sizes, xd_flops

#: Modes tried per axis by the binary search of the spectral form.
MODE_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
#: Time per FLOP of a spectral form relative to the direct conv, by how it transforms (medians of
#: benchmarks/bench_forms.py runs on CPU, 1 and 2 threads): DFT matmuls on one axis (three packed
#: matmuls), DFT matmuls over several axes (one per axis and part), or truncated real FFTs.
METHOD_EFFICIENCY = {"matmul": 1.8, "matmul_nd": 2.8, "fft": 5.6}
#: Kept modes per axis up to which the spectral form may use DFT matmuls.
DFT_MATMUL_MAX_MODES = 64


def transform_flops(xd: XDConv, sizes: Sequence[int], kept: Sequence[int]) -> dict[str, float]:
    """FLOPs of a spectral form's two transforms per sample, by method: real FFTs over every
    position, or DFT matmuls onto the ``kept`` modes per axis."""
    t = out_sizes(xd.geometry, sizes)
    return {"fft": fft_flops(xd.in_channels + xd.out_channels, [g.n for g in xd.geometry]),
            "matmul": 4.0 * (xd.in_channels * math.prod(sizes) + xd.out_channels * math.prod(t)) * sum(kept)}


def mix_flops(xd: XDConv, kept: Sequence[int]) -> float:
    """FLOPs per sample of a spectral form's per-mode channel mixing (complex), ``kept`` modes per axis."""
    return 8.0 * xd.out_channels * (xd.in_channels // xd.groups) * math.prod(kept)


def method_efficiency(method: str, dims: int) -> float:
    """:data:`METHOD_EFFICIENCY` of a spectral form over ``dims`` axes transforming by ``method``."""
    return METHOD_EFFICIENCY["matmul_nd" if method == "matmul" and dims > 1 else method]


def _dft_method(xd: XDConv, sizes: Sequence[int], kept: Sequence[int]) -> tuple[str, float]:
    """``("matmul" | "fft", transform flops)`` for a spectral form keeping ``kept`` modes per axis
    (the one of lower estimated time, the per-mode mixing included: the candidate's whole FLOPs are
    priced at :func:`method_efficiency`)."""
    flops = transform_flops(xd, sizes, kept)
    by_fft, by_matmul = flops["fft"], flops["matmul"]
    dims, mix = len(kept), mix_flops(xd, kept)
    if max(kept) <= DFT_MATMUL_MAX_MODES and ((by_matmul + mix) * method_efficiency("matmul", dims)
                                              < (by_fft + mix) * method_efficiency("fft", dims)):
        return "matmul", by_matmul
    return "fft", by_fft


def _kept(ns: Sequence[int], modes: int) -> list[int]:
    return [len(kept_frequencies(n, modes, i == len(ns) - 1)) for i, n in enumerate(ns)]


def spectral_candidates(ctx: LayerContext) -> list[Candidate]:
    """The fewest low modes whose *measured* error on the probes is within ``tol`` (binary search
    over :data:`MODE_STEPS`: the error falls as modes are added; a mode the inputs never excite
    costs nothing to drop). Only where K and M are (taken as) the plain DFT pair."""
    out = []
    for view in ctx.views:
        xd = view.layer
        if view.wrap is not None or xd.out_scale is not None:
            continue
        ns = [g.n for g in xd.geometry]
        steps = [m for m in MODE_STEPS if any(m < n // 2 + 1 for n in ns)]

        def build(m: int, method: str | None = None) -> SpectralConv:
            method = method or ("matmul" if max(_kept(ns, m)) <= DFT_MATMUL_MAX_MODES else "fft")
            return SpectralConv(ctx.spectrum, [m] * len(ns), xd.geometry, groups=xd.groups, bias=xd.bias, method=method)

        lo, hi, best = 0, len(steps) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            if ctx.measure(Candidate("spectral", build(steps[mid]), 0.0)) <= ctx.tol:
                best, hi = steps[mid], mid - 1
            else:
                lo = mid + 1
        if best is None:
            continue
        kept = _kept(ns, best)
        method, transform = _dft_method(xd, ctx.sizes, kept)
        mix = mix_flops(xd, kept)
        detail = f"modes={best} ({'matmul DFT' if method == 'matmul' else 'FFT'}){view.note}"
        out.append(Candidate("spectral", build(best, method), transform + mix, detail,
                             efficiency=method_efficiency(method, len(ns))))
    return out


def fft_candidates(ctx: LayerContext) -> list[Candidate]:
    """Every mode kept, through real FFTs: the XD layer with K and M the DFT pair, as a standard op."""
    out = []
    for view in ctx.views:
        xd = view.layer
        if xd.out_scale is not None:
            continue
        ns = [g.n for g in xd.geometry]
        flops = xd_flops(xd, with_kernel_fft=False)
        full = SpectralConv(ctx.spectrum, ns, xd.geometry, groups=xd.groups, bias=xd.bias, method="fft")
        cand = Candidate("fft", full, flops, f"all modes (FFT){view.note}")
        out.append(view.wrap(cand) if view.wrap else cand)
    return out


def frozen_candidates(ctx: LayerContext) -> list[Candidate]:
    """The XD layer itself, frozen: always exact, the fallback when nothing cheaper is."""
    xd = ctx.layer
    frozen = FrozenXD(xd, ctx.weight)
    return [Candidate("frozen", frozen, xd_flops(xd, with_kernel_fft=False), f"L w precomputed, {frozen.method} DFT")]
