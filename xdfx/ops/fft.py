"""Real FFTs whose backward passes are real FFTs too, batched matmuls with fast backwards, and
the XD layer's spectral core: ``spectral_mix`` (real FFT, then one complex matmul per frequency,
in a frequency-major layout) and ``irfftn_batch_major`` (back to ``(B, C, *spatial)``).

``torch.fft.rfftn``'s autograd formula runs a full complex FFT on a zero-extended gradient;
its adjoint is an unnormalised inverse real FFT with the interior bins of the last axis halved
(the inverse real FFT counts each of them twice, for the conjugate pair it stands for), which
costs half as much and allocates no full spectrum.
"""

from __future__ import annotations

import math
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
        gx = _rfftn_adjoint(grad.conj() if ctx.conj else grad, s, dim)
        return _crop(gx, dim, ctx.sizes), None, None, None


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


def frequency_major(spectrum: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, G*C, *freq)`` -> ``(*freq, G, B, C)``, contiguous: per frequency and group, the
    ``(B, C)`` matrix of the channel mixing."""
    b, gc, freq = spectrum.shape[0], spectrum.shape[1], spectrum.shape[2:]
    d = len(freq)
    spectrum = spectrum.reshape(b, groups, gc // groups, *freq)
    return spectrum.permute(*range(3, 3 + d), 1, 0, 2).contiguous()


def batch_major(t: torch.Tensor, d: int) -> torch.Tensor:
    """``(*spatial, G, B, C)`` -> ``(B, G*C, *spatial)`` (a view where ``G == 1``)."""
    g, b, c = t.shape[d:]
    return t.permute(d + 1, d, d + 2, *range(d)).reshape(b, g * c, *t.shape[:d])


def _mix(xt: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """``(p, g, b, cin) x (p, g, cin, cout) -> (p, g, b, cout)``: one batched matmul over the
    ``p * g`` (frequency, group) pairs; ``cin == 1`` is a broadcast product."""
    if xt.shape[-1] == 1:
        return xt * diag
    p, g, b, cin = xt.shape
    return torch.matmul(xt.reshape(p * g, b, cin), diag.reshape(p * g, cin, -1)).reshape(p, g, b, -1)


def _forward_mix(x: torch.Tensor, diag: torch.Tensor, s: tuple[int, ...], groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frequency-major spectrum of ``x`` and the mixed spectrum (see :func:`spectral_mix`)."""
    d = len(s)
    xt = frequency_major(torch.fft.rfftn(x, s=s, dim=tuple(range(2, 2 + d))), groups)
    freq = xt.shape[:d]
    p = math.prod(freq)
    y = _mix(xt.reshape(p, *xt.shape[d:]), diag.reshape(p, *diag.shape[d:]))
    return xt, y.reshape(*freq, *y.shape[1:])


class _SpectralMix(torch.autograd.Function):
    """``rfftn`` then the per-frequency channel matmul, in the frequency-major layout. The backward
    multiplies contiguous operands by conjugate transposes (which CPU BLAS reads as they are,
    where a plain transpose of a complex batch is copied matrix by matrix) and its inverse FFT
    writes the batch-major input gradient directly."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, diag: torch.Tensor, s: tuple[int, ...], groups: int) -> torch.Tensor:
        xt, y = _forward_mix(x, diag, s, groups)
        ctx.save_for_backward(xt, diag)
        ctx.s, ctx.sizes = s, tuple(x.shape[2:])
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        xt, diag = ctx.saved_tensors
        s, d = ctx.s, len(ctx.s)
        freq = xt.shape[:d]
        g, b, cin = xt.shape[d:]
        cout = diag.shape[-1]
        m = math.prod(freq) * g
        grad = grad.contiguous().reshape(m, b, cout)
        xt, diag = xt.reshape(m, b, cin), diag.reshape(m, cin, cout)
        gx = gdiag = None
        if ctx.needs_input_grad[1]:
            gdiag = (xt.conj() * grad).sum(1, keepdim=True) if cin == 1 else torch.bmm(xt.mH, grad)
            gdiag = gdiag.reshape(*freq, g, cin, cout)
        if ctx.needs_input_grad[0]:
            gxt = (grad * diag.conj()).sum(2, keepdim=True) if cin == 1 else torch.bmm(grad, diag.mH)
            gx = _rfftn_adjoint(gxt.reshape(*freq, g, b, cin), s, tuple(range(d)))
            gx = batch_major(_crop(gx, range(d), ctx.sizes), d)
        return gx, gdiag, None, None


def _crop(t: torch.Tensor, dims: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
    """The leading ``sizes`` along ``dims`` (undoes a transform's zero-extension)."""
    for d, size in zip(dims, sizes):
        if size != t.shape[d]:
            t = t.narrow(d, 0, size)
    return t


def _rfftn_adjoint(grad: torch.Tensor, s: tuple[int, ...], dim: tuple[int, ...]) -> torch.Tensor:
    """The adjoint of ``rfftn(., s, dim)`` (zero-extension included, cropping left to the caller):
    an unnormalised inverse real FFT with the interior bins of the last axis halved."""
    n = s[-1]
    scale = torch.full((n // 2 + 1,), 0.5, dtype=grad.real.dtype, device=grad.device)
    scale[0] = 1.0
    if n % 2 == 0:
        scale[-1] = 1.0
    view = [1] * grad.dim()
    view[dim[-1]] = -1
    return torch.fft.irfftn(grad * scale.view(view), s=s, dim=dim, norm="forward")


def spectral_mix(x: torch.Tensor, diag: torch.Tensor, s: Sequence[int], groups: int) -> torch.Tensor:
    """``rfftn(x, s)`` over the spatial axes of ``x`` ``(B, G*C_in, *spatial)``, then per frequency
    and group ``y[b, o] = sum_i X[b, i] diag[i, o]``; ``diag`` is ``(*freq, G, C_in/G, C_out/G)``.
    Returns ``(*freq, G, B, C_out/G)``, the frequency-major layout (see :func:`irfftn_batch_major`)."""
    s = tuple(int(v) for v in s)
    if any(size > n for size, n in zip(x.shape[2:], s)):
        raise ValueError(f"spectral_mix: input sizes {list(x.shape[2:])} exceed the transform {list(s)}")
    if torch.is_grad_enabled() and (x.requires_grad or diag.requires_grad):
        return _SpectralMix.apply(x, diag.contiguous(), s, groups)
    return _forward_mix(x, diag.contiguous(), s, groups)[1]


def irfftn_batch_major(spectrum: torch.Tensor, s: Sequence[int]) -> torch.Tensor:
    """Inverse real FFT of a frequency-major ``(*freq, G, B, C)`` spectrum over its leading
    ``len(s)`` axes, returned batch-major ``(B, G*C, *s)`` (the FFT writes that layout itself)."""
    d = len(s)
    return batch_major(torch.fft.irfftn(spectrum, s=tuple(s), dim=tuple(range(d))), d)
