"""Harden forms that cost nothing or give back the op the layer was relaxed from: zero, identity,
the original pooling, the original functional conv."""

from __future__ import annotations

import copy
import math

from torch import nn

from ..ops.hardened import Zero
from .harden_context import Candidate, LayerContext, factor_kinds, out_sizes


def zero_candidates(ctx: LayerContext) -> list[Candidate]:
    xd = ctx.layer
    return [Candidate("zero", Zero(xd.out_channels, xd.geometry, xd.bias), 0.0)]


def identity_candidates(ctx: LayerContext) -> list[Candidate]:
    xd = ctx.layer
    if xd.in_channels == xd.out_channels and out_sizes(xd.geometry, ctx.sizes) == ctx.sizes:
        return [Candidate("identity", nn.Identity(), 0.0)]
    return []


def pool_candidates(ctx: LayerContext) -> list[Candidate]:
    """The average pooling the layer was relaxed from (its provenance keeps a copy)."""
    if ctx.origin is None or ctx.origin.module is None or ctx.origin.kind != "avg_pool":
        return []
    xd = ctx.layer
    pool = copy.deepcopy(ctx.origin.module)
    k = [g.kernel for g in xd.geometry]
    flops = float(xd.in_channels * math.prod(k) * math.prod(out_sizes(xd.geometry, ctx.sizes)))
    return [Candidate("pool", pool, flops, repr(pool))]


def conv_function_candidates(ctx: LayerContext) -> list[Candidate]:
    """The functional conv the layer was relaxed from, while its learned growth is still zero."""
    xd, origin = ctx.layer, ctx.origin
    if origin is None or origin.function is None or xd.growth is None or float(xd.growth.detach().abs().max()) > 0:
        return []
    kinds_m, kinds_k = factor_kinds(xd, ctx.tol)
    if any(k != "identity" for k, _ in kinds_m + kinds_k):
        return []
    fn = origin.function
    return [Candidate("conv_function", None, 0.0, fn.__name__, function=fn, options=dict(origin.options))]
