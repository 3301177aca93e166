"""Harden forms of graph convolutions: message passing (the polynomial in the propagation matrix
over its edges) while the learned transforms are still its eigenbasis, else the frozen
eigenbasis product."""

from __future__ import annotations

import torch

from ..ops.graph import XDGraphConv, polynomial_basis
from ..ops.graph_forms import FrozenGraphConv, GraphPolynomial
from .harden_context import Candidate, LayerContext


def still_polynomial(layer: XDGraphConv, tol: float) -> bool:
    """Whether K, M are still an eigenbasis of the propagation matrix and L its polynomial basis,
    so the layer is ``sum_j p_j(A) h W_j`` (always, for a layer without an eigenbasis)."""
    if not layer.eigenbasis or layer.K is None:
        return True
    a = layer.propagation.double()
    k, m = (t.detach().double() for t in layer.transforms())
    lam = layer.eigenvalues.double()
    eye = torch.eye(layer.nodes, dtype=k.dtype, device=k.device)
    basis = polynomial_basis(lam, layer.weight.shape[-1], layer.polynomial)
    scale = max(float(a.abs().max()), 1e-30)
    return (torch.allclose((k * lam) @ m, a, rtol=0, atol=tol * scale) and torch.allclose(k @ m, eye, rtol=0, atol=tol)
            and torch.allclose(layer.L.matrix.detach().double(), basis, rtol=0, atol=tol * float(basis.abs().max())))


def graph_polynomial_candidates(ctx: LayerContext) -> list[Candidate]:
    layer: XDGraphConv = ctx.layer
    if not still_polynomial(layer, ctx.tol):
        return []
    (c_out, c_in, taps) = layer.weight.shape
    w = layer.weight.detach()
    if layer.depthwise:
        weights = torch.stack([torch.diag(w[:, 0, j]) for j in range(taps)])
    else:
        weights = w.permute(2, 1, 0)  # (taps, C_in, C_out)
    used = [j for j in range(taps) if float(weights[j].abs().max()) > 0]
    last = (max(used) + 1) if used else 1
    dst, src, value = layer.edges()
    a = torch.sparse_coo_tensor(torch.stack([dst, src]), value, (layer.nodes, layer.nodes), check_invariants=False)
    flops = 2.0 * layer.nodes * c_in * c_out * last + 2.0 * value.numel() * max(c_in, c_out) * max(last - 1, 0)
    form = GraphPolynomial(a, weights[:last], layer.bias, layer.polynomial)
    return [Candidate("graph_polynomial", form, flops, f"taps={last} ({layer.polynomial}), {value.numel()} edges")]


def frozen_graph_candidates(ctx: LayerContext) -> list[Candidate]:
    layer: XDGraphConv = ctx.layer
    if not layer.eigenbasis:
        return []
    n, (c_out, c_in, _) = layer.nodes, layer.weight.shape
    with torch.no_grad():
        spec = layer.spectrum().detach()
    if layer.depthwise:
        spec = torch.diag_embed(spec[:, 0, :].T).permute(1, 2, 0)
    kmat, mmat = (t.detach() for t in layer.transforms())
    flops = 4.0 * n * n * max(c_in, c_out) + 2.0 * n * c_in * c_out
    return [Candidate("frozen", FrozenGraphConv(kmat, mmat, spec, layer.bias), flops, "dense eigenbasis")]
