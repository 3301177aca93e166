"""Graph convolution on a fixed graph as an XD-operation.

With the propagation matrix ``A = K diag(lam) M`` (for a symmetric ``A``: ``K = U``, ``M = U^T``
with ``U`` orthogonal), a GCN layer ``A (H W)`` is ``K diag(L w) M H`` with, per channel pair,
``diag(L w[o, i]) = W[i, o] lam``.

The graph analogue of a conv's k taps is a polynomial in the shift operator ``A``:
``w_0 I + w_1 A + ... + w_{k-1} A^{k-1}``, so ``L`` is the Vandermonde map ``L[n, j] = lam_n^j``
(or ``T_j(lam_n)`` for Chebyshev taps, as ChebConv writes its filter) and ``w[o, i]`` has ``k``
taps, warm-started from the layer's own. A free filter per eigenvalue (``k = N``) is reachable,
but as a default it discards the smoothness prior and overfits small graphs. ``K``, ``M`` and
``L`` are learnable (architecture parameters).

An asymmetric ``A`` such as mean aggregation ``D^-1 A`` is relaxed when a positive diagonal ``S``
makes ``S^-1 A S`` symmetric (true of every reversible random walk): ``K = S U``, ``M = U^T S^-1``.

The eigendecomposition costs ``O(N^3)``: it is used up to :data:`EIGENBASIS_NODES` nodes. Larger
graphs get the polynomial sub-family only (``K``, ``M``, ``L`` fixed to the eigenbasis, never
formed): the taps stay searchable and the layer runs as sparse message passing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import XdfxShapeError, XdfxUnsupportedError
from .monarch import LinearMap

#: Largest graph (nodes) whose eigenbasis relax computes: ``eigh`` at this size takes tens of
#: seconds on two CPU cores, and K, M hold two dense ``N x N`` matrices per layer.
EIGENBASIS_NODES = 4096

POLYNOMIALS = ("power", "chebyshev")


def normalized_adjacency(adjacency: torch.Tensor, self_loops: bool = True) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling) of a dense or sparse adjacency matrix."""
    a = dense(adjacency).to(torch.float64)
    if self_loops:
        a = a + torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return inv[:, None] * a * inv[None, :]


def dense(a: torch.Tensor) -> torch.Tensor:
    """A dense copy of a dense, COO, CSR or CSC matrix."""
    return a if a.layout == torch.strided else a.to_dense()


def polynomial_basis(lam: torch.Tensor, taps: int, polynomial: str = "power") -> torch.Tensor:
    """``(N, taps)``: ``lam^j`` (Vandermonde) or the Chebyshev polynomials ``T_j(lam)``."""
    if polynomial not in POLYNOMIALS:
        raise XdfxUnsupportedError(f"unknown polynomial basis {polynomial!r}; expected one of {POLYNOMIALS}")
    cols = [torch.ones_like(lam), lam][:taps]
    for _ in range(2, taps):
        cols.append(lam * cols[-1] if polynomial == "power" else 2 * lam * cols[-1] - cols[-2])
    return torch.stack(cols, dim=1)


def symmetrizer(a: torch.Tensor) -> torch.Tensor | None:
    """A positive ``s`` with ``diag(s)^-1 a diag(s)`` symmetric, or None when there is none.

    ``(s_j / s_i)^2 = a_ji / a_ij`` on every edge, so ``log s^2`` is integrated along a spanning
    tree of each connected component and then checked on every edge.
    """
    a = a.to(torch.float64)
    scale = float(a.abs().max()) or 1.0
    if torch.allclose(a, a.T, rtol=0, atol=1e-12 * scale):
        return torch.ones(a.shape[0], dtype=a.dtype, device=a.device)
    off = a - torch.diag(torch.diagonal(a))
    nz = off != 0
    if not torch.equal(nz, nz.T) or bool((off * off.T < 0).any()):
        return None  # a one-way edge or a sign flip: no real diagonal similarity exists
    import numpy as np
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    host = off.cpu().numpy()
    graph = csr_matrix(nz.cpu().numpy())
    count, labels = connected_components(graph, directed=False)
    t = np.zeros(a.shape[0])
    for c in range(count):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        order, pred = breadth_first_order(graph, members[0], directed=False, return_predecessors=True)
        for j in order[1:]:
            p = pred[j]
            t[j] = t[p] + math.log(host[j, p] / host[p, j])
        t[members] -= t[members].mean()  # any constant per component; centred for conditioning
    s = torch.as_tensor(np.exp(t / 2), dtype=a.dtype, device=a.device)
    b = a * s[None, :] / s[:, None]
    return s if torch.allclose(b, b.T, rtol=0, atol=1e-9 * float(b.abs().max())) else None


