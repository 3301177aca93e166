"""Snapped harden forms ("discretize, then retrain"): an XD layer projected onto its nearest cheap
form, accepted beyond ``tol``, to be fine-tuned afterwards (:func:`xdfx.finetune`).

K and M go to the DFT pair, or to a permutation composed with it where a learned factor is close
to one; ``L w`` is refit to the diagonal of the layer in the DFT basis, which makes the circular
convolution nearest to the layer (in Frobenius norm, so for any stationary input). That ``L w`` then
goes to ``k`` taps with a dilation here, or to the ``m`` lowest modes (with or without the conv's
own taps: :mod:`.harden_snap_modes`), each the projection that keeps the
most *output* energy on the layer's probe inputs (``sum_f |X(f)|^2 |L w(f) - v(f)|^2`` is least:
truncation for modes, weighted least squares for taps), with ``k`` and ``m`` the smallest that keep
the fraction ``ctx.energy`` of it. The output energy dropped is the candidate's ``lost``; its
measured error is all that the projection changed on the probes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..ops import XDConv
from .harden_context import (Candidate, CoreView, LayerContext, _buffer_geometry, _wrap_permutations, out_sizes,
                             without_factors)
from .harden_conv import conv_from_taps

#: Dilations a snapped conv may take (and the dilation of the conv the layer was relaxed from).
DILATIONS = (1, 2, 4)
#: Search grows every kernel to full length, and the taps it did not need stay at a floor of small
#: broadband values: taps are ranked by their energy above this multiple of the median tap's, so
#: that the noise does not decide where the kept taps lie (``lost`` still counts what it carried).
NOISE_FLOOR = 10.0
#: Kept-energy targets (of the energy above the floor) whose boxes of taps are tried, ascending.
TAP_TARGETS = tuple(1 - 0.5 * 0.7**j for j in range(64))
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


@dataclass
class Snap:
    """The layer with K and M projected (a core view), its refit ``L w`` ``(C_out, C_in/g, *freq)``
    and the probe inputs as that core sees them."""

    view: CoreView
    spectrum: torch.Tensor
    inputs: list[torch.Tensor]

    def kernel(self) -> torch.Tensor:
        ns = [g.n for g in self.view.layer.geometry]
        return torch.fft.irfftn(self.spectrum.conj(), s=ns, dim=tuple(range(2, 2 + len(ns))))

    def input_power(self) -> torch.Tensor:
        """``|X_i(f)|^2`` per input channel and frequency of the real FFT ``(C_in, *freq)``, mean
        over the probes, the mirrored half of the spectrum counted."""
        ns = [g.n for g in self.view.layer.geometry]
        dims = tuple(range(2, 2 + len(ns)))
        spectra = (torch.fft.rfftn(x.detach().cpu().double(), s=ns, dim=dims) for x in self.inputs)
        power = sum(xf.abs().pow(2).mean(0) for xf in spectra)
        mirror = torch.ones(ns[-1] // 2 + 1, dtype=power.dtype)
        mirror[1:(ns[-1] + 1) // 2] = 2.0
        return power * mirror


def snap_layer(ctx: LayerContext) -> Snap | None:
    """The layer with K and M projected onto the DFT pair (with the permutations near learned
    factors peeled off around it) and ``L w`` refit; None for a relaxed pooling, whose
    per-position divisor no snapped form has. Computed once per layer."""
    if "snap" not in ctx.cache:
        ctx.cache["snap"] = _snap_layer(ctx)
    return ctx.cache["snap"]


def _snap_layer(ctx: LayerContext) -> Snap | None:
    xd = ctx.layer
    if not isinstance(xd, XDConv) or xd.out_scale is not None:
        return None
    inputs = [xd.pad_input(x) for x in ctx.probes]
    if not len(xd.M) and not len(xd.K):
        return Snap(CoreView(xd), ctx.spectrum, inputs)
    with torch.no_grad():
        kinds_m = [nearest_permutation(q.dense()) for q in xd.M]
        kinds_k = [nearest_permutation(q.dense()) for q in xd.K]
        spectrum = refit_spectrum(xd, ctx.spectrum, kinds_m, kinds_k)
    if all(kind == "identity" for kind, _ in kinds_m + kinds_k):
        return Snap(CoreView(without_factors(xd), ", K and M taken as the DFT"), spectrum, inputs)
    twin = without_factors(xd)
    plain_k = all(kind == "identity" for kind, _ in kinds_k)
    twin.geometry = tuple(_buffer_geometry(xd, ctx.sizes, outputs_full=not plain_k))
    twin.out_scale = None
    for i, (kind, index) in enumerate(kinds_m):  # the core sees the buffer with M's permutation applied
        if kind == "permutation":
            inputs = [xd.extend(x).index_select(2 + i, index.to(x.device)) for x in inputs]
    view = CoreView(twin, "", lambda core: _wrap_permutations(xd, ctx.sizes, kinds_m, kinds_k, core))
    return Snap(view, spectrum, inputs)


def _in_dft_basis(q: torch.Tensor) -> torch.Tensor:
    """``F q F^-1`` of a real ``n x n`` matrix (complex128), by FFTs."""
    return torch.fft.fft(torch.fft.ifft(q.to(torch.complex128), dim=1), dim=0)


def refit_spectrum(xd: XDConv, spectrum: torch.Tensor, kinds_m: list, kinds_k: list) -> torch.Tensor:
    """``L w`` of the circular convolution nearest to ``Q_K F^-1 diag(L w) F Q_M`` per axis (the
    permutations ``P`` of ``kinds_*`` kept: then nearest to ``P_K^T Q_K ... Q_M P_M^T``).

    In the DFT basis the layer is ``A diag(v) B`` with ``A = F Q_K F^-1`` and ``B = F Q_M F^-1``; the
    nearest diagonal is its diagonal, ``v'[f] = sum_g A[f, g] B[g, f] v[g]``, one matrix per axis
    on the full (two-sided) spectrum ``v``.
    """
    ns = [g.n for g in xd.geometry]
    dims = tuple(range(2, 2 + len(ns)))
    kernel = torch.fft.irfftn(spectrum.detach().cpu().to(torch.complex128).conj(), s=ns, dim=dims)
    full = torch.fft.fftn(kernel, dim=dims).conj()
    for i, n in enumerate(ns):
        r_m = xd.M[i].dense().detach().cpu().double() if len(xd.M) else torch.eye(n, dtype=torch.float64)
        r_k = xd.K[i].dense().detach().cpu().double() if len(xd.K) else torch.eye(n, dtype=torch.float64)
        if len(xd.M) and kinds_m[i][0] == "permutation":
            r_m = r_m[:, kinds_m[i][1].cpu()]  # Q_M P^T, for P x = x[index]
        if len(xd.K) and kinds_k[i][0] == "permutation":
            r_k = r_k[torch.argsort(kinds_k[i][1].cpu())]  # P^T Q_K
        weights = _in_dft_basis(r_k) * _in_dft_basis(r_m).T
        full = torch.movedim(torch.tensordot(full, weights, dims=([2 + i], [1])), -1, 2 + i)
    return full[..., : ns[-1] // 2 + 1].to(spectrum.device, spectrum.dtype)


# ---------------------------------------------------------------- k taps with a dilation
def _axis_taps(energy: torch.Tensor, fraction: float, dilations: Sequence[int]) -> tuple[int, int, int] | None:
    """``(start, k, dilation)``: the fewest taps ``start + j * dilation`` (circularly) holding
    ``fraction`` of ``energy`` (a length-n profile); ties go to the smaller dilation."""
    n = energy.numel()
    need = fraction * float(energy.sum()) * (1 - 1e-12)
    best = None
    for dil in dilations:
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


def _above_floor(energy: torch.Tensor) -> torch.Tensor:
    return (energy - NOISE_FLOOR * energy.median()).clamp_min(0)


def axis_marginals(kernel: torch.Tensor) -> list[torch.Tensor]:
    """Per spatial axis, the kernel's energy summed over channels and the other axes."""
    energy = kernel.detach().cpu().double().pow(2).sum((0, 1))
    d = energy.dim()
    # sum(()) would sum every axis
    return [energy.sum(tuple(j for j in range(d) if j != i)) if d > 1 else energy for i in range(d)]


