"""Graph convolution on a fixed graph as an XD-operation.

With the normalised adjacency ``A = U diag(lam) U^T`` (symmetric, so ``U`` is orthogonal), a GCN
layer ``A (H W)`` is ``K diag(L w) M H`` with ``M = U^T``, ``K = U`` and, per channel pair,
``diag(L w[o, i]) = W[i, o] lam``.

The graph analogue of a conv's k taps is a polynomial in the shift operator ``A``:
``w_0 I + w_1 A + ... + w_{k-1} A^{k-1}``, so ``L`` is the Vandermonde map ``L[n, j] = lam_n^j``
and ``w[o, i]`` has ``k`` taps, warm-started to ``(0, W[i, o], 0, ...)``. A free filter per
eigenvalue (``k = N``) is reachable, but as a default it discards GCN's smoothness prior and
overfits small graphs. ``K``, ``M`` and ``L`` are learnable (architecture parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import XdfxShapeError
from .monarch import LinearMap


def normalized_adjacency(adjacency: torch.Tensor, self_loops: bool = True) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling) of a dense or sparse adjacency matrix."""
    a = adjacency.to_dense() if adjacency.is_sparse else adjacency
    a = a.to(torch.float64)
    if self_loops:
        a = a + torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return inv[:, None] * a * inv[None, :]


class XDGraphConv(nn.Module):
    """``y = K (w * (M h)) + b`` over the node axis (second to last) of ``h``.

    Parameters
    ----------
    propagation : Tensor
        The fixed symmetric ``N x N`` propagation matrix the layer was relaxed from.
    weight : Tensor, optional
        ``(C_in, C_out)`` channel mixing fused into the layer (``A @ (h @ W)``); None for a
        plain propagation ``A @ h`` (a per-channel spectral filter then).
    channels : int
        Feature count of ``h`` when ``weight`` is None.
    """

    def __init__(
        self,
        propagation: torch.Tensor,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        *,
        channels: int | None = None,
        taps: int = 3,
        arch: str = "monarch",
    ) -> None:
        super().__init__()
        a = propagation.to_dense() if propagation.is_sparse else propagation
        a64 = a.to(torch.float64)
        if a64.dim() != 2 or a64.shape[0] != a64.shape[1] or not torch.allclose(a64, a64.T, atol=1e-10):
            raise ValueError("the propagation matrix must be square and symmetric")
        lam, u = torch.linalg.eigh(a64)
        self.register_buffer("propagation", a.detach().clone())
        dtype, device = a.dtype if a.is_floating_point() else torch.float32, a.device
        self.nodes = a.shape[0]
        self.layer_name = ""
        self.arch = arch
        taps = max(2, min(int(taps), self.nodes))
        if weight is None:
            mix = torch.ones(channels, 1, dtype=torch.float64, device=a.device)  # (C, 1): depthwise
            self.depthwise = True
        else:
            mix = weight.to(torch.float64).T  # (C_out, C_in)
            self.depthwise = False
        kernel = torch.zeros(*mix.shape, taps, dtype=torch.float64, device=a.device)
        kernel[..., 1] = mix
        self.weight = nn.Parameter(kernel.to(dtype=dtype, device=device))
        vandermonde = lam[:, None] ** torch.arange(taps, dtype=torch.float64, device=a.device)  # (N, taps)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        if arch == "monarch":
            self.M = LinearMap(u.T.to(dtype=dtype, device=device))
            self.K = LinearMap(u.to(dtype=dtype, device=device))
            self.L = LinearMap(vandermonde.to(dtype=dtype, device=device))
        else:
            self.M = self.K = self.L = None
            self.register_buffer("basis", u.to(dtype=dtype, device=device))
            self.register_buffer("vandermonde", vandermonde.to(dtype=dtype, device=device))

    def extra_repr(self) -> str:
        c_out, c_in, taps = self.weight.shape
        kind = " depthwise" if self.depthwise else ""
        return f"nodes={self.nodes}, channels={c_in}->{c_out}{kind}, taps={taps}, arch={self.arch}"

    def spectrum(self) -> torch.Tensor:
        """``L w``: the filter per channel pair over the graph's eigenvalues, ``(C_out, C_in, N)``."""
        v = self.L.matrix if self.L is not None else self.vandermonde
        return torch.matmul(self.weight, v.T)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() < 2 or h.shape[-2] != self.nodes:
            raise XdfxShapeError(
                f"layer {self.layer_name!r} is a graph convolution on {self.nodes} nodes; got features "
                f"of shape {tuple(h.shape)} (nodes must be the second-to-last axis)"
            )
        m = self.M.matrix if self.M is not None else self.basis.T
        k = self.K.matrix if self.K is not None else self.basis
        spec = torch.matmul(m, h)  # (..., N, C_in)
        filt = self.spectrum()
        if self.depthwise:
            y = spec * filt[:, 0, :].T
        else:
            y = torch.einsum("...ni,oin->...no", spec, filt)
        y = torch.matmul(k, y)
        return y if self.bias is None else y + self.bias