def eigen_decomposition(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lam, K, M)`` in float64 with ``a = K diag(lam) M`` and ``K M = I``, for a symmetric ``a``
    or one similar to a symmetric matrix by a positive diagonal (mean aggregation)."""
    a = dense(a).to(torch.float64)
    n = a.shape[0]
    if a.dim() != 2 or a.shape[1] != n:
        raise XdfxShapeError(f"a graph propagation matrix must be square, got shape {tuple(a.shape)}")
    if n > EIGENBASIS_NODES:
        raise XdfxUnsupportedError(
            f"the graph has {n} nodes, above xdfx.ops.graph.EIGENBASIS_NODES = {EIGENBASIS_NODES}: its "
            "eigenbasis (O(N^3)) is not computed; use the polynomial form (eigenbasis=False)")
    s = symmetrizer(a)
    if s is None:
        raise XdfxUnsupportedError(
            "the propagation matrix is not symmetric and no positive diagonal scaling makes it symmetric "
            "(a directed graph, or an aggregation that is not a reversible random walk): it has no real "
            "eigenbasis to relax it into")
    b = a * s[None, :] / s[:, None]
    lam, u = torch.linalg.eigh((b + b.T) / 2)
    return lam, s[:, None] * u, u.T / s[None, :]


def node_matmul(matrix: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``matrix @ h`` over the node axis (second to last) of ``h`` as one GEMM: the batch axes
    are folded into the columns (a broadcast ``matmul`` runs one small GEMM per batch entry, and
    without autograd far slower still)."""
    if h.dim() == 2:
        return torch.matmul(matrix, h)
    moved = h.movedim(-2, 0)
    out = torch.matmul(matrix, moved.reshape(moved.shape[0], -1))
    return out.reshape(matrix.shape[0], *moved.shape[1:]).movedim(0, -2)


def to_edges(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dst, src, value)`` of the nonzeros of a dense or sparse matrix: ``a[dst, src] = value``."""
    coo = a.to_sparse_coo() if a.layout != torch.sparse_coo else a
    coo = coo.coalesce()
    return coo.indices()[0], coo.indices()[1], coo.values()


def propagate(h: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``A @ h`` over the node axis (second to last) of ``h`` as message passing: gather the
    sources, scale by the edge values, add into the destinations (it exports to ONNX as is)."""
    msg = h.index_select(-2, src) * value.to(h.dtype)[:, None]
    return torch.zeros_like(h).index_add(-2, dst, msg)


def polynomial_apply(h: torch.Tensor, edges: tuple[torch.Tensor, torch.Tensor, torch.Tensor], weights: torch.Tensor,
                     polynomial: str = "power", depthwise: bool = False) -> torch.Tensor:
    """``sum_j p_j(A) h W_j`` with ``weights`` ``(taps, C_in, C_out)`` (depthwise: ``(taps, C)``),
    ``p_j`` the powers or the Chebyshev polynomials of ``A`` (given as ``edges``): one
    propagation per tap, over ``min(C_in, C_out)`` channels (``A`` commutes with ``W_j``, so a
    narrowing layer mixes channels first and runs Horner's or Clenshaw's recurrence)."""
    taps = weights.shape[0]
    if not depthwise and weights.shape[-1] < weights.shape[-2] and taps > 1:
        terms = [torch.matmul(h, weights[j]) for j in range(taps)]
        if polynomial == "power":  # Horner: a_0 + A (a_1 + A (a_2 + ...))
            y = terms[-1]
            for j in range(taps - 2, -1, -1):
                y = terms[j] + propagate(y, *edges)
            return y
        b1, b2 = terms[-1], torch.zeros_like(terms[-1])  # Clenshaw: b_k = a_k + 2 A b_(k+1) - b_(k+2)
        for j in range(taps - 2, 0, -1):
            b1, b2 = terms[j] + 2 * propagate(b1, *edges) - b2, b1
        return terms[0] + propagate(b1, *edges) - b2
    y = None
    prev, cur = None, h
    for j in range(taps):
        if j == 1:
            prev, cur = cur, propagate(cur, *edges)
        elif j > 1:
            nxt = propagate(cur, *edges)
            prev, cur = cur, (nxt if polynomial == "power" else 2 * nxt - prev)
        term = cur * weights[j] if depthwise else torch.matmul(cur, weights[j])
        y = term if y is None else y + term
    return y


