"""Every form :func:`xdfx.harden` can turn an XD layer into, with its cost model, in one table.

Each row names the form, the layers it applies to (``"xd"`` grid convolutions, ``"graph"``
graph convolutions), the builder of its candidates, and its *efficiency*: estimated time per FLOP
relative to a direct convolution on CPU (``benchmarks/bench_forms.py`` measures the frequency forms;
a spectral candidate carries its own, by how it transforms).
Every candidate is measured on the layer's probe inputs; the cheapest one within ``tol`` wins,
ties going to the earlier row. A form that runs through transforms (efficiency other than 1) must
be cheaper than a direct form by ``TRANSFORM_MARGIN`` to win over it: its efficiency is a measured
median that moves 10-20% between runs, and the direct form gives the user's own op back.
Adding a form is adding a row and its builder.

A row's *role* says how it competes: ``"exact"`` forms must be within ``tol``; ``"fallback"`` forms
(every mode, or the frozen layer) are exact but no cheaper than the relaxed layer; ``"snapped"``
forms project the layer onto a cheap form and are accepted beyond ``tol``, to be fine-tuned:
``snap="auto"`` takes the cheapest of them where a fallback (or nothing) was within ``tol``,
``snap="always"`` lets them compete on cost with the exact forms, ``snap="never"`` leaves them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .passes.harden_context import Candidate, LayerContext
from .passes.harden_conv import conv_candidates
from .passes.harden_graph import frozen_graph_candidates, graph_polynomial_candidates
from .passes.harden_restore import conv_function_candidates, identity_candidates, pool_candidates, zero_candidates
from .passes.harden_snap import snapped_conv_candidates
from .passes.harden_snap_modes import (snapped_fft_candidates, snapped_local_modes_candidates,
                                       snapped_spectral_candidates)
from .passes.harden_spectral import fft_candidates, frozen_candidates, spectral_candidates

#: ``harden(snap=...)`` values.
SNAP_MODES = ("auto", "always", "never")
#: how much cheaper a transform-based form must be to win over a direct one (see the docstring)
TRANSFORM_MARGIN = 1.25
#: The fixed time of one more branch in a form (a few small ops), in direct-conv FLOPs per call:
#: benchmarks/bench_forms.py's one-mode spectral layer on small 1-d layers, CPU, 1 and 2 threads.
PATH_OVERHEAD = 1.0e7


@dataclass(frozen=True)
class Form:
    """One row: a form, where it applies, how its candidates are built, and what a FLOP costs."""

    name: str
    applies_to: tuple[str, ...]
    build: Callable[[LayerContext], list[Candidate]]
    efficiency: float
    summary: str
    role: str = "exact"  # "exact", "fallback" or "snapped" (see the module docstring)


FORMS: tuple[Form, ...] = (
    Form("zero", ("xd",), zero_candidates, 1.0, "the layer outputs its bias only"),
    Form("identity", ("xd",), identity_candidates, 1.0, "the layer passes its input through"),
    Form("pool", ("xd",), pool_candidates, 1.0, "the average pooling it was relaxed from"),
    Form("conv_function", ("xd",), conv_function_candidates, 1.0, "the functional conv it was relaxed from"),
    Form("conv", ("xd",), conv_candidates, 1.0,
         "nn.Conv*d, kernel/dilation/stride/padding recovered from the circulant's support"),
    Form("graph_polynomial", ("graph",), graph_polynomial_candidates, 1.0,
         "sum_j p_j(A) h W_j (powers or Chebyshev polynomials of A): message passing over the graph's edges"),
    Form("spectral", ("xd",), spectral_candidates, 2.8,
         "FNO-style: per-frequency channel mixing on the fewest low modes within tol"),
    Form("fft", ("xd",), fft_candidates, 2.6, "every mode, through real FFTs", "fallback"),
    Form("frozen", ("xd", "graph"), lambda ctx: frozen_candidates(ctx) if ctx.is_grid else frozen_graph_candidates(ctx), 4.5, "the XD layer with its learned transforms frozen and L w precomputed", "fallback"),
    Form("snapped_conv", ("xd",), snapped_conv_candidates, 1.0,
         "K, M snapped to the DFT (or a permutation and the DFT), L w to the fewest taps x dilation keeping "
         "the energy fraction", "snapped"),
    Form("snapped_fft", ("xd",), snapped_fft_candidates, 2.5,
         "K, M snapped to the DFT, every mode of the refit L w kept (real FFTs)", "snapped"),
    Form("snapped_spectral", ("xd",), snapped_spectral_candidates, 2.8,
         "K, M snapped to the DFT, L w to the fewest low modes keeping the energy fraction of the output (or "
         "with fill=True the most a speed target affords)", "snapped"),
    Form("snapped_local_modes", ("xd",), snapped_local_modes_candidates, 2.8,
         "K, M snapped to the DFT, L w to the conv's own taps plus the fewest low modes of the rest (FNO's local "
         "and Fourier paths)", "snapped"),
)
FORM_BY_NAME = {f.name: f for f in FORMS}


def cost(candidate: Candidate, batch: int | None = None) -> float:
    """Estimated time of a candidate per sample, in direct-conv FLOP units; with the ``batch`` it runs
    at, each branch beyond the first adds ``PATH_OVERHEAD`` per call (what a small layer pays)."""
    flops = candidate.flops * (candidate.efficiency or FORM_BY_NAME[candidate.form].efficiency)
    return flops + (candidate.paths - 1) * PATH_OVERHEAD / batch if batch else flops


def candidates(ctx: LayerContext, snapped: bool = False) -> list[Candidate]:
    """Every candidate of every exact and fallback form that applies to the layer (``snapped``:
    of every snapped form instead)."""
    kind = "xd" if ctx.is_grid else "graph"
    return [c for form in FORMS if kind in form.applies_to and (form.role == "snapped") == snapped
            for c in form.build(ctx)]


def _margin(candidate: Candidate) -> float:
    """``TRANSFORM_MARGIN`` for a transform-based candidate, 1 for a direct one (ranking only)."""
    direct = (candidate.efficiency or FORM_BY_NAME[candidate.form].efficiency) == 1.0
    return 1.0 if direct else TRANSFORM_MARGIN


def wants_snap(chosen: Candidate, tol: float, limit: float | None = None,
               cost_of: Callable[[Candidate], float] = cost) -> bool:
    """Whether ``snap="auto"`` looks for a snapped form: nothing is within ``tol``, or the form
    chosen costs more than ``limit`` (without a limit: the form chosen is a fallback)."""
    if chosen.error > tol:
        return True
    if limit is None:
        return FORM_BY_NAME[chosen.form].role == "fallback"
    return cost_of(chosen) > limit


def choose(cands: list[Candidate], tol: float, snap: str = "never", limit: float | None = None,
           cost_of: Callable[[Candidate], float] = cost) -> tuple[Candidate, Candidate | None]:
    """The chosen candidate and the runner-up.

    Among exact and fallback forms: the cheapest within ``tol`` (ties by the table's order), the
    most accurate one when none is. Snapped candidates (see the module docstring) then replace it
    where ``snap`` says so (see :func:`wants_snap`) and they are cheaper: with a ``limit``, the
    most accurate one within it, else the cheapest; a replaced choice becomes the runner-up. ``cost_of`` prices a candidate (the table's estimate, or a measured time).
    """
    order = [f.name for f in FORMS]
    key = lambda c: (cost_of(c) * _margin(c), order.index(c.form))  # noqa: E731
    snapped = [c for c in cands if FORM_BY_NAME[c.form].role == "snapped" and math.isfinite(c.error)]
    snapped = sorted(snapped, key=lambda c: (cost_of(c), c.error, order.index(c.form))) if snap != "never" else []
    exact = [c for c in cands if FORM_BY_NAME[c.form].role != "snapped"]
    ok = sorted((c for c in exact if c.error <= tol), key=key)
    if snap == "always" and snapped:
        ok = sorted(ok + snapped, key=key)
        return ok[0], (ok[1] if len(ok) > 1 else None)
    if not ok:
        ok = sorted(exact, key=lambda c: c.error)
    best, runner = ok[0], (ok[1] if len(ok) > 1 else None)
    if snapped and wants_snap(best, tol, limit, cost_of):
        # under a speed target: the most accurate snapped form that meets it, else the cheapest
        fitting = [c for c in snapped if limit is not None and cost_of(c) <= limit]
        pick = min(fitting, key=lambda c: (c.error, cost_of(c))) if fitting else snapped[0]
        if cost_of(pick) < cost_of(best):
            return pick, best
    return best, runner
