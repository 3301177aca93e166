"""Real DFTs as matmuls: how spectral and frozen layers take their transforms without FFT ops,
which export to plain MatMuls (onnxruntime's ``DFT`` op is slow).

- Dense cos/sin bases of one axis, restricted to chosen frequencies and output positions
  (:func:`dft_bases`): cheap for a few modes.
- Factored (Cooley-Tukey, one level) DFTs of any length ``n = n1 * n2`` (:func:`factored_rdft`):
  per axis a matmul shared by all positions and one batched over ``n1`` with the twiddles folded
  into its matrices, ``O(n (n1 + n2))`` instead of ``O(n^2)``; the same structure as a Monarch
  matrix (:mod:`.monarch`), with the frozen Monarch factors of a layer applied in the same layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .circular import as_dtype
from .monarch import along, balanced_factors

Bases = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def dft_bases(n: int, k: torch.Tensor, pos_in: torch.Tensor, pos_out: torch.Tensor, last: bool, device=None,
              dtype=None) -> Bases:
    """The real DFT of one axis of length ``n`` restricted to frequencies ``k``, as matrices:
    forward ``(cos, sin)`` ``(K, N_in)`` over input positions ``pos_in``, inverse ``(cos, sin)``
    ``(T, K)`` onto output positions ``pos_out``, scaled by ``1/n`` (doubled for the interior
    bins of the ``last``, one-sided axis: each stands for a conjugate pair)."""
    k, pos_in, pos_out = (t.to(torch.float64) for t in (k, pos_in, pos_out))
    ang_in = 2 * math.pi * k[:, None] * pos_in[None, :] / n
    ang_out = 2 * math.pi * pos_out[:, None] * k[None, :] / n
    scale = torch.full_like(k, 1.0 / n)
    if last:
        scale = torch.where((k == 0) | (2 * k == n), scale, 2 * scale)
    bases = (ang_in.cos(), ang_in.sin(), ang_out.cos() * scale, ang_out.sin() * scale)
    return tuple(b.to(device=device, dtype=dtype) for b in bases)


def real_dft(x: torch.Tensor, bases: Sequence[Bases]) -> tuple[torch.Tensor, torch.Tensor]:
    """``rfftn`` of real ``x`` ``(B, C, *spatial)`` over its spatial axes as real matmuls with
    :func:`dft_bases` (one per axis, the last axis one-sided): ``(real, imag)``."""
    d = len(bases)
    last = 1 + d
    cf, sf, _, _ = bases[-1]
    yr, yi = along(cf, x, last), -along(sf, x, last)
    for i in range(d - 1):
        c, s, _, _ = bases[i]
        yr, yi = along(c, yr, 2 + i) + along(s, yi, 2 + i), along(c, yi, 2 + i) - along(s, yr, 2 + i)
    return yr, yi


def inverse_real_dft(zr: torch.Tensor, zi: torch.Tensor, bases: Sequence[Bases]) -> torch.Tensor:
    """The inverse of :func:`real_dft` onto the bases' output positions (a real result)."""
    d = len(bases)
    for i in range(d - 1):
        _, _, c, s = bases[i]
        zr, zi = along(c, zr, 2 + i) - along(s, zi, 2 + i), along(c, zi, 2 + i) + along(s, zr, 2 + i)
    _, _, c, s = bases[-1]
    return along(c, zr, 1 + d) - along(s, zi, 1 + d)


def packed_bases(bases: Bases) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis's :func:`dft_bases` as two matrices: forward ``(2K, N_in)``, the real parts'
    rows then the imaginary parts', and inverse ``(T, 2K)`` taking them in that order."""
    c_in, s_in, c_out, s_out = bases
    return torch.cat([c_in, -s_in], 0).contiguous(), torch.cat([c_out, -s_out], 1).contiguous()


