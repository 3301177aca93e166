"""Snapped harden forms ("discretize, then retrain"): an XD layer projected onto its nearest cheap
form, accepted beyond ``tol``, to be fine-tuned afterwards (:func:`xdfx.finetune`).

K and M go to the DFT pair, or to a permutation composed with it where a learned factor is close
to one. ``L w`` goes to ``k`` taps with a dilation (the taps that hold the most kernel energy) or to
the ``m`` lowest modes (the modes that carry the most output energy on the layer's probe inputs),
with ``k`` and ``m`` the smallest that keep the fraction ``ctx.energy`` of it. What the projection
dropped is the candidate's ``lost``; its measured error is what it changed on the probes.
"""

from __future__ import annotations

import math

import torch

from ..ops import XDConv
from ..ops.spectral import SpectralConv, kept_frequencies
from .harden_context import Candidate, CoreView, LayerContext, _buffer_geometry, _wrap_permutations, out_sizes, without_factors
from .harden_conv import conv_from_taps
from .harden_spectral import _dft_method, _kept

#: Dilations a snapped conv may take.
DILATIONS = (1, 2, 4)
#: Taps per axis a snapped conv may keep (a longer kernel is slower than the FFT forms).
MAX_TAPS = 64
#: A learned factor within this relative Frobenius distance of a permutation snaps to it.
PERMUTATION_RADIUS = 0.5


def nearest_permutation(q: torch.Tensor) -> tuple[str, torch.Tensor | None]:
    """``("permutation", index)`` (``(P x)[i] = x[index[i]]``) if ``q`` is within
    :data:`PERMUTATION_RADIUS` of a permutation other than the identity, else ``("identity", None)``."""
    n = q.shape[0]
    index = q.abs().argmax(1)
    if torch.equal(index, torch.arange(n, device=q.device)) or len(set(index.tolist())) != n:
        return "identity", None
    perm = torch.eye(n, dtype=q.dtype, device=q.device)[index]
    if float(torch.linalg.norm(q - perm)) > PERMUTATION_RADIUS * math.sqrt(n):
        return "identity", None
    return "permutation", index


def snap_view(ctx: LayerContext) -> CoreView | None:
    """The layer with K and M projected: the DFT pair, with the permutations near learned factors
    peeled off around it (None for a relaxed pooling, whose per-position divisor no form has)."""
    xd = ctx.layer
    if not isinstance(xd, XDConv) or xd.out_scale is not None:
        return None
    if not len(xd.M) and not len(xd.K):
        return CoreView(xd)
    with torch.no_grad():
        kinds_m = [nearest_permutation(q.dense()) for q in xd.M]
        kinds_k = [nearest_permutation(q.dense()) for q in xd.K]
    if all(kind == "identity" for kind, _ in kinds_m + kinds_k):
        return CoreView(without_factors(xd), ", K and M taken as the DFT")
    twin = without_factors(xd)
    plain_k = all(kind == "identity" for kind, _ in kinds_k)
    twin.geometry = tuple(_buffer_geometry(xd, ctx.sizes, outputs_full=not plain_k))
    twin.out_scale = None
    return CoreView(twin, "", lambda core: _wrap_permutations(xd, ctx.sizes, kinds_m, kinds_k, core))