def tap_boxes(kernel: torch.Tensor, dilations: Sequence[Sequence[int]]) -> list[list[tuple[int, int, int]]]:
    """Growing boxes of taps, per axis ``(start, k, dilation)``: for each of :data:`TAP_TARGETS`
    the fewest taps per axis holding that fraction of the axis' marginal energy above the floor,
    then, larger still, of its whole energy (reaching into the floor); up to :data:`MAX_TAPS` per axis."""
    marginals = axis_marginals(kernel)
    boxes: list[list[tuple[int, int, int]]] = []
    for profiles in ([_above_floor(m) for m in marginals], marginals):
        for target in TAP_TARGETS:
            box = [_axis_taps(m, target, dils) for m, dils in zip(profiles, dilations)]
            if any(b is None for b in box):
                break
            if not boxes or (box != boxes[-1] and all(b[1] >= last[1] for b, last in zip(box, boxes[-1]))):
                boxes.append(box)
    return boxes


def fit_taps(spectrum: torch.Tensor, power: torch.Tensor, box: list[tuple[int, int, int]], ns: Sequence[int],
             groups: int) -> tuple[torch.Tensor, float]:
    """Real taps on ``box`` whose ``L w`` is nearest ``spectrum`` weighted by the input ``power``
    (least squares per channel pair), and the fraction of the output energy they leave out."""
    positions = [torch.tensor([(a + j * dil) % n for j in range(k)], dtype=torch.float64)
                 for (a, k, dil), n in zip(box, ns)]
    freqs = [torch.arange(n, dtype=torch.float64) if i < len(ns) - 1 else torch.arange(n // 2 + 1, dtype=torch.float64)
             for i, n in enumerate(ns)]
    phase = 0
    for i, (f, u, n) in enumerate(zip(freqs, positions, ns)):  # a unit tap at u has L w(f) = exp(2 pi i f u / n)
        shape_f, shape_u = [1] * len(ns), [1] * len(ns)
        shape_f[i], shape_u[i] = -1, -1
        phase = phase + (2 * math.pi / n) * f.reshape(*shape_f, *[1] * len(ns)) * u.reshape(*[1] * len(ns), *shape_u)
    basis = torch.polar(torch.ones_like(phase), phase).reshape(math.prod(len(f) for f in freqs), -1)  # (F, K)
    cout, cin = spectrum.shape[0] // groups, spectrum.shape[1]
    target = spectrum.detach().cpu().to(torch.complex128).reshape(groups, cout, cin, -1)  # (g, o, i, F)
    weight = power.reshape(groups, cin, -1)
    weight = weight + 1e-9 * weight.mean() + 1e-300  # a channel the probes never excite: plain truncation
    gram = torch.einsum("gif,fk,fl->gikl", weight.to(basis.dtype), basis.conj(), basis).real
    rhs = torch.einsum("gif,fk,goif->goik", weight.to(basis.dtype), basis.conj(), target).real
    # gram is symmetric positive definite; batched LU (linalg.solve) fails in MKL's DLASWP with 2 threads
    taps = torch.cholesky_solve(rhs[..., None], torch.linalg.cholesky(gram)[:, None])[..., 0]  # (g, o, i, K)
    residual = target - torch.einsum("fk,goik->goif", basis.to(target.dtype), taps.to(target.dtype))
    total = float((weight[:, None] * target.abs().pow(2)).sum())
    lost = float((weight[:, None] * residual.abs().pow(2)).sum()) / total if total else 0.0
    return taps.reshape(groups * cout, cin, *(k for _, k, _ in box)), lost


def _nearest_offset(start: int, k: int, dil: int, g) -> int:
    """The offset ``start - j n`` whose taps read the input closest to each output (a circular
    arc through position 0 becomes negative offsets: a conv padded more on the left)."""
    centre = start + (k - 1) * dil / 2 - (0 if g.prepad else g.pad[0])
    return start - g.n * round(centre / g.n)


def conv_on_box(xd: XDConv, ctx: LayerContext, kernel: torch.Tensor, box: list[tuple[int, int, int]],
                 index: list[torch.Tensor]) -> tuple[torch.nn.Module, str] | None:
    """The conv (with the layer's bias) whose taps are ``kernel`` on ``box``, or None."""
    bias = xd.bias if xd.bias is not None else ctx.bias
    found = None
    for nearest in (True, False):  # the taps centred like the conv's, else read in place
        offsets = [_nearest_offset(a, k, dil, g) if nearest else a for (a, k, dil), g in zip(box, xd.geometry)]
        found = found or conv_from_taps(xd, kernel, offsets, [dil for _, _, dil in box], index, bias)
    return found


def box_flops(xd: XDConv, ctx: LayerContext, box: list[tuple[int, int, int]]) -> float:
    """FLOPs of the conv on ``box``'s taps."""
    taps = math.prod(k for _, k, _ in box)
    return 2.0 * xd.out_channels * (xd.in_channels // xd.groups) * taps * math.prod(out_sizes(xd.geometry, ctx.sizes))


def snapped_conv_candidates(ctx: LayerContext) -> list[Candidate]:
    """The conv on the fewest taps (with a dilation) that keep ``ctx.energy`` of the output energy."""
    snap = snap_layer(ctx)
    if snap is None:
        return []
    view, xd = snap.view, snap.view.layer
    ns = [g.n for g in xd.geometry]
    kernel = snap.kernel()
    if not float(kernel.abs().max()):
        return []  # nothing to keep: the zero form is exact
    boxes = tap_boxes(kernel, [sorted({*DILATIONS, g.dilation}) for g in ctx.layer.geometry])
    power = snap.input_power()
    lo, hi, found = 0, len(boxes) - 1, None
    while lo <= hi:  # the boxes grow, so the output energy they keep grows
        mid = (lo + hi) // 2
        taps, lost = fit_taps(snap.spectrum, power, boxes[mid], ns, xd.groups)
        if lost <= (1 - ctx.energy) * (1 + 1e-9):
            found, hi = (boxes[mid], taps, lost), mid - 1
        else:
            lo = mid + 1
    if found is None:
        return []
    box, taps, lost = found
    index = [torch.tensor([(a + j * dil) % g.n for j in range(k)], device=kernel.device)
             for (a, k, dil), g in zip(box, xd.geometry)]
    full = kernel.new_zeros(kernel.shape)
    full[(slice(None), slice(None), *torch.meshgrid(*index, indexing="ij"))] = taps.to(full)
    found = conv_on_box(xd, ctx, full, box, index)
    if found is None:
        return []
    module, detail = found
    flops = box_flops(xd, ctx, box)
    cand = Candidate("snapped_conv", module, flops, f"{detail}, kept {1 - lost:.2%} of the output energy{view.note}")
    cand = view.wrap(cand) if view.wrap else cand
    cand.lost = max(0.0, lost)
    return [cand]