def real_block(v: torch.Tensor) -> torch.Tensor:
    """``[[vr, vi], [-vi, vr]]`` of complex matrices given as (real, imag) pairs ``(..., i, o, 2)``:
    ``(..., 2i, 2o)``, so that ``[xr, xi] @ block = [Re(x v), Im(x v)]`` (one real matmul)."""
    vr, vi = v[..., 0], v[..., 1]
    return torch.cat([torch.cat([vr, vi], -1), torch.cat([-vi, vr], -1)], -2)


def store_bases(module: nn.Module, bases: Sequence[Bases]) -> None:
    """Keep ``bases`` on ``module`` as non-persistent buffers (they follow ``.to()``, stay out of
    the state dict, and become constants of a traced graph)."""
    for i, axis in enumerate(bases):
        for j, t in enumerate(axis):
            module.register_buffer(f"dft_{i}_{j}", t, persistent=False)


def stored_bases(module: nn.Module, axes: int) -> list[Bases]:
    return [tuple(getattr(module, f"dft_{i}_{j}") for j in range(4)) for i in range(axes)]


# ------------------------------------------------------------------ factored (Cooley-Tukey) DFT
#: Axes shorter than this, or without a factor of at least 4, take one dense step instead of two.
FACTOR_FROM = 128


def axis_split(n: int, factor_from: int = FACTOR_FROM) -> tuple[int, int]:
    """``(n1, n2)`` with ``n1 * n2 == n`` for a factored DFT of length ``n`` (``n1 <= n2``, as
    balanced as the divisors allow); ``(1, n)``, one dense step, for short or unfactorable axes."""
    n1, n2 = balanced_factors(n)
    return (n1, n2) if n >= factor_from and n1 >= 4 else (1, n)


