"""What hardened graph convolutions become: a polynomial in the propagation matrix (sparse message
passing when the matrix is sparse), or the frozen eigenbasis product."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import XdfxShapeError
from .graph import node_matmul, polynomial_apply, to_edges


class GraphPolynomial(nn.Module):
    """``y = sum_j p_j(A) h W_j + b``: a polynomial graph filter on a fixed graph (GCN: ``j = 1``),
    ``p_j`` the powers ``A^j`` or the Chebyshev polynomials ``T_j(A)``. A sparse ``A`` makes it
    message passing: one gather-scale-add over the edges per tap."""

    def __init__(self, propagation: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None,
                 polynomial: str = "power") -> None:
        super().__init__()
        dst, src, value = to_edges(propagation.detach())
        self.nodes = propagation.shape[0]
        self.register_buffer("dst", dst.clone())
        self.register_buffer("src", src.clone())
        self.register_buffer("value", value.clone())
        self.weight = nn.Parameter(weights.detach().clone())  # (taps, C_in, C_out)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.polynomial = polynomial

    def extra_repr(self) -> str:
        return f"taps={self.weight.shape[0]} ({self.polynomial}), {self.value.numel()} edges on {self.nodes} nodes"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() < 2 or h.shape[-2] != self.nodes:  # also tells an exporter that the node axis is not a batch
            raise XdfxShapeError(f"a graph filter on {self.nodes} nodes got features of shape {tuple(h.shape)} "
                                 "(nodes must be the second-to-last axis)")
        y = polynomial_apply(h, (self.dst, self.src, self.value), self.weight, self.polynomial)
        return y if self.bias is None else y + self.bias


class FrozenGraphConv(nn.Module):
    """``y = K (S * (M h)) + b`` with the transforms and the spectral filter ``S`` frozen."""

    def __init__(self, k: torch.Tensor, m: torch.Tensor, spectrum: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("k", k.detach().clone())
        self.register_buffer("m", m.detach().clone())
        self.register_buffer("spectrum", spectrum.detach().clone())  # (C_out, C_in, N)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("...ni,oin->...no", node_matmul(self.m, h), self.spectrum)
        y = node_matmul(self.k, y)
        return y if self.bias is None else y + self.bias
