"""The frame shared by every operator that computes a convolution as a circular one of length n
per axis (XD layers, their frozen and spectral forms): input checks, the conv's own padding, the
stride taken in frequency, the crop back to the conv's outputs (see :mod:`.geometry`), and
:func:`full_precision`, how they run on half and bfloat16 inputs and under ``torch.autocast``."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import XdfxInputError, XdfxShapeError
from .geometry import AxisGeometry

LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a circular layer computes in for tensors of ``dtype``: float32 for float16 and
    bfloat16 (CPU FFTs do not take them, CUDA half FFTs only powers of two), else ``dtype``."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``; ``t`` itself when it already is (no cast node in a traced graph)."""
    return t if t.dtype == dtype else t.to(dtype)


def full_precision(forward: Callable) -> Callable:
    """Wrap a circular layer's ``forward(x, ...)`` for half, bfloat16 and autocast use.

    Where ``x`` is float16 / bfloat16 or autocast is on for its device, the layer runs on ``x``
    cast to :func:`compute_dtype` with autocast off (its matmuls stay in float32; parameters are
    upcast where they are used), and the result is cast to the dtype a conv would return: the
    autocast dtype under autocast (float64 inputs excepted, which autocast leaves alone), else
    the input's dtype. float32 and float64 inputs outside autocast run unchanged. Every cast is
    differentiable."""

    @functools.wraps(forward)
    def wrapped(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.dim() == self.spatial_dims + 2 and x.shape[0] == 0:  # MKL's FFT rejects a batch of 0: run one, keep none
            return wrapped(self, x.new_zeros(1, *x.shape[1:]), *args, **kwargs)[:0]
        device = x.device.type
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
        if not autocast and x.dtype not in LOW_PRECISION:
            _check_dtype(self, x)
            return forward(self, x, *args, **kwargs)
        out = torch.get_autocast_dtype(device) if autocast and x.dtype != torch.float64 else x.dtype
        with torch.autocast(device, enabled=False):
            y = forward(self, as_dtype(x, compute_dtype(x.dtype)), *args, **kwargs)
        return as_dtype(y, out)

    return wrapped


def _check_dtype(layer: nn.Module, x: torch.Tensor) -> None:
    """Refuse a float32 input to a float64 layer and the reverse, as a conv does, naming the layer."""
    full = (torch.float32, torch.float64)
    if x.dtype not in full:
        return
    # lazily: the first floating tensor decides, without listing every parameter and buffer per call
    ref = next((t.dtype for t in itertools.chain(layer.parameters(), layer.buffers()) if t.is_floating_point()), None)
    if ref in full and x.dtype != ref:
        raise XdfxInputError(
            f"layer {getattr(layer, 'layer_name', '')!r} holds {ref} weights but was fed a {x.dtype} input: cast "
            f"the input with x.to({ref}) or the model with model.to({x.dtype})"
        )


class CircularLayer(nn.Module):
    """Base of the circular operators: channels, groups, one :class:`AxisGeometry` per axis, an
    optional fixed per-position output scale (pooling divisors) and a label for error messages."""

    def __init__(self, in_channels: int, out_channels: int, geometry: Sequence[AxisGeometry], groups: int = 1) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.geometry = tuple(geometry)
        self.layer_name = ""  # how error messages name the layer (set by whoever installs it)
        self.register_buffer("out_scale", None)
        self.M = nn.ModuleList()  # structured factors Q_M, Q_K per axis (none: the plain DFT pair)
        self.K = nn.ModuleList()
        for i, g in enumerate(self.geometry[:-1]):  # the float32 CPU weights now: no cast in forward
            if g.stride > 1 and g.n % g.stride == 0:
                self.fold_weights(i, torch.device("cpu"), torch.complex64)

    def fold_weights(self, axis: int, device: torch.device,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`AxisGeometry.fold_weights` of ``axis`` on ``device`` in ``dtype``, built once."""
        cache = self.__dict__.setdefault("_fold_cache", {})
        key = (self.geometry[axis], torch.device(device), dtype)  # the geometry itself: harden may swap it
        if key not in cache:
            alias, post = self.geometry[axis].fold_weights()
            cache[key] = (alias.to(device, dtype), None if post is None else post.to(device, dtype))
        return cache[key]

    @property
    def spatial_dims(self) -> int:
        return len(self.geometry)

    @property
    def frequency_shape(self) -> tuple[int, ...]:
        """Shape of the real FFT of one spatial axis set: ``(n_1, ..., n_d // 2 + 1)``."""
        ns = [g.n for g in self.geometry]
        return (*ns[:-1], ns[-1] // 2 + 1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise an ``XdfxShapeError`` unless the layer computes ``x`` exactly."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise XdfxShapeError(
                f"layer {self.layer_name!r} expects (batch, {self.in_channels}, "
                f"{self.spatial_dims} spatial axes), got shape {tuple(x.shape)}"
            )
        for i, g in enumerate(self.geometry):
            g.check(x.shape[2 + i], self.layer_name, i)

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded as the conv pads it, on the axes whose mode needs an explicit pad."""
        geo = self.geometry
        if not any(g.prepad for g in geo):
            return x
        return F.pad(x, [p for g in reversed(geo) for p in (g.pad if g.prepad else (0, 0))], mode=geo[0].mode)

    def extend(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` zero-extended to the transform lengths (learned factors act on all n positions)."""
        sizes = x.shape[2:]
        if all(g.n == s for g, s in zip(self.geometry, sizes)):
            return x
        return F.pad(x, [p for g, s in zip(reversed(self.geometry), reversed(sizes)) for p in (0, g.n - s)])

    def folded_axes(self, sizes: Sequence[int], learned_k: bool) -> tuple[bool, ...]:
        """Per axis, whether the stride is taken in frequency: full (complex) frequency axes only
        (the half-spectrum axis would need the Hermitian mirror), and never after a learned K,
        which acts on the full-length result."""
        d = self.spatial_dims
        if learned_k:
            return (False,) * d
        return tuple(i < d - 1 and g.folds_stride(g.conv_input_size(s)) for i, (g, s) in enumerate(zip(self.geometry, sizes)))

    def fold(self, z: torch.Tensor, folded: Sequence[bool]) -> torch.Tensor:
        """Alias the frequency-major spectrum ``z`` ``(*freq, ...)`` along the folded axes
        (:meth:`AxisGeometry.fold_weights`): the inverse FFT is then ``stride`` x shorter there."""
        for i, g in enumerate(self.geometry):
            if not folded[i]:
                continue
            alias, post = self.fold_weights(i, z.device, z.dtype)
            s, m = g.stride, g.n // g.stride
            lead = z.shape[:i]
            # the weighted sum of the s aliased blocks as one (1 x s) matmul over contiguous rows
            zr = z.reshape(math.prod(lead), s, -1)
            z = torch.matmul(alias.reshape(1, s), zr).reshape(*lead, m, *z.shape[i + 1 :])
            if post is not None:
                view = [1] * z.dim()
                view[i] = -1
                z = z * post.reshape(view)
        return z

    def folded_lengths(self, folded: Sequence[bool]) -> list[int]:
        return [g.n // g.stride if f else g.n for g, f in zip(self.geometry, folded)]

    def crop(self, y: torch.Tensor, sizes: Sequence[int], bias: torch.Tensor | None, folded: Sequence[bool] = ()) -> torch.Tensor:
        """Keep the conv's outputs of the circular result ``y``, scale them (pools), add ``bias``.

        Along ``folded`` axes ``y`` is already the strided result, starting at the first output."""
        for i, g in enumerate(self.geometry):
            size = g.conv_input_size(sizes[i])
            if i < len(folded) and folded[i]:
                y = y.narrow(2 + i, 0, g.out_size(size))
            else:
                y = g.gather(y, 2 + i, size)
        if self.out_scale is not None:
            if y.shape[2:] != self.out_scale.shape:
                raise XdfxShapeError(
                    f"layer {self.layer_name!r} (a relaxed pooling) was built for inputs of size "
                    f"{tuple(g.in_size for g in self.geometry)} and outputs of size {tuple(self.out_scale.shape)}, "
                    f"got an input of size {tuple(g.conv_input_size(s) for g, s in zip(self.geometry, sizes))} (outputs {tuple(y.shape[2:])}); its windows hold for that "
                    "input size only. Relax the model again with example inputs of the size you will use"
                )
            y = y * as_dtype(self.out_scale, y.dtype)
        if bias is not None:
            y = y + as_dtype(bias, y.dtype).reshape(-1, *([1] * self.spatial_dims))
        return y

    def transform_in(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        """Check ``x``, pad it as the conv pads it and apply ``Q_M``; returns it and its padded sizes."""
        self.check_input(x)
        x = self.pad_input(x)
        sizes = x.shape[2:]
        if len(self.M):
            x = self.extend(x)
            for i, q in enumerate(self.M):
                x = q(x, 2 + i)
        return x, sizes

    def transform_out(
        self, y: torch.Tensor, sizes: torch.Size, bias: torch.Tensor | None, folded: Sequence[bool] = ()
    ) -> torch.Tensor:
        """Apply ``Q_K`` to the circular result, keep the conv's outputs, scale (pools), add ``bias``."""
        for i, q in enumerate(self.K):
            y = q(y, 2 + i)
        return self.crop(y, sizes, bias, folded)

    def describe_geometry(self) -> str:
        return ", ".join(
            f"n={g.n} k={g.kernel} s={g.stride} d={g.dilation} pad={g.pad} w={g.kernel_buffer}"
            + (f"@{g.buffer_step}" if g.buffer_step > 1 else "") for g in self.geometry
        )