@dataclass(frozen=True)
class FactoredAxis:
    """One axis of a factored real DFT: length ``n = n1 * n2``, position ``t = n2 t1 + t2`` and
    frequency ``k = k1 + n1 k2`` with ``k2 < k2s``. Slots are ordered ``(k1, k2)`` (a permutation
    of the frequencies, which the per-frequency mixing does not care about). ``real`` axes take a
    real input and give a real output (the first axis); the ``one_sided`` axis (the last) keeps
    ``k <= n / 2``: its slots beyond are redundant and weighted 0 by the inverse."""

    n: int
    n1: int
    n2: int
    k2s: int
    real: bool
    one_sided: bool

    @property
    def slots(self) -> int:
        return self.n1 * self.k2s

    def frequencies(self) -> torch.Tensor:
        """The frequency of every slot, ``-1`` for the redundant ones of a one-sided axis."""
        k = (torch.arange(self.n1)[:, None] + self.n1 * torch.arange(self.k2s)[None, :]).reshape(-1)
        return torch.where(k <= self.n // 2, k, -1) if self.one_sided else k


def factored_axes(ns: Sequence[int], max_freq_last: int | None = None,
                  splits: Sequence[tuple[int, int]] | None = None) -> list[FactoredAxis]:
    """The plan of a real DFT over axes of lengths ``ns`` (the last one-sided, the first real).
    ``max_freq_last`` drops the last axis's slots whose ``k2`` only reaches frequencies above it
    (a spectral layer's kept modes)."""
    out, d = [], len(ns)
    for i, n in enumerate(ns):
        n1, n2 = splits[i] if splits is not None else axis_split(n)
        if n1 * n2 != n:
            raise ValueError(f"split {n1} x {n2} is not {n}")
        k2s = n2
        if i == d - 1:
            top = n // 2 if max_freq_last is None else min(n // 2, max_freq_last)
            k2s = top // n1 + 1
        out.append(FactoredAxis(n, n1, n2, k2s, i == 0, i == d - 1))
    return out


def _rotations(theta: torch.Tensor, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(re, im)`` of multiplying ``(zr, zi)`` by ``exp(sign * i * theta)``, over trailing
    column pairs ``(re, im)``: ``re = [cos, -sin sign]``, ``im = [sin sign, cos]``."""
    c, s = theta.cos(), sign * theta.sin()
    return torch.stack([c, -s], -1).flatten(-2), torch.stack([s, c], -1).flatten(-2)


def factored_matrices(ax: FactoredAxis, device=None, dtype=None) -> dict[str, torch.Tensor]:
    """The real matrices of one factored axis (see :func:`factored_rdft`): forward ``w1``
    ``(2 n1, c n1)`` and ``w2`` ``(n1, 2 k2s, c n2)`` (twiddles folded in), inverse ``wa``
    ``(n1, c n2, 2 k2s)`` (twiddles and the ``1/n`` and one-sided weights folded in) and ``wb``
    ``(c n1, 2 n1)``; ``w1`` and ``wb`` are absent when ``n1 == 1``."""
    f64 = dict(dtype=torch.float64)
    n, n1, n2 = ax.n, ax.n1, ax.n2
    k1, k2, t1, t2 = (torch.arange(m, **f64) for m in (n1, ax.k2s, n1, n2))
    k = k1[:, None] + n1 * k2[None, :]  # (n1, k2s)
    out = {}
    # forward: exp(-i theta) on (re, im) inputs
    if n1 > 1:
        re, im = _rotations(2 * math.pi * k1[:, None] * t1[None, :] / n1, -1.0)  # (n1, 2 n1): cols (t1, c')
        w1 = torch.stack([re, im], 1)  # rows (k1, c)
        w1 = w1.reshape(n1, 2, n1, 2).permute(0, 1, 3, 2).reshape(2 * n1, 2 * n1)  # cols (c', t1)
        out["w1"] = w1[:, :n1] if ax.real else w1
    re, im = _rotations(2 * math.pi * k[..., None] * t2 / n, -1.0)  # (n1, k2s, 2 n2): cols (t2, c')
    w2 = torch.stack([re, im], 2).reshape(n1, ax.k2s, 2, n2, 2).permute(0, 1, 2, 4, 3)  # rows (k2, c), cols (c', t2)
    w2 = w2.reshape(n1, 2 * ax.k2s, 2 * n2)
    out["w2"] = w2[..., :n2] if ax.real and n1 == 1 else w2
    # inverse: exp(+i theta), scaled by 1/n (and the one-sided weights 0 / 1 / 2)
    kk = k.reshape(-1)
    scale = torch.ones_like(kk)
    if ax.one_sided:
        scale = torch.where((kk == 0) | (2 * kk == n), scale, 2 * scale).masked_fill(kk > n // 2, 0.0)
    scale = (scale / n).reshape(n1, 1, ax.k2s, 1)
    re, im = _rotations(2 * math.pi * t2[None, :, None] * k[:, None, :] / n, 1.0)  # (n1, n2, 2 k2s): cols (k2, c')
    wa = torch.stack([re, im], 1)  # (n1, 2, n2, 2 k2s): rows (c, t2)
    wa = (wa.reshape(n1, 2, n2, ax.k2s, 2) * scale[:, :, None]).reshape(n1, 2 * n2, 2 * ax.k2s)
    out["wa"] = wa[:, :n2] if ax.real and n1 == 1 else wa
    if n1 > 1:
        re, im = _rotations(2 * math.pi * t1[:, None] * k1[None, :] / n1, 1.0)  # (n1, 2 n1): cols (k1, c')
        out["wb"] = re if ax.real else torch.cat([re, im], 0)  # rows (c, t1)
    return {name: t.to(device=device, dtype=dtype) for name, t in out.items()}


def _forward_axis(x: torch.Tensor, ax: FactoredAxis, m: dict[str, torch.Tensor], lead: int) -> torch.Tensor:
    """``(lead, [2,] n, R)`` -> ``(lead, slots, 2, R)``: two matmuls, the first shared by every
    ``t2``, the second batched over ``k1`` with the twiddles in its matrices."""
    c = 1 if ax.real else 2
    if ax.n1 > 1:
        x = torch.matmul(as_dtype(m["w1"], x.dtype), x.reshape(lead, c * ax.n1, -1))
        c = 2
    return torch.matmul(as_dtype(m["w2"], x.dtype), x.reshape(lead, ax.n1, c * ax.n2, -1))


def _inverse_axis(z: torch.Tensor, ax: FactoredAxis, m: dict[str, torch.Tensor], lead: int) -> torch.Tensor:
    """``(lead, slots, 2, R)`` -> ``(lead, [2,] n, R)`` (real on a ``real`` axis)."""
    y = torch.matmul(as_dtype(m["wa"], z.dtype), z.reshape(lead, ax.n1, 2 * ax.k2s, -1))
    if ax.n1 > 1:
        y = torch.matmul(as_dtype(m["wb"], z.dtype), y.reshape(lead, 2 * ax.n1, -1))
    return y


def factored_rdft(x: torch.Tensor, axes: Sequence[FactoredAxis], mats: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """The real DFT of ``x`` ``(*ns, R)`` over its leading axes, on the slots of ``axes``:
    ``(prod slots, 2, R)`` (real, imag), ``O(n (n1 + n2))`` per axis in plain (batched) matmuls."""
    lead = 1
    for ax, m in zip(axes, mats):
        x = _forward_axis(x, ax, m, lead)
        lead *= ax.slots
    return x.reshape(lead, 2, -1)


def factored_irdft(z: torch.Tensor, axes: Sequence[FactoredAxis], mats: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """The inverse of :func:`factored_rdft`: ``(prod slots, 2, R)`` -> real ``(*ns, R)``, the
    one-sided axis counted twice for its interior bins (``irfftn``)."""
    lead = math.prod(ax.slots for ax in axes)
    for ax, m in zip(reversed(axes), reversed(mats)):
        lead //= ax.slots
        z = _inverse_axis(z, ax, m, lead)
    return z.reshape(*(ax.n for ax in axes), -1)


def store_factored(module: nn.Module, mats: Sequence[dict[str, torch.Tensor]]) -> None:
    """Keep the matrices as non-persistent buffers ``fdft_<axis>_<name>`` (see :func:`store_bases`)."""
    for i, m in enumerate(mats):
        for name, t in m.items():
            module.register_buffer(f"fdft_{i}_{name}", t, persistent=False)


def stored_factored(module: nn.Module, axes: int) -> list[dict[str, torch.Tensor]]:
    return [{name: getattr(module, f"fdft_{i}_{name}") for name in ("w1", "w2", "wa", "wb")
             if hasattr(module, f"fdft_{i}_{name}")} for i in range(axes)]


def slot_index(axes: Sequence[FactoredAxis], positions: Sequence[torch.Tensor]) -> torch.Tensor:
    """For every slot of ``axes`` (row-major over axes), its row in a table of frequencies laid out
    row-major over ``positions`` (per axis, frequency -> position in the table, ``-1`` where the
    table lacks it); slots the table lacks, and redundant slots, get the row after the table's
    last (a zero row appended by the caller)."""
    sizes = [int((p >= 0).sum()) for p in positions]
    flat = torch.zeros((), dtype=torch.long)
    ok = torch.ones((), dtype=torch.bool)
    for ax, pos, size in zip(axes, positions, sizes):
        f = ax.frequencies()
        at = torch.where(f >= 0, pos[f.clamp(min=0)], -1)
        flat = flat[..., None] * size + at.clamp(min=0)
        ok = ok[..., None] & (at >= 0)
    return torch.where(ok, flat, math.prod(sizes)).reshape(-1)


def mix_slots(z: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """Per slot and group ``out[o] = sum_i z[i] v[i, o]`` (complex, as (real, imag) pairs):
    ``z`` ``(P, 2, B, G*C_in)``, ``v`` ``(P, G, C_in, C_out, 2)`` -> ``(P, 2, B, G*C_out)``; one
    batched real matmul ``[zr, zi] @ [[vr, vi], [-vi, vr]]`` (a broadcast product where ``C_in == 1``)."""
    p, g, cin, cout = v.shape[0], groups, v.shape[2], v.shape[3]
    v = as_dtype(v, z.dtype)
    if cin == 1:
        vr, vi = v[..., 0].reshape(p, 1, g, cout), v[..., 1].reshape(p, 1, g, cout)
        z = z.reshape(p, 2, -1, g, 1)
        zr, zi = z[:, 0], z[:, 1]
        return torch.stack([zr * vr - zi * vi, zr * vi + zi * vr], 1).reshape(p, 2, -1, g * cout)
    # (P, 2, B, C) -> (P, [G,] B, 2 C): these transposes move whole channel rows (cheap in onnxruntime)
    if g == 1:
        y = torch.matmul(z.transpose(1, 2).reshape(p, -1, 2 * cin), real_block(v[:, 0]))
        return y.reshape(p, -1, 2, cout).transpose(1, 2)
    z = z.reshape(p, 2, -1, g, cin).permute(0, 3, 2, 1, 4).reshape(p, g, -1, 2 * cin)
    y = torch.matmul(z, real_block(v)).reshape(p, g, -1, 2, cout)
    return y.permute(0, 3, 2, 1, 4).reshape(p, 2, -1, g * cout)


Factors = tuple[torch.Tensor, "torch.Tensor | None"]


def along_leading(x: torch.Tensor, factors: Factors, axis: int, ns: Sequence[int]) -> torch.Tensor:
    """A frozen Monarch matrix (``blocks1``, ``blocks2``: see :mod:`.monarch`) applied along
    ``axis`` of ``x`` ``(*ns, R)``: batched matmuls over leading indices, whose layout changes
    move whole trailing rows (onnxruntime transposes those fast, and reversed axes slowly)."""
    b1, b2 = (as_dtype(b, x.dtype) if b is not None else None for b in factors)
    lead, n = math.prod(ns[:axis]), ns[axis]
    if b2 is None:
        return torch.matmul(b1[0], x.reshape(lead, n, -1)).reshape(x.shape)
    n1, n2 = b1.shape[0], b1.shape[1]
    y = torch.matmul(b1, x.reshape(lead, n1, n2, -1))  # block c of B1 on chunk c
    y = torch.matmul(b2, y.transpose(1, 2))  # block j of B2 on the stride-n2 slice j
    return y.transpose(1, 2).reshape(x.shape)


def factored_conv(x: torch.Tensor, v: torch.Tensor, groups: int, axes: Sequence[FactoredAxis],
                  mats: Sequence[dict[str, torch.Tensor]], index: torch.Tensor,
                  pre: Sequence[Factors] = (), post: Sequence[Factors] = ()) -> torch.Tensor:
    """``Q_K irfftn(v * rfftn(Q_M x))`` per channel pair over the spatial axes of ``x``
    ``(B, C_in, *n)``, with the factored DFTs of ``axes``: ``v`` ``(F, G, C_in/G, C_out/G, 2)`` is
    gathered onto the slots by ``index`` (row ``F``, a zero row, where a slot has no weight);
    ``pre`` / ``post``: frozen Monarch factors of ``Q_M`` / ``Q_K`` per axis (or none).
    Returns ``(B, C_out, *n)``."""
    d = x.dim() - 2
    ns = list(x.shape[2:])
    xt = x.permute(*range(2, 2 + d), 0, 1)  # (*n, B, C): the transforms contract leading axes
    for i, f in enumerate(pre):
        xt = along_leading(xt, f, i, ns)
    z = factored_rdft(xt, axes, mats)
    v = torch.cat([v, v.new_zeros(1, *v.shape[1:])]).index_select(0, index.to(v.device))
    z = mix_slots(z.reshape(z.shape[0], 2, -1, x.shape[1]), v, groups)
    y = factored_irdft(z.reshape(z.shape[0], 2, -1), axes, mats)  # (*n, B * C_out)
    for i, f in enumerate(post):
        y = along_leading(y, f, i, ns)
    return y.reshape(*ns, x.shape[0], -1).permute(d, d + 1, *range(d))
