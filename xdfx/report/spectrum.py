"""The learned spectrum |L w| of an XD layer, summarised over its channel pairs.

A layer has one spectrum per (out, in) channel pair; the report keeps their mean and a 10-90
percentile band, against frequency (1-d), radial frequency (2-d and up, plus a pooled mean image)
or the eigenvalues of a graph's propagation matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..ops import XDConv

MAX_PAIRS = 4096  # channel pairs sampled for the percentile band (the mean uses all of them)
IMAGE_CAP = 128  # spectrum images are block-averaged down to this many pixels per axis


@dataclass
class Band:
    """Mean and 10/90 percentiles over channel pairs, per frequency bin."""

    mean: np.ndarray
    p10: np.ndarray
    p90: np.ndarray
    pairs: int  # channel pairs in the mean
    band_pairs: int  # channel pairs in the percentiles (a sample when there are many)


@dataclass
class Spectrum:
    """The band against ``x``, and for layers of 2 or more dimensions a mean image."""

    shape: list[int]
    band: Band
    x: np.ndarray
    x_label: str
    title: str
    image: np.ndarray | None = None
    image_extent: list[float] | None = None
    image_title: str | None = None

    def to_json(self) -> dict:
        out = {"shape": self.shape, **asdict(self.band), "x": self.x, "x_label": self.x_label,
               "title": self.title, "image": self.image}
        if self.image is not None:
            out.update(image_extent=self.image_extent, image_title=self.image_title)
        return out


def band(per_pair: np.ndarray) -> Band:
    """Mean and 10/90 percentiles over channel pairs (rows) of ``per_pair``."""
    sample = per_pair
    if per_pair.shape[0] > MAX_PAIRS:
        rows = np.random.default_rng(0).choice(per_pair.shape[0], MAX_PAIRS, replace=False)
        sample = per_pair[np.sort(rows)]
    p10, p90 = np.percentile(sample, (10, 90), axis=0)
    return Band(per_pair.mean(0), p10, p90, int(per_pair.shape[0]), int(sample.shape[0]))


def _radial(pairs: np.ndarray, ns: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, the mean of ``pairs`` (P, n_1, ..., n_d//2+1) in bins of radial frequency."""
    axes = [np.fft.fftfreq(n) for n in ns[:-1]] + [np.fft.rfftfreq(ns[-1])]
    r = np.sqrt(sum(g**2 for g in np.meshgrid(*axes, indexing="ij"))).ravel()
    bins = int(min(48, max(ns) // 2 + 1))
    edges = np.linspace(0.0, float(r.max()) * (1 + 1e-9) + 1e-12, bins + 1)
    idx = np.clip(np.digitize(r, edges) - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    keep = counts > 0
    flat = torch.from_numpy(np.ascontiguousarray(pairs.reshape(pairs.shape[0], -1)))
    sums = torch.zeros(flat.shape[0], bins, dtype=flat.dtype).index_add_(1, torch.from_numpy(idx), flat).numpy()
    x = np.bincount(idx, weights=r, minlength=bins)[keep] / counts[keep]
    return sums[:, keep] / counts[keep], x


def _pool(image: np.ndarray, cap: int = IMAGE_CAP) -> np.ndarray:
    """Block-average each axis of a 2-d array down to at most ``cap`` entries."""
    for axis in (0, 1):
        n = image.shape[axis]
        f = -(-n // cap)
        if f > 1:
            pad = [(0, 0), (0, 0)]
            pad[axis] = (0, (-n) % f)
            padded = np.pad(image, pad, constant_values=np.nan)
            shape = list(padded.shape)
            shape[axis:axis + 1] = [shape[axis] // f, f]
            image = np.nanmean(padded.reshape(shape), axis=axis + 1)
    return image


def xd_spectrum(layer: XDConv, spec: torch.Tensor) -> Spectrum:
    """``spec`` (out, in, n_1, ..., n_d//2+1) of an XD conv layer, summarised."""
    d, ns = layer.spatial_dims, [g.n for g in layer.geometry]
    pairs = spec.abs().to(torch.float32).cpu().numpy().reshape(-1, *spec.shape[2:])
    if d == 1:
        return Spectrum(list(spec.shape), band(pairs), np.arange(pairs.shape[-1]) / ns[0],
                        "frequency (cycles/sample)", "spectrum |L w| over channel pairs")
    per_pair, x = _radial(pairs, ns)
    image = pairs.mean(0)
    image = image.mean(axis=tuple(range(1, d - 1))) if d > 2 else image  # (n_1, n_d//2+1)
    image = np.fft.fftshift(image, axes=0)
    f0 = np.fft.fftshift(np.fft.fftfreq(ns[0]))
    return Spectrum(
        list(spec.shape), band(per_pair), x, "radial frequency |f| (cycles/sample)",
        "|L w| vs radial frequency, over channel pairs", image=_pool(image),
        image_extent=[-0.5 / ns[-1], (image.shape[1] - 0.5) / ns[-1], f0[0] - 0.5 / ns[0], f0[-1] + 0.5 / ns[0]],
        image_title="mean |L w| over pairs (axis 0 x last axis" + (", mean over middle axes)" if d > 2 else ")"),
    )


def graph_spectrum(spec: torch.Tensor, eigenvalues: np.ndarray) -> Spectrum:
    """``spec`` (out, in, nodes) of a graph XD layer, against the propagation matrix's eigenvalues."""
    pairs = spec.abs().to(torch.float32).cpu().numpy().reshape(-1, spec.shape[-1])
    return Spectrum(list(spec.shape), band(pairs), eigenvalues, "eigenvalue of the propagation matrix",
                    "graph filter |L w| over channel pairs")
