"""Per-axis geometry of a convolution written as a circular convolution of length ``n``.

PyTorch convolutions are cross-correlations: ``y[t] = sum_j w[j] xp[t*s + j*d]`` over the padded
input ``xp``. With the dilated kernel ``wd`` (taps at ``0, d, 2d, ...``) in a buffer of length
``n`` the circular cross-correlation ``z[t] = sum_u wd[u] xb[(t + u) mod n]`` is, in frequency,
``conj(F wd) * F xb`` (the flip of the kernel is a conjugation). The conv output is a gather
of ``z``:

* ``zeros``: ``xb`` is ``x`` zero-extended to ``n >= max(N + max(pad), span)``,
  ``y[t] = z[(t*s - pl) mod n]``.
* ``circular`` with the dilated kernel no longer than ``N``: ``n = N`` exactly (any ``N``,
  powers of two or not), ``y[t] = z[(t*s - pl) mod N]``.
* ``reflect`` / ``replicate`` (and circular with a longer kernel): ``x`` is padded first,
  ``n >= N + pl + pr``, ``y[t] = z[t*s]``.

No circular wrap-around reaches the kept outputs, so the warm start is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import XdfxShapeError

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


def _factor_cost(n: int, primes: tuple[int, ...]) -> int | None:
    """``n * sum of prime factors`` (an FFT's operation count, up to a constant), or None."""
    r, total = n, 0
    for p in primes:
        while r % p == 0:
            r //= p
            total += p
    return n * total if r == 1 else None


def smooth_size(n: int, primes: tuple[int, ...] = (2, 3, 5, 7)) -> int:
    """An FFT-friendly transform length ``>= n``: the cheapest ``primes``-smooth length up to the
    next power of two by the op-count proxy ``n * sum(prime factors)``.

    It prefers 1080 = 2^3 3^3 5 to 1029 = 3 7^3 for n = 1026 (pocketfft runs the latter 3x
    slower) and never pads past the next power of two.
    """
    n = max(int(n), 1)
    top = 1 << (n - 1).bit_length()
    best, best_cost = top, _factor_cost(top, primes)
    for m in range(n, top):
        cost = _factor_cost(m, primes)
        if cost is not None and cost < best_cost:
            best, best_cost = m, cost
    return best


def smooth_multiple(n: int, stride: int) -> int:
    """An FFT-friendly length ``>= n`` that is a multiple of ``stride`` (so that the stride can
    be taken in frequency, see :meth:`AxisGeometry.folds_stride`)."""
    if stride <= 1:
        return smooth_size(n)
    return stride * smooth_size(-(-n // stride))


@dataclass(frozen=True)
class AxisGeometry:
    """How one spatial axis of a convolution maps onto a length-``n`` circular convolution."""

    in_size: int
    kernel: int
    stride: int
    dilation: int
    pad: tuple[int, int]
    mode: str
    n: int
    kernel_buffer: int
    buffer_step: int = 1  # the buffer's taps sit this far apart (the dilation, when the span exceeds the cap)

    @property
    def span(self) -> int:
        """Extent of the dilated kernel, ``(k - 1) d + 1``."""
        return (self.kernel - 1) * self.dilation + 1

    @property
    def prepad(self) -> bool:
        """Whether the input is explicitly padded before the transform."""
        return not (self.mode == "zeros" or self.native_circular)

    @property
    def native_circular(self) -> bool:
        return self.mode == "circular" and self.n == self.in_size and self.span <= self.in_size

    @classmethod
    def plan(
        cls,
        in_size: int,
        kernel: int,
        stride: int,
        dilation: int,
        pad: tuple[int, int],
        mode: str,
        max_kernel_size: int | None,
    ) -> "AxisGeometry":
        """Choose the transform length and the kernel buffer length for one axis."""
        if mode not in PADDING_MODES:
            raise ValueError(f"padding_mode {mode!r} is not one of {PADDING_MODES}")
        span = (kernel - 1) * dilation + 1
        pl, pr = pad
        if in_size + pl + pr < span:
            raise XdfxShapeError(
                f"input length {in_size} padded by {pad} is shorter than the kernel span {span}"
            )
        if mode == "circular" and span <= in_size:
            n = in_size
        elif mode == "zeros":
            n = smooth_multiple(max(in_size + max(pl, pr), span), stride)
        else:
            n = smooth_multiple(in_size + pl + pr, stride)
        n_w, step = cls.buffer(n, kernel, dilation, max_kernel_size)
        return cls(in_size, kernel, stride, dilation, (pl, pr), mode, n, n_w, step)

    @staticmethod
    def buffer(n: int, kernel: int, dilation: int, cap: int | None) -> tuple[int, int]:
        """``(taps, step)`` of the kernel buffer under a cap of ``cap`` taps (None: all ``n``): the
        contiguous window of ``max(span, cap)`` where the dilated kernel fits the cap, else ``cap``
        taps at the conv's dilation, so that a dilated conv is capped by its taps, not its span."""
        span = (kernel - 1) * dilation + 1
        if cap is None:
            return n, 1
        cap = int(cap)
        if span <= cap or dilation == 1:
            return min(n, max(span, cap)), 1
        return min(max(kernel, cap), (n - 1) // dilation + 1), dilation

    def buffer_index(self) -> slice:
        """Where the conv's taps sit in the kernel buffer."""
        step = self.dilation // self.buffer_step
        return slice(0, (self.kernel - 1) * step + 1, step)

    def buffer_embedding(self, **kw) -> torch.Tensor:
        """The ``n x kernel_buffer`` zero-extension that places the buffer's taps on the length-n axis."""
        e = torch.zeros(self.n, self.kernel_buffer, **kw)
        e[torch.arange(self.kernel_buffer) * self.buffer_step, torch.arange(self.kernel_buffer)] = 1
        return e

    def conv_input_size(self, size: int) -> int:
        """The conv's own input length, for a length ``size`` as the transform sees it (after
        the explicit padding of ``prepad`` modes)."""
        return size - (sum(self.pad) if self.prepad else 0)

    def out_size(self, size: int) -> int:
        """Output length of the original convolution for an input of length ``size``."""
        return (size + self.pad[0] + self.pad[1] - self.span) // self.stride + 1

    def check(self, size: int, layer: str, axis: int) -> None:
        """Raise an ``XdfxShapeError`` unless an input of length ``size`` is computed exactly."""
        if self.native_circular:
            ok, need = size == self.n, f"exactly {self.n}"
        elif self.mode == "zeros":
            ok, need = size + max(self.pad) <= self.n, f"at most {self.n - max(self.pad)}"
        else:
            ok, need = size + sum(self.pad) <= self.n, f"at most {self.n - sum(self.pad)}"
        if size + sum(self.pad) < self.span:  # too short for one window: say the whole range
            ok, need = False, need if self.native_circular else f"from {self.span - sum(self.pad)} to {need.split()[-1]}"
        if not ok:
            raise XdfxShapeError(
                f"layer {layer!r}: spatial axis {axis} has length {size}, but this XD layer was "
                f"built for length {self.in_size} (transform length {self.n}, padding_mode "
                f"{self.mode!r}) and computes lengths {need}. Relax the model again with "
                f"example inputs of the size you will use."
            )

    def gather(self, y: torch.Tensor, dim: int, size: int) -> torch.Tensor:
        """The conv's outputs along ``dim`` of the length-``n`` circular result ``y`` (input length
        ``size``): a strided slice, after a roll where they wrap around (a copy in chunks, where
        ``index_select`` gathers element by element)."""
        t = self.out_size(size)
        start = 0 if self.prepad else -self.pad[0]
        last = start + self.stride * (t - 1)
        if start < 0 and last < self.n + start:  # wraps once: roll the tail to the front
            y = torch.roll(y, shifts=-start, dims=dim)
            start, last = 0, last - start
        if start >= 0 and last < self.n:
            return y.narrow(dim, start, last - start + 1)[(slice(None),) * dim + (slice(None, None, self.stride),)]
        return y.index_select(dim, self.out_index(size, y.device))

    def folds_stride(self, size: int) -> bool:
        """Whether the strided outputs for an input of length ``size`` are one period of the
        length-``n / stride`` decimation of the (shifted) circular result: then the stride can be
        taken in frequency, by aliasing the spectrum, and the inverse FFT is ``stride`` x shorter."""
        return self.stride > 1 and self.n % self.stride == 0 and self.out_size(size) <= self.n // self.stride

    def fold_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Aliasing weights for a full (complex) frequency axis, see :meth:`folds_stride`:
        ``Z_dec[k] = post[k] * sum_r alias[r] Z[k + r m]`` with ``m = n / stride``, where
        ``alias[r] = exp(2 pi i r start / stride) / stride`` and ``post[k] = exp(2 pi i k start / n)``
        shift the first output to position 0 (``post`` is None when no shift is needed)."""
        s, n = self.stride, self.n
        start = 0 if self.prepad else -self.pad[0]
        r = torch.arange(s, dtype=torch.float64)
        alias = torch.polar(torch.full((s,), 1.0 / s, dtype=torch.float64), (2 * torch.pi * start / s) * r)
        if start % n == 0:
            return alias, None
        k = torch.arange(n // s, dtype=torch.float64)
        return alias, torch.polar(torch.ones_like(k), (2 * torch.pi * start / n) * k)

    def out_index(self, size: int, device: torch.device) -> torch.Tensor | slice:
        """Positions of the outputs inside the length-``n`` circular result."""
        t = self.out_size(size)
        start = 0 if self.prepad else -self.pad[0]
        if start == 0:
            return slice(0, self.stride * (t - 1) + 1, self.stride)
        return (torch.arange(t, device=device) * self.stride + start) % self.n
