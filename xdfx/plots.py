"""Figures of :mod:`xdfx.visual`, drawn from plain numpy data with matplotlib's Agg canvas.

No pyplot: every figure is a :class:`matplotlib.figure.Figure` on its own ``FigureCanvasAgg``,
so importing or calling this module changes no global matplotlib state (backend, rcParams,
open-figure registry). Each function takes the data :mod:`xdfx.visual` also writes to
``report.json``, so what is plotted is what is stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
BAND = (10, 90)  # percentiles of the spread band over channel pairs


def _figure(width: float, height: float) -> Figure:
    # Fixed margins: constrained layout would double the drawing time of every figure.
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, format="png")


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# ------------------------------------------------------------------ per-layer panels
def _spectrum_curve(ax, spectrum: dict) -> None:
    x = np.asarray(spectrum["x"])
    mean, lo, hi = (np.asarray(spectrum[k]) for k in ("mean", "p10", "p90"))
    ax.fill_between(x, lo, hi, color="tab:blue", alpha=0.25, linewidth=0, label=f"{BAND[0]}-{BAND[1]} percentile")
    ax.plot(x, mean, color="tab:blue", linewidth=1.2, label="mean")
    ax.set_xlabel(spectrum["x_label"])
    ax.set_ylabel("|L w|")
    ax.set_title(spectrum["title"], fontsize=9)
    if np.all(mean > 0) and mean.max() / max(mean.min(), 1e-30) > 100:
        ax.set_yscale("log")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _kernel_curve(ax, kernel: dict) -> None:
    offsets = np.asarray(kernel["offsets"][0])
    strongest, mean_abs = np.asarray(kernel["strongest"]), np.asarray(kernel["mean_abs"])
    o, i = kernel["pair"]
    lo, hi = kernel["view"][0]
    shown = (offsets >= lo) & (offsets <= hi)
    x, s, m = offsets[shown], strongest[shown], mean_abs[shown]
    ax.axhline(0, color="0.6", linewidth=0.6)
    ax.vlines(x, 0, s, color="tab:red", linewidth=1.0)
    ax.plot(x, s, "o", color="tab:red", markersize=3, label=f"strongest pair (out {o}, in {i})")
    ax.plot(x, m, "x", color="tab:green", markersize=4, label="mean |kernel| over pairs")
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_xlabel(kernel["x_label"], fontsize=9)
    ax.set_ylabel("kernel value")
    zoom = " (zoomed)" if (lo, hi) != (int(offsets[0]), int(offsets[-1])) else ""
    ax.set_title(kernel["title"] + zoom, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _image(fig, ax, image, extent, title: str, xlabel: str, ylabel: str, signed: bool) -> None:
    image = np.asarray(image, dtype=float)
    if signed:
        lim = float(np.abs(image).max()) or 1.0
        im = ax.imshow(image, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, extent=extent,
                       aspect="auto", interpolation="nearest")
    else:
        im = ax.imshow(image, origin="lower", cmap="viridis", extent=extent, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, shrink=0.85)


def _offset_extent(offsets) -> list[float]:
    """imshow extent (x = axis 1, y = axis 0) of a grid whose pixels sit at integer offsets."""
    a, b = np.asarray(offsets[0]), np.asarray(offsets[1])
    return [b[0] - 0.5, b[-1] + 0.5, a[0] - 0.5, a[-1] + 0.5]


def _factors_bars(ax, factors: list[dict], note: str) -> None:
    if not factors:
        ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
        return
    labels = [f["label"] for f in factors]
    values = [f["distance"] for f in factors]
    colors = ["tab:purple" if f["factor"] == "M" else "tab:orange" if f["factor"] == "K" else "tab:gray" for f in factors]
    y = np.arange(len(labels))
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("||Q - Q0||_F / ||Q0||_F")
    ax.set_title("distance of the factors from their warm start", fontsize=9)
    top = max(values) if values else 0.0
    ax.set_xlim(0, max(top * 1.15, 1e-3))
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:.3g}", va="center", fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def layer_figure(path: Path, layer: dict) -> None:
    """One PNG per XD layer: spectrum, effective kernel, factor distances (and images for d >= 2)."""
    spectrum, kernel = layer["spectrum"], layer["kernel"]
    two_d = spectrum.get("image") is not None
    fig = _figure(13, 6.6 if two_d else 3.4)
    title = f"{layer['name']}  [{layer['summary']}]  ->  {layer['form']}"
    if layer.get("detail"):
        title += f" ({layer['detail']})"
    fig.suptitle(_short(title, 140), fontsize=10)
    if not two_d:
        grid = dict(width_ratios=[1.1, 1.1, 0.8], left=0.055, right=0.98, bottom=0.15, top=0.84, wspace=0.32)
        axes = fig.subplots(1, 3, gridspec_kw=grid)
        _spectrum_curve(axes[0], spectrum)
        _kernel_curve(axes[1], kernel)
        _factors_bars(axes[2], layer["factors"], layer["factors_note"])
    else:
        grid = dict(width_ratios=[1.0, 1.0, 0.9], left=0.055, right=0.98, bottom=0.08, top=0.9, wspace=0.38, hspace=0.42)
        axes = fig.subplots(2, 3, gridspec_kw=grid)
        _spectrum_curve(axes[0, 0], spectrum)
        ext = spectrum["image_extent"]
        _image(fig, axes[0, 1], spectrum["image"], ext, spectrum["image_title"],
               "frequency, last axis (cycles/sample)", "frequency, axis 0 (cycles/sample)", signed=False)
        _factors_bars(axes[0, 2], layer["factors"], layer["factors_note"])
        kext = _offset_extent(kernel["offsets"])
        o, i = kernel["pair"]
        note = kernel["image_note"]  # 3-d: which axis-2 slice is shown
        _image(fig, axes[1, 0], kernel.get("strongest_image", kernel["strongest"]), kext,
               f"kernel, strongest pair (out {o}, in {i}){note}", "offset, axis 1", "offset, axis 0", signed=True)
        _image(fig, axes[1, 1], kernel.get("mean_abs_image", kernel["mean_abs"]), kext,
               f"mean |kernel| over pairs{note}", "offset, axis 1", "offset, axis 0", signed=False)
        (ylo, yhi), (xlo, xhi) = kernel["view"][:2]
        for ax in axes[1, :2]:
            ax.set_xlim(xlo - 0.5, xhi + 0.5)
            ax.set_ylim(ylo - 0.5, yhi + 0.5)
        axes[1, 2].set_axis_off()
        axes[1, 2].text(0.0, 1.0, layer["decision_text"], va="top", ha="left", fontsize=8, family="monospace",
                        transform=axes[1, 2].transAxes)
    _save(fig, path)


# ------------------------------------------------------------------ whole model
def overview_figure(path: Path, layers: list[dict]) -> None:
    """FLOPs before/after hardening and the largest factor distance, per layer."""
    names = [layer["name"] for layer in layers]
    y = np.arange(len(names))
    height = max(2.6, 1.4 + 0.32 * len(names))
    fig = _figure(12, height)
    grid = dict(left=0.25, right=0.97, bottom=0.9 / height, top=1 - 0.5 / height, wspace=0.08)
    ax1, ax2 = fig.subplots(1, 2, sharey=True, gridspec_kw=grid)
    before = np.array([max(layer["flops_before"], 1.0) for layer in layers])
    after = np.array([max(layer["flops_after"], 1.0) for layer in layers])
    ax1.barh(y - 0.2, before, height=0.4, color="tab:gray", label="XD (before)")
    ax1.barh(y + 0.2, after, height=0.4, color="tab:blue", label="hardened (after)")
    ax1.set_xscale("log")
    ax1.set_yticks(y, [_short(f"{n} -> {layer['form']}", 48) for n, layer in zip(names, layers)], fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("FLOPs per call (estimate)")
    ax1.legend(fontsize=7)
    ax1.grid(axis="x", alpha=0.3)
    dist = np.array([max([f["distance"] for f in layer["factors"]], default=0.0) for layer in layers])
    ax2.barh(y, dist, color="tab:purple")
    ax2.set_xlabel("largest factor distance from warm start")
    ax2.set_xlim(0, max(float(dist.max()) * 1.15, 1e-3))
    ax2.grid(axis="x", alpha=0.3)
    fig.suptitle("XD layers: cost before/after hardening, and how far search moved K, L, M", fontsize=10)
    _save(fig, path)


def history_figure(path: Path, history: dict) -> None:
    """Search curves: train loss and validation metric (twin axes), model and arch learning rates."""
    epoch = np.asarray(history["epoch"], dtype=float)
    marker = "." if len(epoch) <= 60 else None
    fig = _figure(8, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(left=0.12, right=0.87, bottom=0.09, top=0.94, hspace=0.12))
    loss = np.asarray(history["train_loss"], dtype=float)
    top.plot(epoch, loss, color="tab:blue", marker=marker, label="train loss")
    top.set_ylabel("train loss", color="tab:blue")
    if np.all(loss[np.isfinite(loss)] > 0) and np.isfinite(loss).any():
        top.set_yscale("log")
    twin = top.twinx()
    metric = np.asarray(history["val_metric"], dtype=float)
    twin.plot(epoch, metric, color="tab:red", marker=marker, label=f"val {history['metric_name']}")
    twin.set_ylabel(f"validation {history['metric_name']}", color="tab:red")
    lines = top.get_lines() + twin.get_lines()
    top.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
    top.grid(alpha=0.3)
    top.set_title("search: loss and validation metric per epoch", fontsize=10)
    for key, color, label in (("model_lr", "tab:green", "model lr"), ("arch_lr", "tab:purple", "architecture lr")):
        bottom.plot(epoch, np.asarray(history[key], dtype=float), color=color, marker=marker, label=label)
    lrs = np.concatenate([np.asarray(history[k], dtype=float) for k in ("model_lr", "arch_lr")])
    lrs = lrs[np.isfinite(lrs)]
    if lrs.size and np.all(lrs > 0):
        bottom.set_yscale("log")
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("learning rate")
    bottom.legend(fontsize=8, loc="best")
    bottom.grid(alpha=0.3)
    _save(fig, path)