class XDGraphConv(nn.Module):
    """``y = K (w * (M h)) + b`` over the node axis (second to last) of ``h``.

    Parameters
    ----------
    propagation : Tensor
        The fixed ``N x N`` propagation matrix (dense or sparse) the layer was relaxed from:
        symmetric, or similar to a symmetric matrix by a positive diagonal.
    weight : Tensor, optional
        ``(C_in, C_out)`` channel mixing fused into the layer at tap 1 (``A @ (h @ W)``); None for
        a plain propagation ``A @ h`` (a per-channel spectral filter then).
    channels : int
        Feature count of ``h`` when neither ``weight`` nor ``kernel`` is given.
    kernel : Tensor, optional
        ``(C_out, C_in, taps)``: every tap's channel mixing (SGConv, ChebConv, GraphConv); it
        overrides ``weight`` and ``taps``.
    polynomial : {"power", "chebyshev"}
        The basis of the taps: ``A^j`` or ``T_j(A)``.
    eigenbasis : bool, optional
        Whether K, L, M are formed (default: up to :data:`EIGENBASIS_NODES` nodes). Without them
        the layer is the polynomial ``sum_j p_j(A) h W_j``, run as sparse message passing.
    decomposition : tuple, optional
        ``(lam, K, M)`` of ``propagation`` computed once for several layers on the same graph.
    """

    def __init__(
        self,
        propagation: torch.Tensor,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        *,
        channels: int | None = None,
        taps: int = 3,
        arch: str = "fixed",
        kernel: torch.Tensor | None = None,
        polynomial: str = "power",
        eigenbasis: bool | None = None,
        decomposition: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if propagation.dim() != 2 or propagation.shape[0] != propagation.shape[1]:
            raise XdfxShapeError(f"a graph propagation matrix must be square, got shape {tuple(propagation.shape)}")
        if polynomial not in POLYNOMIALS:
            raise XdfxUnsupportedError(f"unknown polynomial basis {polynomial!r}; expected one of {POLYNOMIALS}")
        dtype = propagation.dtype if propagation.is_floating_point() else torch.float32
        device = propagation.device
        self.nodes = propagation.shape[0]
        self.layer_name = ""
        self.arch = arch
        self.polynomial = polynomial
        self.eigenbasis = self.nodes <= EIGENBASIS_NODES if eigenbasis is None else bool(eigenbasis)
        if kernel is not None:
            kernel = kernel.detach().to(torch.float64)
            self.depthwise = False
        else:
            taps = max(2, min(int(taps), self.nodes))
            if weight is None:
                mix = torch.ones(channels, 1, dtype=torch.float64, device=device)  # (C, 1): depthwise
                self.depthwise = True
            else:
                mix = weight.detach().to(torch.float64).T  # (C_out, C_in)
                self.depthwise = False
            kernel = torch.zeros(*mix.shape, taps, dtype=torch.float64, device=device)
            kernel[..., 1] = mix
        taps = kernel.shape[-1]
        self.weight = nn.Parameter(kernel.to(dtype=dtype, device=device))
        self.bias = nn.Parameter(bias.detach().clone().to(dtype)) if bias is not None else None
        self.M = self.K = self.L = None
        if not self.eigenbasis:
            dst, src, value = to_edges(propagation.detach())
            self.register_buffer("edge_dst", dst)
            self.register_buffer("edge_src", src)
            self.register_buffer("edge_value", value.to(dtype))
            return
        a = dense(propagation).detach()
        lam, kmat, mmat = decomposition if decomposition is not None else eigen_decomposition(a)
        self.register_buffer("propagation", a.to(dtype).clone())
        self.register_buffer("eigenvalues", lam.to(dtype=dtype, device=device))
        vandermonde = polynomial_basis(lam.to(torch.float64), taps, polynomial)  # (N, taps)
        if arch == "monarch":
            self.M = LinearMap(mmat.to(dtype=dtype, device=device))
            self.K = LinearMap(kmat.to(dtype=dtype, device=device))
            self.L = LinearMap(vandermonde.to(dtype=dtype, device=device))
        else:
            self.register_buffer("basis", kmat.to(dtype=dtype, device=device))
            self.register_buffer("basis_inv", mmat.to(dtype=dtype, device=device))
            self.register_buffer("vandermonde", vandermonde.to(dtype=dtype, device=device))

    def extra_repr(self) -> str:
        c_out, c_in, taps = self.weight.shape
        kind = " depthwise" if self.depthwise else ""
        form = f"arch={self.arch}" if self.eigenbasis else "polynomial only (no eigenbasis)"
        return f"nodes={self.nodes}, channels={c_in}->{c_out}{kind}, taps={taps} ({self.polynomial}), {form}"

    def transforms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K, M)`` as matrices (learned, or the fixed eigenbasis)."""
        if self.K is not None:
            return self.K.matrix, self.M.matrix
        return self.basis, self.basis_inv

    def spectrum(self) -> torch.Tensor:
        """``L w``: the filter per channel pair over the graph's eigenvalues, ``(C_out, C_in, N)``."""
        if not self.eigenbasis:
            raise XdfxUnsupportedError(
                f"layer {self.layer_name!r} has {self.nodes} nodes, above EIGENBASIS_NODES = {EIGENBASIS_NODES}: "
                "it has no eigenbasis, so no spectrum")
        v = self.L.matrix if self.L is not None else self.vandermonde
        return torch.matmul(self.weight, v.T)

    def tap_weights(self) -> torch.Tensor:
        """The taps as ``(taps, C_in, C_out)`` (depthwise: ``(taps, C)``)."""
        w = self.weight
        return w[:, 0, :].T if self.depthwise else w.permute(2, 1, 0)

    def edges(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(dst, src, value)`` of the propagation matrix's nonzeros."""
        if self.eigenbasis:
            return to_edges(self.propagation)
        return self.edge_dst, self.edge_src, self.edge_value

    def flops(self) -> float:
        """Multiply-adds x 2 of one call on ``(N, C_in)`` features."""
        c_out, c_in, taps = self.weight.shape
        if self.eigenbasis:
            return 4.0 * self.nodes ** 2 * max(c_out, c_in) + 2.0 * self.nodes * c_out * c_in * taps
        nnz = self.edges()[0].numel()
        return 2.0 * self.nodes * c_in * c_out * taps + 2.0 * nnz * c_in * (taps - 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() < 2 or h.shape[-2] != self.nodes:
            raise XdfxShapeError(
                f"layer {self.layer_name!r} is a graph convolution on {self.nodes} nodes; got features "
                f"of shape {tuple(h.shape)} (nodes must be the second-to-last axis)"
            )
        if not self.eigenbasis:
            y = polynomial_apply(h, self.edges(), self.tap_weights(), self.polynomial, self.depthwise)
            return y if self.bias is None else y + self.bias
        k, m = self.transforms()
        spec = node_matmul(m, h)  # (..., N, C_in)
        filt = self.spectrum()
        if self.depthwise:
            y = spec * filt[:, 0, :].T
        else:
            y = torch.einsum("...ni,oin->...no", spec, filt)
        y = node_matmul(k, y)
        return y if self.bias is None else y + self.bias
