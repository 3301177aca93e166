"""Every form :func:`xdfx.harden` can turn an XD layer into, with its cost model, in one table.

Each row names the form, the layers it applies to (``"xd"`` grid convolutions, ``"graph"``
graph convolutions), the builder of its candidates, and its *efficiency*: estimated time per FLOP
relative to a direct convolution on CPU (``benchmarks/bench_relax.py`` measured the real-FFT path
and the frozen form at a fraction of mkldnn's conv throughput; DFT matmuls are plain GEMMs).
Every candidate is measured on the layer's probe inputs; the cheapest one within ``tol`` wins,
ties going to the earlier row. Adding a form is adding a row and its builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .passes.harden_context import Candidate, LayerContext
from .passes.harden_conv import conv_candidates
from .passes.harden_graph import frozen_graph_candidates, graph_polynomial_candidates
from .passes.harden_restore import conv_function_candidates, identity_candidates, pool_candidates, zero_candidates
from .passes.harden_spectral import fft_candidates, frozen_candidates, spectral_candidates


@dataclass(frozen=True)
class Form:
    """One row: a form, where it applies, how its candidates are built, and what a FLOP costs."""

    name: str
    applies_to: tuple[str, ...]
    build: Callable[[LayerContext], list[Candidate]]
    efficiency: float
    summary: str


FORMS: tuple[Form, ...] = (
    Form("zero", ("xd",), zero_candidates, 1.0, "the layer outputs its bias only"),
    Form("identity", ("xd",), identity_candidates, 1.0, "the layer passes its input through"),
    Form("pool", ("xd",), pool_candidates, 1.0, "the average pooling it was relaxed from"),
    Form("conv_function", ("xd",), conv_function_candidates, 1.0, "the functional conv it was relaxed from"),
    Form("conv", ("xd",), conv_candidates, 1.0,
         "nn.Conv*d, kernel/dilation/stride/padding recovered from the circulant's support"),
    Form("graph_polynomial", ("graph",), graph_polynomial_candidates, 1.0,
         "sum_j A^j h W_j: message passing with the fixed propagation matrix"),
    Form("spectral", ("xd",), spectral_candidates, 2.0,
         "FNO-style: per-frequency channel mixing on the fewest low modes within tol"),
    Form("fft", ("xd",), fft_candidates, 4.5, "every mode, through real FFTs"),
    Form("frozen", ("xd", "graph"), lambda ctx: frozen_candidates(ctx) if ctx.is_grid else frozen_graph_candidates(ctx), 4.5, "the XD layer with its learned transforms frozen and L w precomputed"),
)
FORM_BY_NAME = {f.name: f for f in FORMS}


def cost(candidate: Candidate) -> float:
    """Estimated time of a candidate, in direct-conv FLOP units."""
    return candidate.flops * FORM_BY_NAME[candidate.form].efficiency


def candidates(ctx: LayerContext) -> list[Candidate]:
    """Every candidate of every form that applies to the layer."""
    kind = "xd" if ctx.is_grid else "graph"
    return [c for form in FORMS if kind in form.applies_to for c in form.build(ctx)]


def choose(cands: list[Candidate], tol: float) -> tuple[Candidate, Candidate | None]:
    """The cheapest candidate within ``tol`` (ties by the table's order), and the runner-up; the
    most accurate one when none is within ``tol``."""
    order = [f.name for f in FORMS]
    ok = sorted((c for c in cands if c.error <= tol), key=lambda c: (cost(c), order.index(c.form)))
    if not ok:
        ok = sorted(cands, key=lambda c: c.error)
    return ok[0], (ok[1] if len(ok) > 1 else None)
