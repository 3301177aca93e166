"""How far search moved each learnable factor (K, L, M) from the matrix it started at.

The distance is ``||Q - Q0||_F / ||Q0||_F``: for an XD conv Q0 is the identity for Q_M, Q_K (so M
and K are the DFT) and the zero-extension for Q_L; for a graph XD layer it is the eigenbasis and
Vandermonde matrix of the propagation matrix that relax started from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops import XDConv
from ..ops.graph import XDGraphConv


@dataclass
class Factor:
    factor: str  # "M", "K" or "L"
    axis: int
    label: str
    size: list[int]
    distance: float
    reference: str  # what the warm start Q0 was


def _distance(q: torch.Tensor, ref: torch.Tensor) -> float:
    q, ref = q.detach().double().cpu(), ref.detach().double().cpu()
    return float(torch.linalg.norm(q - ref) / torch.linalg.norm(ref).clamp_min(1e-300))


def xd_factors(layer: XDConv) -> list[Factor]:
    out = []
    for factor, qs in (("M", layer.M), ("K", layer.K)):
        for axis, q in enumerate(qs):
            with torch.no_grad():
                dense = q.dense()
            out.append(Factor(factor, axis, f"Q_{factor} axis {axis}", [q.n, q.n],
                              _distance(dense, torch.eye(q.n, dtype=dense.dtype)), "identity (M, K = DFT)"))
    for axis, q in enumerate(layer.L):
        out.append(Factor("L", axis, f"Q_L axis {axis}", [q.n, q.k], _distance(q.matrix, torch.eye(q.n, q.k)),
                          "zero-extension [I; 0]"))
    return out


def graph_factors(layer: XDGraphConv, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor) -> list[Factor]:
    """Distances of M, K, L from the eigendecomposition (none for arch='fixed')."""
    if layer.K is None:
        return []
    taps = layer.weight.shape[-1]
    vander = eigenvalues[:, None] ** torch.arange(taps, dtype=torch.float64)
    return [Factor(factor, 0, f"{factor} (vs {what})", list(mat.shape), _distance(mat, ref),
                   f"{what} of the eigendecomposition")
            for factor, mat, ref, what in (("M", layer.M.matrix, eigenvectors.T, "U^T"), ("K", layer.K.matrix, eigenvectors, "U"),
                                           ("L", layer.L.matrix, vander, "Vandermonde"))]
