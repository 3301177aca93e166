"""The report's PNG figures, drawn from the same dataclasses that report.json stores.

No pyplot: every figure is a :class:`matplotlib.figure.Figure` on its own ``FigureCanvasAgg``,
so drawing changes no global matplotlib state (backend, rcParams, open-figure registry).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .fmt import err, num
from .history import History
from .kernel import Kernel
from .layer import NO_FACTORS_NOTE, LayerView
from .spectrum import Spectrum

DPI = 100
FACTOR_COLORS = {"M": "tab:purple", "K": "tab:orange"}  # L and graph factors: gray


def _figure(width: float, height: float) -> Figure:
    # Fixed margins: constrained layout would make every figure much slower to draw.
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _log_if_positive(ax, *series) -> None:
    """A log y-axis when every finite value of ``series`` is positive (and there is one)."""
    values = np.concatenate([np.asarray(s, dtype=float) for s in series])
    values = values[np.isfinite(values)]
    if values.size and np.all(values > 0):
        ax.set_yscale("log")


# ------------------------------------------------------------------ per-layer panels
def _spectrum_curve(ax, spectrum: Spectrum) -> None:
    x, b = np.asarray(spectrum.x), spectrum.band
    ax.fill_between(x, b.p10, b.p90, color="tab:blue", alpha=0.25, linewidth=0, label="10-90 percentile")
    ax.plot(x, b.mean, color="tab:blue", linewidth=1.2, label="mean")
    ax.set_xlabel(spectrum.x_label)
    ax.set_ylabel("|L w|")
    ax.set_title(spectrum.title, fontsize=9)
    if np.all(b.mean > 0) and b.mean.max() / max(b.mean.min(), 1e-30) > 100:
        ax.set_yscale("log")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _kernel_curve(ax, kernel: Kernel) -> None:
    offsets = kernel.offsets[0]
    o, i = kernel.pair
    lo, hi = kernel.view[0]
    shown = (offsets >= lo) & (offsets <= hi)
    x, s, m = offsets[shown], kernel.strongest[shown], kernel.mean_abs[shown]
    ax.axhline(0, color="0.6", linewidth=0.6)
    ax.vlines(x, 0, s, color="tab:red", linewidth=1.0)
    ax.plot(x, s, "o", color="tab:red", markersize=3, label=f"strongest pair (out {o}, in {i})")
    ax.plot(x, m, "x", color="tab:green", markersize=4, label="mean |kernel| over pairs")
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_xlabel(kernel.x_label, fontsize=9)
    ax.set_ylabel("kernel value")
    zoom = " (zoomed)" if (lo, hi) != (int(offsets[0]), int(offsets[-1])) else ""
    ax.set_title(kernel.title + zoom, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _image(fig, ax, image, extent, title: str, xlabel: str, ylabel: str, signed: bool) -> None:
    image = np.asarray(image, dtype=float)
    if signed:
        lim = float(np.abs(image).max()) or 1.0
        colors = dict(cmap="RdBu_r", vmin=-lim, vmax=lim)
    else:
        colors = dict(cmap="viridis")
    im = ax.imshow(image, origin="lower", extent=extent, aspect="auto", interpolation="nearest", **colors)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, shrink=0.85)


def _offset_extent(offsets) -> list[float]:
    """imshow extent (x = axis 1, y = axis 0) of a grid whose pixels sit at integer offsets."""
    a, b = offsets[0], offsets[1]
    return [b[0] - 0.5, b[-1] + 0.5, a[0] - 0.5, a[-1] + 0.5]


def _factors_bars(ax, view: LayerView) -> None:
    if not view.factors:
        ax.text(0.5, 0.5, NO_FACTORS_NOTE, ha="center", va="center", fontsize=8, wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
        return
    values = [f.distance for f in view.factors]
    y = np.arange(len(values))
    ax.barh(y, values, color=[FACTOR_COLORS.get(f.factor, "tab:gray") for f in view.factors])
    ax.set_yticks(y, [f.label for f in view.factors], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("||Q - Q0||_F / ||Q0||_F")
    ax.set_title("distance of the factors from their warm start", fontsize=9)
    ax.set_xlim(0, max(max(values) * 1.15, 1e-3))
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:.3g}", va="center", fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def _decision_text(view: LayerView) -> str:
    d = view.decision
    lines = ["harden decision", "", f"chosen:    {d.form}"]
    if d.detail:
        lines += textwrap.wrap(d.detail, 40, initial_indent="  ", subsequent_indent="    ")
    lines += [f"  error {err(d.error)}", f"  FLOPs {num(d.flops_before)} -> {num(d.flops_after)}",
              f"  params {num(d.params_before)} -> {num(d.params_after)}", ""]
    if d.runner_up:
        lines += [f"runner-up: {d.runner_up}", f"  error {err(d.runner_up_error)}", f"  FLOPs {num(d.runner_up_flops)}"]
    else:
        lines.append("runner-up: none")
    return "\n".join(lines)


def layer_figure(path: Path, view: LayerView) -> None:
    """One PNG per XD layer: spectrum, effective kernel, factor distances (and images for d >= 2)."""
    spectrum, kernel = view.spectrum, view.kernel
    two_d = spectrum.image is not None
    fig = _figure(13, 6.6 if two_d else 3.4)
    title = f"{view.name}  [{view.summary}]  ->  {view.decision.form}"
    if view.decision.detail:
        title += f" ({view.decision.detail})"
    fig.suptitle(_short(title, 140), fontsize=10)
    if not two_d:
        grid = dict(width_ratios=[1.1, 1.1, 0.8], left=0.055, right=0.98, bottom=0.15, top=0.84, wspace=0.32)
        axes = fig.subplots(1, 3, gridspec_kw=grid)
        _spectrum_curve(axes[0], spectrum)
        _kernel_curve(axes[1], kernel)
        _factors_bars(axes[2], view)
    else:
        grid = dict(width_ratios=[1.0, 1.0, 0.9], left=0.055, right=0.98, bottom=0.08, top=0.9, wspace=0.38, hspace=0.42)
        axes = fig.subplots(2, 3, gridspec_kw=grid)
        _spectrum_curve(axes[0, 0], spectrum)
        _image(fig, axes[0, 1], spectrum.image, spectrum.image_extent, spectrum.image_title,
               "frequency, last axis (cycles/sample)", "frequency, axis 0 (cycles/sample)", signed=False)
        _factors_bars(axes[0, 2], view)
        kext = _offset_extent(kernel.offsets)
        o, i = kernel.pair
        note = kernel.image_note  # 3-d: which axis-2 slice is shown
        strongest = kernel.strongest if kernel.strongest_image is None else kernel.strongest_image
        mean_abs = kernel.mean_abs if kernel.mean_abs_image is None else kernel.mean_abs_image
        _image(fig, axes[1, 0], strongest, kext, f"kernel, strongest pair (out {o}, in {i}){note}",
               "offset, axis 1", "offset, axis 0", signed=True)
        _image(fig, axes[1, 1], mean_abs, kext, f"mean |kernel| over pairs{note}", "offset, axis 1", "offset, axis 0",
               signed=False)
        (ylo, yhi), (xlo, xhi) = kernel.view[:2]
        for ax in axes[1, :2]:
            ax.set_xlim(xlo - 0.5, xhi + 0.5)
            ax.set_ylim(ylo - 0.5, yhi + 0.5)
        axes[1, 2].set_axis_off()
        axes[1, 2].text(0.0, 1.0, _decision_text(view), va="top", ha="left", fontsize=8, family="monospace",
                        transform=axes[1, 2].transAxes)
    fig.savefig(path, dpi=DPI, format="png")


# ------------------------------------------------------------------ whole model
def overview_figure(path: Path, views: list[LayerView]) -> None:
    """FLOPs before/after hardening and the largest factor distance, per layer."""
    y = np.arange(len(views))
    height = max(2.6, 1.4 + 0.32 * len(views))
    fig = _figure(12, height)
    grid = dict(left=0.25, right=0.97, bottom=0.9 / height, top=1 - 0.5 / height, wspace=0.08)
    ax1, ax2 = fig.subplots(1, 2, sharey=True, gridspec_kw=grid)
    before = np.array([max(v.decision.flops_before, 1.0) for v in views])
    after = np.array([max(v.decision.flops_after, 1.0) for v in views])
    ax1.barh(y - 0.2, before, height=0.4, color="tab:gray", label="XD (before)")
    ax1.barh(y + 0.2, after, height=0.4, color="tab:blue", label="hardened (after)")
    ax1.set_xscale("log")
    ax1.set_yticks(y, [_short(f"{v.name} -> {v.decision.form}", 48) for v in views], fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("FLOPs per call (estimate)")
    ax1.legend(fontsize=7)
    ax1.grid(axis="x", alpha=0.3)
    dist = np.array([v.max_distance or 0.0 for v in views])
    ax2.barh(y, dist, color="tab:purple")
    ax2.set_xlabel("largest factor distance from warm start")
    ax2.set_xlim(0, max(float(dist.max()) * 1.15, 1e-3))
    ax2.grid(axis="x", alpha=0.3)
    fig.suptitle("XD layers: cost before/after hardening, and how far search moved K, L, M", fontsize=10)
    fig.savefig(path, dpi=DPI, format="png")


def history_figure(path: Path, history: History) -> None:
    """Search curves: train loss and validation metric on one y-scale, model and arch learning rates."""
    epoch = np.asarray(history.epoch, dtype=float)
    marker = "." if len(epoch) <= 60 else None
    fig = _figure(8, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(left=0.12, right=0.96, bottom=0.09, top=0.94, hspace=0.12))
    top.plot(epoch, history.train_loss, color="tab:blue", marker=marker, label="train loss")
    top.plot(epoch, history.val_metric, color="tab:red", marker=marker, label=history.val_label)
    top.set_ylabel(f"train loss, {history.val_label}")
    _log_if_positive(top, history.train_loss, history.val_metric)
    top.legend(fontsize=8, loc="best")
    top.grid(alpha=0.3)
    top.set_title("search: loss and validation metric per epoch", fontsize=10)
    # Wide solid under thin dashed: equal learning rates stay visible as two lines.
    bottom.plot(epoch, history.model_lr, color="tab:green", linewidth=4, alpha=0.5, marker=marker, label="model lr")
    bottom.plot(epoch, history.arch_lr, color="tab:purple", linewidth=1.5, linestyle="--", marker=marker,
                label="architecture lr")
    _log_if_positive(bottom, history.model_lr, history.arch_lr)
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("learning rate")
    bottom.legend(fontsize=8, loc="best")
    bottom.grid(alpha=0.3)
    fig.savefig(path, dpi=DPI, format="png")
