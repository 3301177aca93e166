"""Real FFTs whose backward passes are real FFTs too, and a batched matmul with a fast backward.

``torch.fft.rfftn``'s autograd formula runs a full complex FFT on a zero-extended gradient;
its adjoint is an unnormalised inverse real FFT with the interior bins of the last axis halved
(the inverse real FFT counts each of them twice, for the conjugate pair it stands for), which
costs half as much and allocates no full spectrum.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _forward_rfftn(x: torch.Tensor, s: tuple[int, ...], dim: tuple[int, ...], conj: bool) -> torch.Tensor:
    # conj(rfftn(x)) of a real x is its inverse real FFT without the 1/N (in 1-d torch computes
    # that as a lazily conjugated rfft, resolved here so that the result can be viewed as real).
    if conj:
        return torch.fft.ihfftn(x, s=s, dim=dim, norm="forward").resolve_conj()
    return torch.fft.rfftn(x, s=s, dim=dim)


class _RealFFT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, s: tuple[int, ...], dim: tuple[int, ...], conj: bool) -> torch.Tensor:
        ctx.s, ctx.dim, ctx.sizes, ctx.conj = s, dim, tuple(x.shape[d] for d in dim), conj
        return _forward_rfftn(x, s, dim, conj)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        s, dim = ctx.s, ctx.dim
        if ctx.conj:
            grad = grad.conj()
        n = s[-1]
        scale = torch.full((n // 2 + 1,), 0.5, dtype=grad.real.dtype, device=grad.device)
        scale[0] = 1.0
        if n % 2 == 0:
            scale[-1] = 1.0
        view = [1] * grad.dim()
        view[dim[-1]] = -1
        gx = torch.fft.irfftn(grad * scale.view(view), s=s, dim=dim, norm="forward")
        for d, size in zip(dim, ctx.sizes):
            if size != gx.shape[d]:
                gx = gx.narrow(d, 0, size)
        return gx, None, None, None


def rfftn(x: torch.Tensor, s: Sequence[int], dim: Sequence[int], conj: bool = False) -> torch.Tensor:
    """``torch.fft.rfftn(x, s, dim)`` (zero-extends ``x`` to ``s``) with a real-FFT backward;
    ``conj=True`` returns its complex conjugate at no extra cost."""
    s, dim = tuple(int(v) for v in s), tuple(int(d) % x.dim() for d in dim)
    if any(x.shape[d] > n for d, n in zip(dim, s)):
        raise ValueError(f"rfftn: input sizes {[x.shape[d] for d in dim]} exceed the transform {s}")
    if not torch.is_grad_enabled() or not x.requires_grad:
        return _forward_rfftn(x, s, dim, conj)
    return _RealFFT.apply(x, s, dim, conj)



def _adjoint(t: torch.Tensor) -> torch.Tensor:
    """Conjugate transpose of the last two axes; complex ones materialised (BLAS takes real
    transposed operands as they are, but conjugate views are copied matrix by matrix)."""
    t = t.transpose(-1, -2)
    return t.conj_physical() if t.is_complex() else t


class _BatchedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return torch.matmul(a, b)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        grad = grad.contiguous()
        ga = torch.matmul(grad, _adjoint(b)) if ctx.needs_input_grad[0] else None
        gb = torch.matmul(_adjoint(a), grad) if ctx.needs_input_grad[1] else None
        return ga, gb


def batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` over batches of equal shape (real or complex), with a fast backward.

    Autograd's own backward multiplies by transposed (and, for complex, lazily conjugated)
    views, which the CPU batched kernel copies one matrix at a time; here each operand is
    materialised once instead.
    """
    if not torch.is_grad_enabled() or not (a.requires_grad or b.requires_grad):
        return torch.matmul(a.contiguous(), b.contiguous())
    return _BatchedMatmul.apply(a.contiguous(), b.contiguous())
