"""The building blocks: real FFT with a real-FFT backward, batched matmul, the spectral mix,
Monarch, sizes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xdfx.ops import Monarch, smooth_size
from xdfx.ops.fft import batched_matmul, irfftn_batch_major, rfftn, spectral_mix


@pytest.mark.parametrize(
    "shape,s,dim",
    [((3, 7), (7,), (-1,)), ((3, 8), (10,), (-1,)), ((2, 5, 6), (9, 8), (1, 2)), ((2, 3, 4, 5), (3, 6, 7), (1, 2, 3))],
)
def test_rfftn_gradient(shape, s, dim) -> None:
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: torch.view_as_real(rfftn(t, s, dim)), (x,))
    assert torch.allclose(rfftn(x, s, dim), torch.fft.rfftn(x, s=s, dim=dim))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_batched_matmul_gradient(dtype) -> None:
    a = torch.randn(5, 3, 4, dtype=dtype, requires_grad=True)
    b = torch.randn(5, 4, 2, dtype=dtype, requires_grad=True)
    assert torch.autograd.gradcheck(batched_matmul, (a.transpose(1, 2).contiguous().transpose(1, 2), b))


@pytest.mark.parametrize(
    "shape,s,groups,cout",
    [
        ((2, 3, 7), (7,), 1, 4),  # plain
        ((2, 4, 6), (9,), 2, 3),  # zero-extended, grouped
        ((3, 1, 5), (8,), 1, 2),  # one input channel: the broadcast product
        ((2, 3, 4), (4,), 3, 1),  # depthwise
        ((2, 2, 5, 6), (6, 8), 1, 3),  # 2-d, odd and even axes
        ((1, 2, 3, 4, 5), (4, 4, 6), 2, 1),  # 3-d, grouped
    ],
)
def test_spectral_mix_matches_its_definition_and_its_gradient(shape, s, groups, cout) -> None:
    """``spectral_mix`` + ``irfftn_batch_major`` equal ``irfftn(sum_i rfftn(x)_i diag_io)`` and
    their hand-written backward passes gradcheck (float64, both inputs)."""
    b, c, d = shape[0], shape[1], len(s)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    freq = (*s[:-1], s[-1] // 2 + 1)
    diag = torch.randn(*freq, groups, c // groups, cout, dtype=torch.complex128, requires_grad=True)

    def layer(x, diag):
        return irfftn_batch_major(spectral_mix(x, diag, s, groups), s)

    xf = torch.fft.rfftn(x, s=s, dim=tuple(range(2, 2 + d))).reshape(b, groups, c // groups, *freq)
    w = diag.permute(d, d + 1, d + 2, *range(d))  # (g, cin, cout, *freq)
    ref = torch.einsum("bgi...,gio...->bgo...", xf, w).reshape(b, groups * cout, *freq)
    ref = torch.fft.irfftn(ref, s=s, dim=tuple(range(2, 2 + d)))
    assert torch.allclose(layer(x, diag), ref, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x, diag))


@pytest.mark.parametrize("n", [1, 7, 12, 64, 97, 1080])
def test_monarch_starts_at_identity_and_is_a_linear_map(n: int) -> None:
    q = Monarch(n, dtype=torch.float64)
    x = torch.randn(3, 2, n, dtype=torch.float64)
    assert torch.equal(q(x), x)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(torch.randn_like(p))
    dense = q.dense()
    assert torch.allclose(q(x), x @ dense.T)
    assert torch.allclose(q(x.transpose(1, 2), dim=1), (x @ dense.T).transpose(1, 2))
    assert sum(p.numel() for p in q.parameters()) <= n * n + n


@pytest.mark.parametrize("dim", [2, 1])
@pytest.mark.parametrize("n", [12, 97 * 2, 210])
def test_monarch_gradient(n: int, dim: int) -> None:
    """Dense (n <= DENSE_UP_TO) and factored Monarchs, on the last axis (the hand-written
    backward over strided batched matmuls) and an inner one (the stride-0 batched GEMM, or the
    axis moved last), against finite differences."""
    q = Monarch(n, dtype=torch.float64)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 3, n, dtype=torch.float64).movedim(2, dim).contiguous().requires_grad_()
    names, params = zip(*q.named_parameters())

    def apply(t, *blocks):
        return torch.func.functional_call(q, dict(zip(names, blocks)), (t, dim))

    assert torch.autograd.gradcheck(apply, (x, *(p.detach().clone().requires_grad_() for p in params)))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000))
def test_smooth_size(n: int) -> None:
    m = smooth_size(n)
    assert n <= m <= 1 << (n - 1).bit_length()
    r = m
    for p in (2, 3, 5, 7):
        while r % p == 0:
            r //= p
    assert r == 1


def test_xd_layer_with_learned_factors_gradient() -> None:
    """Q_M and Q_K are recomputed in backward while training: gradients stay exact (float64)."""
    import xdfx
    from torch import nn

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    relaxed = xdfx.relax(nn.Sequential(conv), torch.randn(1, 2, 4, 3, dtype=torch.float64), arch="monarch")
    xd = relaxed.get_submodule("0")
    with torch.no_grad():
        for q in list(xd.M) + list(xd.K):
            q.blocks1.add_(0.1 * torch.randn_like(q.blocks1))
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    factors = [xd.M[0].blocks1, xd.K[1].blocks1]
    assert torch.autograd.gradcheck(lambda t, *f: xd(t), (x, *factors), eps=1e-6, atol=1e-6)
