"""Harden forms of graph convolutions: a polynomial in the propagation matrix while the learned
transforms are still its eigenbasis, else the frozen eigenbasis product."""

from __future__ import annotations

import torch

from ..ops.graph import XDGraphConv
from ..ops.graph_forms import FrozenGraphConv, GraphPolynomial
from .harden_context import Candidate, LayerContext


def _still_polynomial(layer: XDGraphConv, lam: torch.Tensor, tol: float) -> bool:
    if layer.K is None:
        return True
    a = layer.propagation.double()
    k, m = layer.K.matrix.detach().double(), layer.M.matrix.detach().double()
    eye = torch.eye(layer.nodes, dtype=k.dtype, device=k.device)
    taps = layer.weight.shape[-1]
    vander = lam[:, None] ** torch.arange(taps, dtype=torch.float64, device=lam.device)
    return (torch.allclose(k @ torch.diag(lam) @ m, a, atol=tol) and torch.allclose(k @ m, eye, atol=tol)
            and torch.allclose(layer.L.matrix.detach().double(), vander, atol=tol))


def graph_polynomial_candidates(ctx: LayerContext) -> list[Candidate]:
    layer: XDGraphConv = ctx.layer
    a = layer.propagation.to(layer.weight.dtype)
    lam = torch.linalg.eigvalsh(a.to(torch.float64))
    if not _still_polynomial(layer, lam, ctx.tol):
        return []
    n, (c_out, c_in, taps) = layer.nodes, layer.weight.shape
    w = layer.weight.detach()
    if layer.depthwise:
        weights = torch.stack([torch.diag(w[:, 0, j]) for j in range(taps)])
    else:
        weights = w.permute(2, 1, 0)  # (taps, C_in, C_out)
    used = [j for j in range(taps) if float(weights[j].abs().max()) > 0]
    last = (max(used) + 1) if used else 1
    nnz = int((a != 0).sum())
    flops = 2.0 * n * c_in * c_out * last + 2.0 * nnz * c_out * max(last - 1, 0)
    return [Candidate("graph_polynomial", GraphPolynomial(a, weights[:last], layer.bias), flops, f"taps={last}")]


def frozen_graph_candidates(ctx: LayerContext) -> list[Candidate]:
    layer: XDGraphConv = ctx.layer
    n, (c_out, c_in, _) = layer.nodes, layer.weight.shape
    with torch.no_grad():
        spec = layer.spectrum().detach()
    if layer.depthwise:
        spec = torch.diag_embed(spec[:, 0, :].T).permute(1, 2, 0)
    kmat = layer.K.matrix.detach() if layer.K is not None else layer.basis
    mmat = layer.M.matrix.detach() if layer.M is not None else layer.basis.T
    flops = 4.0 * n * n * max(c_in, c_out) + 2.0 * n * c_in * c_out
    return [Candidate("frozen", FrozenGraphConv(kmat, mmat, spec, layer.bias), flops, "dense eigenbasis")]
