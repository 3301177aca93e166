"""Snapped forms on the lowest modes (see :mod:`.harden_snap` for the projection): every mode of
the refit ``L w`` (``snapped_fft``), the fewest low modes (``snapped_spectral``), or the conv's own
taps plus the fewest low modes of what they leave (``snapped_local_modes``); with ``harden(fill=True)``
under a speed target, also the most modes it affords."""

from __future__ import annotations

from typing import Callable

import torch

from ..ops import LocalPlusModes
from ..ops.spectral import SpectralConv, kept_frequencies
from .harden_context import Candidate, LayerContext, xd_flops
from .harden_snap import axis_marginals, box_flops, conv_on_box, fit_taps, snap_layer
from .harden_spectral import _dft_method, _kept, method_efficiency, mix_flops


# ---------------------------------------------------------------- m lowest modes
def _mode_energy(energy: torch.Tensor, ns: list[int], modes: int) -> float:
    index = [kept_frequencies(n, modes, i == len(ns) - 1) for i, n in enumerate(ns)]
    return float(energy[torch.meshgrid(*index, indexing="ij")].sum())


def _fewest_modes(ns: list[int], enough: Callable[[int], bool]) -> int:
    """The fewest modes ``m`` for which ``enough(m)`` holds (it must grow with ``m``: the kept boxes
    are nested), by bisection; the most modes there are if none is enough."""
    lo, hi = 1, max(n // 2 + 1 for n in ns)
    while lo < hi:
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _output_energy(spectrum: torch.Tensor, power: torch.Tensor, groups: int) -> torch.Tensor:
    """Output energy per frequency of the layer with ``L w = spectrum`` on inputs of ``power``."""
    cout, cin = spectrum.shape[0] // groups, spectrum.shape[1]
    freq = spectrum.shape[2:]
    gain = spectrum.detach().cpu().abs().double().pow(2).reshape(groups, cout, cin, *freq)
    return (gain * power.reshape(groups, 1, cin, *freq)).sum((0, 1, 2))


def snapped_fft_candidates(ctx: LayerContext) -> list[Candidate]:
    """K and M projected onto the DFT pair, every mode of the refit ``L w`` kept (real FFTs): the
    most accurate snapped form, chosen where a speed target affords it. Only for layers whose K
    or M was learned (otherwise it is the ``fft`` form)."""
    snap = snap_layer(ctx)
    if snap is None or snap.view.wrap is not None or (not len(ctx.layer.M) and not len(ctx.layer.K)):
        return []
    xd = snap.view.layer
    ns = [g.n for g in xd.geometry]
    bias = xd.bias if xd.bias is not None else ctx.bias
    module = SpectralConv(snap.spectrum, ns, xd.geometry, groups=xd.groups, bias=bias, method="fft")
    return [Candidate("snapped_fft", module, xd_flops(xd, with_kernel_fft=False),
                      f"all modes (FFT){snap.view.note}", lost=0.0)]


def snapped_spectral_candidates(ctx: LayerContext) -> list[Candidate]:
    """The FNO-style layer on the fewest low modes that keep ``ctx.energy`` of the output energy
    (where K and M snap to the plain DFT pair; never all modes, which is the ``fft`` form)."""
    snap = snap_layer(ctx)
    if snap is None or snap.view.wrap is not None:
        return []
    view, xd = snap.view, snap.view.layer
    ns = [g.n for g in xd.geometry]
    energy = _output_energy(snap.spectrum, snap.input_power(), xd.groups)  # output energy per mode
    total = float(energy.sum())
    if not total:
        return []
    modes = _fewest_modes(ns, lambda m: _mode_energy(energy, ns, m) >= ctx.energy * total * (1 - 1e-12))
    bias = xd.bias if xd.bias is not None else ctx.bias

    def make(m: int) -> Candidate | None:
        if _kept(ns, m) == [*ns[:-1], ns[-1] // 2 + 1]:
            return None  # every mode: the fft form
        kept = _mode_energy(energy, ns, m) / total
        method, transform = _dft_method(xd, ctx.sizes, _kept(ns, m))
        mix = mix_flops(xd, _kept(ns, m))
        module = SpectralConv(snap.spectrum, [m] * len(ns), xd.geometry, groups=xd.groups, bias=bias, method=method)
        detail = (f"modes={m} ({'matmul DFT' if method == 'matmul' else 'FFT'}), kept {kept:.2%} of the output "
                  f"energy{view.note}")
        return Candidate("snapped_spectral", module, transform + mix, detail, lost=max(0.0, 1.0 - kept),
                         efficiency=method_efficiency(method, len(ns)))

    return _filling_the_target(ctx, ns, modes, make)


#: A projection losing at most this fraction of the output energy is exact: more modes add nothing.
EXACT_LOSS = 1e-9


def _most_modes(ns: list[int], fewest: int, fits: Callable[[int], bool]) -> int:
    """The most modes ``m >= fewest`` for which ``fits(m)`` holds (it must hold at ``fewest`` and
    fail from some ``m`` on: a form's price grows with its modes), by bisection."""
    lo, hi = fewest, max(n // 2 + 1 for n in ns)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _filling_the_target(ctx: LayerContext, ns: list[int], modes: int,
                        make: Callable[[int], Candidate | None]) -> list[Candidate]:
    """The form on ``modes`` (the fewest keeping ``ctx.energy``) and, with ``harden(fill=True)`` under a
    speed target it meets, the same form on the most modes the target affords: the more modes, the
    less the projection loses (unless it loses nothing already)."""
    built: dict[int, Candidate | None] = {}  # the candidate returned is the one priced (a measured price varies)

    def build(m: int) -> Candidate | None:
        if m not in built:
            built[m] = make(m)
        return built[m]

    first = build(modes)
    if first is None:
        return []
    if ctx.fits is None or not ctx.fits(first) or (first.lost or 0.0) <= EXACT_LOSS:
        return [first]
    top = _most_modes(ns, modes, lambda m: (c := build(m)) is not None and ctx.fits(c))
    return [first] if top == modes else [first, built[top]]


# ---------------------------------------------------------------- the conv's taps plus low modes
def _own_box(kernel: torch.Tensor, geometry) -> list[tuple[int, int, int]]:
    """Per axis ``(start, k, dilation)``: the conv's own taps and dilation, placed where the
    kernel's marginal energy is largest."""
    box = []
    for marginal, g in zip(axis_marginals(kernel), geometry):
        n = marginal.numel()
        k = min(g.kernel, (n - 1) // g.dilation + 1)
        index = (torch.arange(n)[:, None] + g.dilation * torch.arange(k)[None]) % n
        box.append((int(marginal[index].sum(1).argmax()), k, g.dilation))
    return box


def snapped_local_modes_candidates(ctx: LayerContext) -> list[Candidate]:
    """The conv's own taps (k x dilation) plus the fewest low modes, keeping ``ctx.energy`` of the
    output energy: an FNO layer's local and Fourier paths. The modes are free at their frequencies,
    so the joint least-squares fit takes the taps from the other frequencies and the modes from what
    the taps leave. A searched kernel that grew a global part around its stencil needs both: modes
    alone lose the stencil's high frequencies, taps alone the global part."""
    snap = snap_layer(ctx)
    if snap is None or snap.view.wrap is not None:
        return []
    view, xd = snap.view, snap.view.layer
    ns = [g.n for g in xd.geometry]
    dims = tuple(range(2, 2 + len(ns)))
    kernel = snap.kernel()
    power = snap.input_power()
    box = _own_box(kernel, ctx.layer.geometry)
    index = [torch.tensor([(a + j * dil) % n for j in range(k)], device=kernel.device)
             for (a, k, dil), n in zip(box, ns)]
    total = float(_output_energy(snap.spectrum, power, xd.groups).sum())
    budget = (1 - ctx.energy) * total  # output energy the projection may drop

    def fit(modes: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Taps fit outside the ``modes`` kept frequencies, the rest of the spectrum, the energy dropped."""
        outside = torch.ones(power.shape[1:], dtype=power.dtype)
        if modes:
            outside[torch.meshgrid(*[kept_frequencies(n, modes, i == len(ns) - 1) for i, n in enumerate(ns)],
                                   indexing="ij")] = 0
        taps, _ = fit_taps(snap.spectrum, power * outside, box, ns, xd.groups)
        local = kernel.new_zeros(kernel.shape)
        local[(slice(None), slice(None), *torch.meshgrid(*index, indexing="ij"))] = taps.to(local)
        rest = snap.spectrum - torch.fft.rfftn(local, dim=dims).conj().to(snap.spectrum)
        return local, rest, float((_output_energy(rest, power, xd.groups) * outside).sum())

    if not total or fit(0)[2] <= budget:
        return []  # the taps alone keep it: the snapped_conv form
    # more free frequencies never fit worse
    modes = _fewest_modes(ns, lambda m: fit(m)[2] <= budget * (1 + 1e-9))

    def make(m: int) -> Candidate | None:
        if _kept(ns, m) == [*ns[:-1], ns[-1] // 2 + 1]:
            return None
        local, rest, dropped = fit(m)
        lost = dropped / total
        found = conv_on_box(xd, ctx, local, box, index)
        if found is None:
            return None
        conv, conv_detail = found
        method, transform = _dft_method(xd, ctx.sizes, _kept(ns, m))
        g = xd.groups
        spectral = SpectralConv(rest, [m] * len(ns), xd.geometry, groups=g, bias=None, method=method)
        conv_flops = box_flops(xd, ctx, box)
        mode_flops = transform + mix_flops(xd, _kept(ns, m))
        efficiency = (conv_flops + method_efficiency(method, len(ns)) * mode_flops) / (conv_flops + mode_flops)
        detail = (f"{conv_detail} + modes={m} ({'matmul DFT' if method == 'matmul' else 'FFT'}), kept {1 - lost:.2%} "
                  f"of the output energy{view.note}")
        return Candidate("snapped_local_modes", LocalPlusModes(conv, spectral), conv_flops + mode_flops, detail,
                         lost=max(0.0, lost), efficiency=efficiency, paths=2)

    return _filling_the_target(ctx, ns, modes, make)