# ---------------------------------------------------------------- k taps with a dilation
def _axis_taps(energy: torch.Tensor, fraction: float) -> tuple[int, int, int] | None:
    """``(start, k, dilation)``: the fewest taps ``start + j * dilation`` (circularly) holding
    ``fraction`` of ``energy`` (a length-n profile); ties go to the smaller dilation."""
    n = energy.numel()
    need = fraction * float(energy.sum()) * (1 - 1e-12)
    best = None
    for dil in DILATIONS:
        taps = min((n - 1) // dil + 1, MAX_TAPS)
        if dil > 1 and taps < 2:
            continue
        index = (torch.arange(n)[:, None] + dil * torch.arange(taps)[None]) % n
        top, start = energy[index].cumsum(1).max(0)
        ok = torch.nonzero(top >= need).flatten()
        if ok.numel() and (best is None or int(ok[0]) + 1 < best[1]):
            k = int(ok[0]) + 1
            best = (int(start[k - 1]), k, dil)
    return best


def snap_taps(kernel: torch.Tensor, fraction: float) -> tuple[list[tuple[int, int, int]], float] | None:
    """Per axis ``(start, k, dilation)`` of a box of taps holding ``fraction`` of the energy of
    ``kernel`` ``(C_out, C_in/g, *n)`` (each axis chosen on its marginal energy, tightened until
    the box holds enough), and the fraction it holds; None if that takes more than
    :data:`MAX_TAPS` per axis."""
    energy = kernel.detach().double().pow(2).sum((0, 1))
    total = float(energy.sum())
    d = energy.dim()
    marginals = [energy.sum(tuple(j for j in range(d) if j != i)) if d > 1 else energy for i in range(d)]  # sum(()) sums all
    for attempt in range(12):
        target = 1 - (1 - fraction) / 2**attempt
        box = [_axis_taps(m, target) for m in marginals]
        if any(b is None for b in box):
            return None
        index = [torch.tensor([(a + j * dil) % m.numel() for j in range(k)]) for (a, k, dil), m in zip(box, marginals)]
        kept = float(energy[torch.meshgrid(*index, indexing="ij")].sum()) / total
        if kept >= fraction * (1 - 1e-12):
            return box, kept
    return None


def _nearest_offset(start: int, k: int, dil: int, g) -> int:
    """The offset ``start - j n`` whose taps read the input closest to each output (a circular
    arc through position 0 becomes negative offsets: a conv padded more on the left)."""
    centre = start + (k - 1) * dil / 2 - (0 if g.prepad else g.pad[0])
    return start - g.n * round(centre / g.n)


def snapped_conv_candidates(ctx: LayerContext) -> list[Candidate]:
    """The conv on the fewest taps (with a dilation) that keep ``ctx.energy`` of the kernel."""
    view = snap_view(ctx)
    if view is None:
        return []
    xd = view.layer
    kernel = ctx.kernel()
    if not float(kernel.abs().max()):
        return []  # nothing to keep: the zero form is exact
    found = snap_taps(kernel, ctx.energy)
    if found is None:
        return []
    box, kept = found
    index = [torch.tensor([(a + j * dil) % g.n for j in range(k)], device=kernel.device)
             for (a, k, dil), g in zip(box, xd.geometry)]
    offsets = [_nearest_offset(a, k, dil, g) for (a, k, dil), g in zip(box, xd.geometry)]
    bias = xd.bias if xd.bias is not None else ctx.bias
    module, detail = conv_from_taps(xd, kernel, offsets, [dil for _, _, dil in box], index, bias)
    cin, cout, g = xd.in_channels, xd.out_channels, xd.groups
    flops = 2.0 * cout * (cin // g) * math.prod(k for _, k, _ in box) * math.prod(out_sizes(xd.geometry, ctx.sizes))
    cand = Candidate("snapped_conv", module, flops, f"{detail}, kept {kept:.2%} of the kernel energy{view.note}")
    cand = view.wrap(cand) if view.wrap else cand
    cand.lost = max(0.0, 1.0 - kept)
    return [cand]


# ---------------------------------------------------------------- m lowest modes
def output_energy(ctx: LayerContext, xd: XDConv) -> torch.Tensor:
    """Per frequency ``(*freq)`` of the real FFT: the output energy ``sum_{o,i} |L w[o,i]|^2 |X_i|^2``
    on the probe inputs (mean over the batch; the mirrored half of the spectrum counted)."""
    ns = [g.n for g in xd.geometry]
    dims = tuple(range(2, 2 + len(ns)))
    power = sum(torch.fft.rfftn(xd.pad_input(x).double(), s=ns, dim=dims).abs().pow(2).mean(0) for x in ctx.probes)
    g = xd.groups
    cin, cout = xd.in_channels // g, xd.out_channels // g
    freq = ctx.spectrum.shape[2:]
    gain = ctx.spectrum.detach().abs().double().pow(2).reshape(g, cout, cin, *freq)
    energy = (gain * power.reshape(g, 1, cin, *freq)).sum((0, 1, 2))
    mirror = torch.ones(freq[-1], dtype=energy.dtype)
    mirror[1:(ns[-1] + 1) // 2] = 2.0
    return energy * mirror


def _mode_energy(energy: torch.Tensor, ns: list[int], modes: int) -> float:
    index = [kept_frequencies(n, modes, i == len(ns) - 1) for i, n in enumerate(ns)]
    return float(energy[torch.meshgrid(*index, indexing="ij")].sum())


def snapped_spectral_candidates(ctx: LayerContext) -> list[Candidate]:
    """The FNO-style layer on the fewest low modes that keep ``ctx.energy`` of the output energy
    (where K and M snap to the plain DFT pair; never all modes, which is the ``fft`` form)."""
    view = snap_view(ctx)
    if view is None or view.wrap is not None:
        return []
    xd = view.layer
    ns = [g.n for g in xd.geometry]
    energy = output_energy(ctx, xd)
    total = float(energy.sum())
    if not total:
        return []
    lo, hi = 1, max(n // 2 + 1 for n in ns)
    while lo < hi:  # the kept boxes are nested, so the kept energy grows with m
        mid = (lo + hi) // 2
        if _mode_energy(energy, ns, mid) >= ctx.energy * total * (1 - 1e-12):
            hi = mid
        else:
            lo = mid + 1
    modes, kept = lo, _mode_energy(energy, ns, lo) / total
    if _kept(ns, modes) == [*ns[:-1], ns[-1] // 2 + 1]:
        return []
    method, transform = _dft_method(xd, ctx.sizes, _kept(ns, modes))
    mix = 8.0 * xd.out_channels * (xd.in_channels // xd.groups) * math.prod(_kept(ns, modes))
    bias = xd.bias if xd.bias is not None else ctx.bias
    module = SpectralConv(ctx.spectrum, [modes] * len(ns), xd.geometry, groups=xd.groups, bias=bias, method=method)
    detail = (f"modes={modes} ({'matmul DFT' if method == 'matmul' else 'FFT'}), kept {kept:.2%} of the output "
              f"energy{view.note}")
    return [Candidate("snapped_spectral", module, transform + mix, detail, lost=max(0.0, 1.0 - kept))]
