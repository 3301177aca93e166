"""What hardened graph convolutions become: a polynomial in the propagation matrix (sparse message
passing when the matrix is sparse), or the frozen eigenbasis product."""

from __future__ import annotations

import torch
from torch import nn


class GraphPolynomial(nn.Module):
    """``y = sum_j A^j h W_j + b``: a polynomial graph filter on a fixed graph (GCN: ``j = 1``)."""

    def __init__(self, propagation: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("adj", propagation.detach().clone())
        self.weight = nn.Parameter(weights.detach().clone())  # (taps, C_in, C_out)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = None
        power = h
        for j in range(self.weight.shape[0]):
            if j:
                power = torch.matmul(self.adj, power)
            term = torch.matmul(power, self.weight[j])
            y = term if y is None else y + term
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
        y = torch.einsum("...ni,oin->...no", torch.matmul(self.m, h), self.spectrum)
        y = torch.matmul(self.k, y)
        return y if self.bias is None else y + self.bias
