"""The effective kernel of an XD layer, drawn against the input offsets it multiplies.

For an XD conv that is ``irfftn(conj(L w))``, the filter between M and K (the impulse response
when they are the DFT pair); for a graph XD layer it is the polynomial taps ``w`` of
``sum_j w_j A^j``. Both show the channel pair with the most energy and the mean magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ops import XDConv

KERNEL_WINDOW = {1: 4096, 2: 128, 3: 32}  # largest kernel extent shown per axis (centred on offset 0)


@dataclass
class Kernel:
    """Kernel values on a window of offsets; ``positions`` are the buffer positions they come from."""

    pair: list[int]  # (out, in) channel pair with the most energy
    strongest: np.ndarray
    mean_abs: np.ndarray
    offsets: list[np.ndarray]
    positions: list[np.ndarray]
    cropped: bool
    buffer_shape: list[int]
    view: list[list[int]]  # per axis, the offset range the figure zooms to
    x_label: str
    title: str
    image_note: str = ""
    strongest_image: np.ndarray | None = None  # 3-d layers: the axis-2 slice that is drawn
    mean_abs_image: np.ndarray | None = None

    def to_json(self) -> dict:
        out = dict(vars(self))
        if self.strongest_image is None:
            del out["strongest_image"], out["mean_abs_image"]
        return out


def _strongest_pair(values: np.ndarray) -> tuple[int, int]:
    energy = (values**2).reshape(values.shape[0], values.shape[1], -1).sum(-1)
    o, i = np.unravel_index(int(np.argmax(energy)), energy.shape)
    return int(o), int(i)


def _support_view(mean_abs: np.ndarray, offsets: list[np.ndarray]) -> list[list[int]]:
    """Per axis, the offset range the figure zooms to: where the kernel is not negligible, plus a margin."""
    on = mean_abs > 1e-3 * (float(mean_abs.max()) or 1.0)
    view = []
    for axis, off in enumerate(offsets):
        hit = np.nonzero(on.any(axis=tuple(a for a in range(on.ndim) if a != axis)))[0]
        lo, hi = (int(off[hit[0]]), int(off[hit[-1]])) if hit.size else (0, 0)
        margin = max(3, (hi - lo) // 4)
        view.append([max(lo - margin, int(off[0])), min(hi + margin, int(off[-1]))])
    return view


def xd_kernel(layer: XDConv, spec: torch.Tensor) -> Kernel:
    """``irfftn(conj(L w))``: the filter between M and K, shown against input offsets."""
    d, geo = layer.spatial_dims, layer.geometry
    ns = [g.n for g in geo]
    full = torch.fft.irfftn(spec.to(torch.complex128).conj(), s=ns, dim=tuple(range(2, 2 + d))).cpu().numpy()
    o, i = _strongest_pair(full)
    offsets, positions = [], []
    cropped = False
    for g in geo:
        off = np.arange(g.n) - g.n // 2
        cap = KERNEL_WINDOW[d]
        if g.n > cap:
            start = g.n // 2 - cap // 2
            off, cropped = off[start:start + cap], True
        offsets.append(off)
        # output t*s reads input t*s + u - pad_left through buffer position u (see ops/geometry.py)
        positions.append((off + g.pad[0]) % g.n)
    window = full[(slice(None), slice(None), *np.ix_(*positions))]
    strongest, mean_abs = window[o, i], np.abs(window).mean((0, 1))
    kernel = Kernel(
        [o, i], strongest, mean_abs, offsets, positions, cropped, ns, _support_view(mean_abs, offsets),
        "input offset (buffer position u = offset + pad_left mod n)",
        "effective kernel irfftn(conj(L w))" + (" (central window)" if cropped else ""),
    )
    if d == 3:
        z = int(np.argmax(mean_abs.sum((0, 1))))
        kernel.strongest_image, kernel.mean_abs_image = strongest[:, :, z], mean_abs[:, :, z]
        kernel.image_note = f"\naxis-2 slice at offset {int(offsets[2][z])}"
    return kernel


def graph_kernel(weight: torch.Tensor) -> Kernel:
    """The polynomial taps ``weight`` (out, in, taps) of a graph XD layer."""
    w = weight.detach().double().cpu().numpy()
    o, i = _strongest_pair(w)
    taps = np.arange(w.shape[-1])
    return Kernel([o, i], w[o, i], np.abs(w).mean((0, 1)), [taps], [taps], False, [int(w.shape[-1])],
                  [[0, int(taps[-1])]], "power j of the propagation matrix A", "polynomial taps w (filter = sum_j w_j A^j)")
