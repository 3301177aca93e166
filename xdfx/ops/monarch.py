"""Learnable real structured maps applied along one axis: Monarch matrices and plain matrices.

A Monarch matrix is ``P^T B2 P B1``: ``B1`` is block-diagonal with ``n1`` dense blocks of
size ``n2 x n2``, ``P`` is the reshape-transpose permutation of an ``n1 x n2`` grid and ``B2`` is
block-diagonal with ``n2`` blocks of size ``n1 x n1`` (Dao et al. 2022). It is a member of the
Kaleidoscope family: it contains permutations of the grid, block-sparse and low-rank maps, and
(with complex blocks and twiddles) the DFT itself. Applying it costs ``n (n1 + n2)``
multiply-adds per vector as two batched matmuls, against ``n^2`` for a dense matrix.

Axes up to ``DENSE_UP_TO`` use one dense ``n x n`` block instead, the most expressive choice:
there one GEMM without layout copies is faster than the two batched ones and their transposes
(``benchmarks/bench_relax.py``; results in ``benchmarks/results/``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .circular import as_dtype

DENSE_UP_TO = 192


class _MonarchApply(torch.autograd.Function):
    """``x (m, n1, n2) -> P^T B2 P B1 x`` per row, as ``(m, n1, n2)``, with every batched matmul
    taking its operands as strided views that BLAS reads directly: one layout copy forward
    (the output), two backward, where autograd's own formulas copy every operand."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
        y = torch.bmm(b1, x.permute(1, 2, 0))  # (n1, n2, m): block a of B1 on chunk a
        z = torch.bmm(b2, y.transpose(0, 1))  # (n2, n1, m): block j of B2 on stride-n2 slice j
        ctx.save_for_backward(x, b1, b2)  # y is recomputed: one batched matmul, an activation less held
        return z.permute(2, 1, 0).contiguous()  # (m, n1, n2): position c * n2 + j

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, b1, b2 = ctx.saved_tensors
        y = torch.bmm(b1, x.permute(1, 2, 0))
        gz = grad.permute(2, 1, 0).contiguous()  # (n2, n1, m)
        gb2 = torch.bmm(gz, y.permute(1, 2, 0))  # (n2, n1, n1)
        gy = torch.bmm(b2.transpose(1, 2), gz).transpose(0, 1)  # (n1, n2, m)
        gb1 = torch.bmm(gy, x.transpose(0, 1))  # (n1, n2, n2)
        gx = torch.bmm(b1.transpose(1, 2), gy).permute(2, 0, 1) if ctx.needs_input_grad[0] else None
        return gx, gb1, gb2


def along(matrix: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """``matrix @ x`` along axis ``dim`` of ``x`` (``matrix`` is ``(out, in)``). On an inner axis:
    one GEMM per leading index with the matrix broadcast at stride 0 (``matmul(matrix, x)``
    would copy the broadcast matrix). ``matrix`` is cast to the dtype of ``x`` (half factors on
    an upcast input)."""
    matrix = as_dtype(matrix, x.dtype)
    if dim == x.dim() - 1:
        return torch.matmul(x, matrix.T)
    before, after = math.prod(x.shape[:dim]), math.prod(x.shape[dim + 1 :])
    y = torch.bmm(matrix.expand(before, *matrix.shape), x.reshape(before, x.shape[dim], after))
    return y.reshape(*x.shape[:dim], matrix.shape[0], *x.shape[dim + 1 :])


def balanced_factors(n: int) -> tuple[int, int]:
    """Return ``(n1, n2)`` with ``n1 * n2 == n`` and ``n1`` the largest divisor ``<= sqrt(n)``."""
    n1 = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            n1 = d
    return n1, n // n1


class Monarch(nn.Module):
    """A learnable real ``n x n`` Monarch matrix, initialised to identity.

    Parameters
    ----------
    n : int
        Length of the vectors it acts on.
    """

    def __init__(self, n: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.n = n
        self.n1, self.n2 = (1, n) if n <= DENSE_UP_TO else balanced_factors(n)
        kw = {"device": device, "dtype": dtype}
        self.blocks1 = nn.Parameter(torch.eye(self.n2, **kw).expand(self.n1, self.n2, self.n2).clone())
        if self.n1 > 1:
            self.blocks2 = nn.Parameter(torch.eye(self.n1, **kw).expand(self.n2, self.n1, self.n1).clone())
        else:
            self.register_parameter("blocks2", None)

    def extra_repr(self) -> str:
        return f"n={self.n}, blocks={self.n1}x{self.n2}"

    def forward(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Apply the matrix along axis ``dim`` of ``x``."""
        return apply_monarch(self.blocks1, self.blocks2, x, dim)

    def dense(self) -> torch.Tensor:
        """The matrix itself, ``n x n`` (for inspection and hardening)."""
        eye = torch.eye(self.n, device=self.blocks1.device, dtype=self.blocks1.dtype)
        return self(eye).T


def apply_monarch(blocks1: torch.Tensor, blocks2: torch.Tensor | None, x: torch.Tensor, dim: int) -> torch.Tensor:
    """The Monarch matrix with these blocks (``blocks2`` None: one dense block) along ``dim`` of ``x``."""
    dim = dim % x.dim()
    n1, n2 = blocks1.shape[0], blocks1.shape[1]
    if x.shape[dim] != n1 * n2:
        raise ValueError(f"Monarch of size {n1 * n2} got an axis of {x.shape[dim]}")
    if blocks2 is None:
        return along(blocks1[0], x, dim)
    if dim != x.dim() - 1:
        return apply_monarch(blocks1, blocks2, x.movedim(dim, -1), -1).movedim(-1, dim)
    blocks1, blocks2 = as_dtype(blocks1, x.dtype), as_dtype(blocks2, x.dtype)  # half factors on an upcast input
    return _MonarchApply.apply(x.reshape(-1, n1, n2), blocks1, blocks2).reshape(x.shape)


class LinearMap(nn.Module):
    """A learnable real ``n x k`` matrix applied along one axis (an architecture parameter).

    XD uses it for ``Q_L`` when the kernel buffer is truncated (initialised to the
    zero-extension ``[I; 0]``, so ``L = conj F Q_L`` starts as the DFT) and for the graph
    eigenbases of graph convolutions.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.n, self.k = matrix.shape
        self.matrix = nn.Parameter(matrix.clone())

    @classmethod
    def embedding(cls, k: int, n: int, *, device=None, dtype=None) -> "LinearMap":
        return cls(torch.eye(n, k, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.k} -> {self.n}"

    def forward(self, w: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Apply along axis ``dim`` of ``w``."""
        return along(self.matrix, w, dim % w.dim())


class FixedMonarch(nn.Module):
    """A frozen Monarch matrix: its blocks as buffers (no architecture parameters left)."""

    def __init__(self, blocks1: torch.Tensor, blocks2: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("blocks1", blocks1.detach().clone())
        self.register_buffer("blocks2", None if blocks2 is None else blocks2.detach().clone())

    @classmethod
    def of(cls, monarch: Monarch) -> "FixedMonarch":
        return cls(monarch.blocks1, monarch.blocks2)

    def forward(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return apply_monarch(self.blocks1, self.blocks2, x, dim)
