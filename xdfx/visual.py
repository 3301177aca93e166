"""``xdfx.visual.report``: a self-contained folder that shows what search did to every XD layer.

    path/
      report.html     open in any browser (no server, no scripts)
      report.md       the same content as Markdown with relative image links
      report.json     the data behind every figure and table (for tests and notebooks)
      overview.png    per-layer FLOPs before/after hardening, largest factor distance
      search.png      loss, validation metric and learning rates per epoch (with model.xdfx_history)
      layers/NN_<name>.png  per XD layer: spectrum |L w|, effective kernel, factor distances

The folder is written into a temporary sibling and renamed into place at the end, so a failure
leaves nothing behind. Figures are drawn by :mod:`xdfx.plots` on matplotlib's Agg canvas without
pyplot.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import fx, nn

from .errors import XdfxError, XdfxInputError
from .ops import XDConv
from .ops.graph import XDGraphConv
from .params import arch_parameters
from .relax import as_inputs

__all__ = ["report", "HISTORY_KEYS"]

XD_TYPES = (XDConv, XDGraphConv)
#: Per-epoch lists of ``model.xdfx_history`` (plus the string ``"metric_name"``).
HISTORY_KEYS = ("epoch", "train_loss", "val_metric", "model_lr", "arch_lr")
GENERATOR = "xdfx.visual"
MAX_PAIRS = 4096  # channel pairs sampled for the percentile band (the mean uses all of them)
KERNEL_WINDOW = {1: 4096, 2: 128, 3: 32}  # largest kernel extent shown per axis (centred on offset 0)
IMAGE_CAP = 128  # spectrum images are block-averaged down to this many pixels per axis
LATENCY_RUNS, LATENCY_BUDGET_S = 7, 2.0


def report(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    hardened: nn.Module | None = None,
    tol: float = 1e-4,
) -> Path:
    """Write an HTML/Markdown report of a relaxed (usually searched) model to the folder ``path``.

    Parameters
    ----------
    model : nn.Module
        The output of :func:`xdfx.relax`, possibly trained; it is not modified (its modules are
        run in eval mode for timing and their train/eval flags restored).
    path : path-like
        The folder to create. An existing folder is replaced only if it is empty or holds an
        earlier xdfx report.
    example_inputs : optional
        Forward arguments of ``model``: harden calibrates on them and latency is measured on them.
    hardened : nn.Module, optional
        The output of ``xdfx.harden(model, ...)``; computed with ``tol`` when None.
    tol : float
        Harden tolerance (used only when ``hardened`` is None).

    Returns
    -------
    Path
        The report folder; open ``report.html`` (or ``report.md``) in it.

    Raises
    ------
    XdfxInputError
        ``model`` has no XD layers, ``hardened`` is not ``xdfx.harden``'s output for it, or
        ``model.xdfx_history`` is malformed.
    XdfxError
        ``path`` cannot be written (nothing is left behind).
    """
    if not isinstance(model, nn.Module):
        raise XdfxInputError(f"report expects a relaxed model (nn.Module), got {type(model).__name__}")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, XD_TYPES)}
    if not layers:
        raise XdfxInputError(
            "the model has no XD layers, so there is nothing to report: pass the output of xdfx.relax "
            "(before hardening), not the original or the hardened model"
        )
    history = _history(model)
    inputs = _as_inputs(example_inputs)
    target = Path(path)
    _check_target(target)

    if hardened is None:
        from .harden import harden

        hardened = harden(model, tol=tol, example_inputs=example_inputs)
    records = _records(hardened, list(layers))
    harden_report = hardened.xdfx_report
    tol = float(getattr(harden_report, "tol", tol) or tol)

    weights = _external_weights(model, layers, inputs)
    views = []
    for index, (name, layer) in enumerate(layers.items()):
        view = _layer_view(name, layer, records[name], weights.get(name, _MISSING))
        view["figure"] = f"layers/{index:02d}_{_safe(name)}.png"
        views.append(view)
    summary = _summary(model, hardened, views, inputs, harden_report, tol)

    tmp = _make_temp(target)
    try:
        _write(tmp, summary, views, history)
        _install(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise XdfxError(f"could not write the report to {str(target)!r}: {exc}") from exc
        raise
    return target


# ------------------------------------------------------------------ inputs
_MISSING = object()


def _as_inputs(example_inputs) -> tuple | None:
    return None if example_inputs is None else as_inputs(example_inputs)


def _history(model: nn.Module) -> dict | None:
    """``model.xdfx_history`` checked and converted to float lists (None when absent)."""
    raw = getattr(model, "xdfx_history", None)
    if raw is None:
        return None
    where = "model.xdfx_history"
    if not isinstance(raw, dict):
        raise XdfxInputError(f"{where} must be a dict of per-epoch lists, got {type(raw).__name__}")
    missing = [k for k in (*HISTORY_KEYS, "metric_name") if k not in raw]
    if missing:
        raise XdfxInputError(f"{where} lacks the keys {missing}; expected {list(HISTORY_KEYS)} and 'metric_name'")
    if not isinstance(raw["metric_name"], str):
        raise XdfxInputError(f"{where}['metric_name'] must be a string, got {type(raw['metric_name']).__name__}")
    out: dict[str, Any] = {"metric_name": raw["metric_name"]}
    for key in HISTORY_KEYS:
        try:
            out[key] = [math.nan if v is None else float(v) for v in raw[key]]
        except (TypeError, ValueError) as exc:
            raise XdfxInputError(f"{where}[{key!r}] must be a list of numbers: {exc}") from None
    lengths = {k: len(out[k]) for k in HISTORY_KEYS}
    if len(set(lengths.values())) != 1:
        raise XdfxInputError(f"{where} lists must have equal lengths, got {lengths}")
    return out


def _records(hardened: nn.Module, names: list[str]) -> dict:
    recs = getattr(getattr(hardened, "xdfx_report", None), "records", None)
    if not isinstance(recs, list) or not all(hasattr(r, "form") and hasattr(r, "name") for r in recs):
        raise XdfxInputError("hardened must be the output of xdfx.harden (a model with .xdfx_report of HardenRecords)")
    by_name = {r.name: r for r in recs}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise XdfxInputError(
            f"hardened has no harden decision for the XD layers {missing[:4]}: pass xdfx.harden's output for this same model"
        )
    return by_name


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Run ``model`` in eval mode (no BatchNorm statistics move), then restore every module's flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _external_weights(model: nn.Module, layers: dict, inputs: tuple | None) -> dict:
    """Conv taps of XD layers relaxed from functional convs (``forward(x, weight, bias)``)."""
    need = [n for n, m in layers.items() if isinstance(m, XDConv) and m.external_weight]
    found: dict[str, torch.Tensor] = {}
    if need and inputs is not None:
        handles = []
        for name in need:
            def hook(_m, args, name=name):
                if len(args) > 1 and isinstance(args[1], torch.Tensor):
                    found.setdefault(name, args[1].detach())
            handles.append(layers[name].register_forward_pre_hook(hook))
        try:
            with _eval_mode(model), torch.no_grad():
                model(*inputs)
        finally:
            for h in handles:
                h.remove()
    if isinstance(model, fx.GraphModule):
        for node in model.graph.nodes:
            if node.op == "call_module" and node.target in need and node.target not in found and len(node.args) > 1:
                arg = node.args[1]
                if isinstance(arg, fx.Node) and arg.op == "get_attr":
                    owner, _, leaf = arg.target.rpartition(".")
                    found[node.target] = getattr(model.get_submodule(owner) if owner else model, leaf).detach()
    return found


# ------------------------------------------------------------------ per-layer data
def _band(per_pair: np.ndarray) -> dict:
    """Mean and 10/90 percentiles over channel pairs (rows) of ``per_pair``."""
    sample = per_pair
    if per_pair.shape[0] > MAX_PAIRS:
        rows = np.random.default_rng(0).choice(per_pair.shape[0], MAX_PAIRS, replace=False)
        sample = per_pair[np.sort(rows)]
    p10, p90 = np.percentile(sample, (10, 90), axis=0)
    return {"mean": per_pair.mean(0), "p10": p10, "p90": p90, "pairs": int(per_pair.shape[0]),
            "band_pairs": int(sample.shape[0])}


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


def _xd_spectrum(layer: XDConv, spec: torch.Tensor) -> dict:
    d, ns = layer.spatial_dims, [g.n for g in layer.geometry]
    mag = spec.abs().to(torch.float32).cpu().numpy()
    pairs = mag.reshape(-1, *mag.shape[2:])
    out: dict[str, Any] = {"shape": list(spec.shape)}
    if d == 1:
        out.update(_band(pairs), x=np.arange(pairs.shape[-1]) / ns[0], x_label="frequency (cycles/sample)",
                   title="spectrum |L w| over channel pairs", image=None)
        return out
    per_pair, x = _radial(pairs, ns)
    out.update(_band(per_pair), x=x, x_label="radial frequency |f| (cycles/sample)",
               title="|L w| vs radial frequency, over channel pairs")
    image = pairs.mean(0)
    image = image.mean(axis=tuple(range(1, d - 1))) if d > 2 else image  # (n_1, n_d//2+1)
    image = np.fft.fftshift(image, axes=0)
    f0 = np.fft.fftshift(np.fft.fftfreq(ns[0]))
    out["image"] = _pool(image)
    out["image_extent"] = [-0.5 / ns[-1], (image.shape[1] - 0.5) / ns[-1], f0[0] - 0.5 / ns[0], f0[-1] + 0.5 / ns[0]]
    out["image_title"] = "mean |L w| over pairs (axis 0 x last axis" + (", mean over middle axes)" if d > 2 else ")")
    return out


def _xd_kernel(layer: XDConv, spec: torch.Tensor) -> dict:
    """``irfftn(conj(L w))``: the filter between M and K, shown against input offsets."""
    d, geo = layer.spatial_dims, layer.geometry
    ns = [g.n for g in geo]
    full = torch.fft.irfftn(spec.to(torch.complex128).conj(), s=ns, dim=tuple(range(2, 2 + d))).cpu().numpy()
    energy = (full**2).reshape(full.shape[0], full.shape[1], -1).sum(-1)
    o, i = np.unravel_index(int(np.argmax(energy)), energy.shape)
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
    out = {
        "pair": [int(o), int(i)], "strongest": strongest, "mean_abs": mean_abs,
        "offsets": offsets, "positions": positions, "cropped": cropped, "buffer_shape": ns,
        "view": _support_view(mean_abs, offsets),
        "x_label": "input offset (buffer position u = offset + pad_left mod n)",
        "title": "effective kernel irfftn(conj(L w))" + (" (central window)" if cropped else ""), "image_note": "",
    }
    if d == 3:
        z = int(np.argmax(mean_abs.sum((0, 1))))
        out["strongest_image"], out["mean_abs_image"] = strongest[:, :, z], mean_abs[:, :, z]
        out["image_note"] = f"\naxis-2 slice at offset {int(offsets[2][z])}"
    return out


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


def _distance(q: torch.Tensor, ref: torch.Tensor) -> float:
    q, ref = q.detach().double().cpu(), ref.detach().double().cpu()
    return float(torch.linalg.norm(q - ref) / torch.linalg.norm(ref).clamp_min(1e-300))


def _xd_factors(layer: XDConv) -> list[dict]:
    out = []
    for factor, qs in (("M", layer.M), ("K", layer.K)):
        for axis, q in enumerate(qs):
            with torch.no_grad():
                dense = q.dense()
            out.append({"factor": factor, "axis": axis, "label": f"Q_{factor} axis {axis}", "size": [q.n, q.n],
                        "distance": _distance(dense, torch.eye(q.n, dtype=dense.dtype)),
                        "reference": "identity (M, K = DFT)"})
    for axis, q in enumerate(layer.L):
        out.append({"factor": "L", "axis": axis, "label": f"Q_L axis {axis}", "size": [q.n, q.k],
                    "distance": _distance(q.matrix, torch.eye(q.n, q.k)), "reference": "zero-extension [I; 0]"})
    return out


def _graph_view(layer: XDGraphConv) -> tuple[dict, dict, list[dict]]:
    lam, u = torch.linalg.eigh(layer.propagation.detach().double().cpu())
    with torch.no_grad():
        spec = layer.spectrum().detach()
    pairs = spec.abs().to(torch.float32).cpu().numpy().reshape(-1, spec.shape[-1])
    spectrum = {"shape": list(spec.shape), "x": lam.numpy(), "x_label": "eigenvalue of the propagation matrix",
                "title": "graph filter |L w| over channel pairs", "image": None, **_band(pairs)}
    w = layer.weight.detach().double().cpu().numpy()
    energy = (w**2).sum(-1)
    o, i = np.unravel_index(int(np.argmax(energy)), energy.shape)
    taps = np.arange(w.shape[-1])
    kernel = {"pair": [int(o), int(i)], "strongest": w[o, i], "mean_abs": np.abs(w).mean((0, 1)),
              "offsets": [taps], "positions": [taps], "cropped": False, "buffer_shape": [int(w.shape[-1])],
              "view": [[0, int(taps[-1])]], "x_label": "power j of the propagation matrix A",
              "title": "polynomial taps w (filter = sum_j w_j A^j)", "image_note": ""}
    factors = []
    if layer.K is not None:
        vander = lam[:, None] ** torch.arange(w.shape[-1], dtype=torch.float64)
        for factor, mat, ref, what in (("M", layer.M.matrix, u.T, "U^T"), ("K", layer.K.matrix, u, "U"),
                                       ("L", layer.L.matrix, vander, "Vandermonde")):
            factors.append({"factor": factor, "axis": 0, "label": f"{factor} (vs {what})", "size": list(mat.shape),
                            "distance": _distance(mat, ref), "reference": f"{what} of the eigendecomposition"})
    return spectrum, kernel, factors


def _layer_view(name: str, layer: nn.Module, record, weight) -> dict:
    view: dict[str, Any] = {"name": name, "notes": []}
    if isinstance(layer, XDGraphConv):
        c_out, c_in, _ = layer.weight.shape
        spectrum, kernel, factors = _graph_view(layer)
        view.update(type="XDGraphConv", spatial_dims=0, in_channels=int(c_in), out_channels=int(c_out),
                    groups=1, arch=layer.arch, origin="graph_conv", geometry=[{"nodes": layer.nodes}],
                    summary=f"graph conv, {layer.nodes} nodes, {c_in}->{c_out}" + (" depthwise" if layer.depthwise else ""))
    else:
        if layer.external_weight and weight is _MISSING:
            weight = layer.growth.new_zeros(layer.out_channels, layer.in_channels // layer.groups,
                                            *(g.kernel for g in layer.geometry))
            view["notes"].append("the conv weight is computed at run time and was not captured (pass "
                                 "example_inputs): spectrum and kernel show the learned growth only")
        with torch.no_grad():
            spec = layer.spectrum(None if weight is _MISSING else weight).detach()
        spectrum, kernel, factors = _xd_spectrum(layer, spec), _xd_kernel(layer, spec), _xd_factors(layer)
        origin = (layer.origin or {}).get("kind", "conv")
        view.update(type="XDConv", spatial_dims=layer.spatial_dims, in_channels=layer.in_channels,
                    out_channels=layer.out_channels, groups=layer.groups, arch=layer.arch, origin=origin,
                    geometry=[{"n": g.n, "in_size": g.in_size, "kernel": g.kernel, "stride": g.stride,
                               "dilation": g.dilation, "pad": list(g.pad), "mode": g.mode,
                               "kernel_buffer": g.kernel_buffer} for g in layer.geometry],
                    summary=f"{layer.spatial_dims}-d {origin}, {layer.in_channels}->{layer.out_channels}"
                    + (f" groups={layer.groups}" if layer.groups > 1 else "")
                    + ", n=" + "x".join(str(g.n) for g in layer.geometry))
    view.update(spectrum=spectrum, kernel=kernel, factors=factors,
                factors_note="arch='fixed': K and M are the plain DFT pair\n(no learnable factors)" if not factors else "",
                form=record.form, detail=record.detail, error=record.error,
                flops_before=float(record.flops_before), flops_after=float(record.flops_after),
                params_before=int(record.params_before), params_after=int(record.params_after),
                runner_up=record.runner_up or "", runner_up_error=record.runner_up_error,
                runner_up_flops=record.runner_up_flops)
    view["decision_text"] = _decision_text(view)
    return view


def _decision_text(v: dict) -> str:
    lines = ["harden decision", "", f"chosen:    {v['form']}"]
    if v["detail"]:
        lines += textwrap.wrap(v["detail"], 40, initial_indent="  ", subsequent_indent="    ")
    lines += [f"  error {_err(v['error'])}", f"  FLOPs {_num(v['flops_before'])} -> {_num(v['flops_after'])}",
              f"  params {_num(v['params_before'])} -> {_num(v['params_after'])}", ""]
    if v["runner_up"]:
        lines += [f"runner-up: {v['runner_up']}", f"  error {_err(v['runner_up_error'])}",
                  f"  FLOPs {_num(v['runner_up_flops'])}"]
    else:
        lines.append("runner-up: none")
    return "\n".join(lines)


# ------------------------------------------------------------------ whole model
def _latency(module: nn.Module, inputs: tuple) -> tuple[float, int]:
    """Median seconds per forward (eval mode, no grad) after one warm-up call, and the run count."""
    times: list[float] = []
    with _eval_mode(module), torch.no_grad():
        module(*inputs)
        for _ in range(LATENCY_RUNS):
            start = time.perf_counter()
            module(*inputs)
            times.append(time.perf_counter() - start)
            if sum(times) > LATENCY_BUDGET_S and len(times) >= 3:
                break
    return statistics.median(times), len(times)


def _summary(model, hardened, views, inputs, harden_report, tol) -> dict:
    forms = Counter(v["form"] for v in views)
    out: dict[str, Any] = {
        "xd_layers": len(views),
        "forms": dict(sorted(forms.items(), key=lambda kv: (-kv[1], kv[0]))),
        "params_before": sum(p.numel() for p in model.parameters()),
        "params_after": sum(p.numel() for p in hardened.parameters()),
        "arch_params": sum(p.numel() for p in arch_parameters(model)),
        "xd_flops_before": sum(v["flops_before"] for v in views),
        "xd_flops_after": sum(v["flops_after"] for v in views),
        "tol": tol,
        "end_to_end_error": getattr(harden_report, "end_to_end_error", None),
        "latency_before_s": None, "latency_after_s": None, "latency_runs": None,
        "latency_note": "latency: not measured (pass example_inputs)",
    }
    if inputs is not None:
        before, runs = _latency(model, inputs)
        after, runs_after = _latency(hardened, inputs)
        out.update(latency_before_s=before, latency_after_s=after, latency_runs=[runs, runs_after],
                   latency_note=f"median of {runs} / {runs_after} forward calls on example_inputs after a warm-up, "
                                f"eval mode, no grad, {torch.get_num_threads()} threads")
    return out


# ------------------------------------------------------------------ document
def _num(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    x = float(x)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _err(x) -> str:
    if x is None:
        return "-"
    return "inf" if not math.isfinite(x) else f"{x:.1e}"


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:.2f} ms"


def _document(summary: dict, views: list[dict], history: dict | None) -> list[tuple]:
    """The report as blocks: ("h", level, text), ("p", text), ("table", header, rows), ("img", src, alt)."""
    s = summary
    doc: list[tuple] = [("h", 1, "xdfx report"),
                        ("p", f"{s['xd_layers']} XD layers; harden tolerance {s['tol']:g} (relative max error per layer). "
                              "Data behind every figure: `report.json`.")]
    doc.append(("h", 2, "Summary"))
    rows = [["parameters", f"{s['params_before']:,}", f"{s['params_after']:,}"],
            ["of which architecture (K, L, M factors)", f"{s['arch_params']:,}", "0"],
            ["XD-layer FLOPs per call (estimate)", _num(s["xd_flops_before"]), _num(s["xd_flops_after"])]]
    if s["latency_before_s"] is not None:
        rows.append(["latency (" + s["latency_note"] + ")", _ms(s["latency_before_s"]), _ms(s["latency_after_s"])])
    doc.append(("table", ["", "before (relaxed)", "after (hardened)"], rows))
    if s["latency_before_s"] is None:
        doc.append(("p", s["latency_note"]))
    if s["end_to_end_error"] is not None:
        doc.append(("p", "End-to-end relative max error of the hardened model on example_inputs: "
                         f"{_err(s['end_to_end_error'])}."))
    doc.append(("table", ["chosen form", "XD layers"], [[f"`{k}`", str(c)] for k, c in s["forms"].items()]))
    doc.append(("img", "overview.png", "FLOPs before/after and factor distance per layer"))

    doc.append(("h", 2, "XD layers"))
    header = ["#", "layer", "type", "chosen form", "detail", "error", "runner-up", "runner-up error",
              "runner-up FLOPs", "FLOPs before -> after", "max factor distance"]
    rows = []
    for k, v in enumerate(views):
        dist = max((f["distance"] for f in v["factors"]), default=None)
        rows.append([str(k), f"[`{v['name']}`](#layer-{k})", v["summary"], f"`{v['form']}`", v["detail"],
                     _err(v["error"]), v["runner_up"] or "-", _err(v["runner_up_error"]), _num(v["runner_up_flops"]),
                     f"{_num(v['flops_before'])} -> {_num(v['flops_after'])}", "-" if dist is None else f"{dist:.3g}"])
    doc.append(("table", header, rows))

    doc.append(("h", 2, "Search"))
    if history is None:
        doc.append(("p", "No search history: `model.xdfx_history` is absent."))
    elif not history["epoch"]:
        doc.append(("p", "`model.xdfx_history` is present but holds no epochs."))
    else:
        doc.append(("img", "search.png", "search curves"))
        last = {k: history[k][-1] for k in HISTORY_KEYS}
        header = ["epochs", "final train loss", f"final val {history['metric_name']}", "final model lr", "final arch lr"]
        doc.append(("table", header,
                    [[str(len(history["epoch"])), f"{last['train_loss']:.4g}", f"{last['val_metric']:.4g}",
                      f"{last['model_lr']:.3g}", f"{last['arch_lr']:.3g}"]]))

    doc.append(("h", 2, "Layers"))
    for k, v in enumerate(views):
        doc.append(("anchor", f"layer-{k}"))
        doc.append(("h", 3, f"{k}. `{v['name']}` -> `{v['form']}`"))
        doc.append(("p", f"{v['type']} ({v['summary']}), arch `{v['arch']}`, relaxed from a {v['origin']}. "
                         + _geometry_text(v)))
        doc.append(("table", ["", "chosen", "runner-up"], [
            ["form", f"`{v['form']}`", f"`{v['runner_up']}`" if v["runner_up"] else "none"],
            ["detail", v["detail"] or "-", "-"],
            ["relative error", _err(v["error"]), _err(v["runner_up_error"])],
            ["FLOPs (XD before: " + _num(v["flops_before"]) + ")", _num(v["flops_after"]), _num(v["runner_up_flops"])],
            ["parameters (XD before: " + f"{v['params_before']:,}" + ")", f"{v['params_after']:,}", "-"],
        ]))
        if v["factors"]:
            rows = [[f["label"], "x".join(map(str, f["size"])), f"{f['distance']:.4g}", f["reference"]] for f in v["factors"]]
            doc.append(("table", ["factor", "size", "distance from warm start", "warm start"], rows))
        else:
            doc.append(("p", v["factors_note"].replace("\n", " ") + "."))
        for note in v["notes"]:
            doc.append(("p", "Note: " + note + "."))
        doc.append(("img", v["figure"], f"{v['name']}: spectrum, kernel, factors"))
        doc.append(("p", _caption(v)))
    doc.append(("h", 2, "How to read the figures"))
    doc.append(("p", "An XD layer computes Real(K diag(L w) M x) with M = F Q_M, K = Q_K F^-1 (F the DFT). "
                     "The factor distance is ||Q - Q0||_F / ||Q0||_F from the warm start Q0 (the identity for Q_M, Q_K, "
                     "so it is the distance of M and K from the DFT they started at). The spectrum is |L w| per channel "
                     "pair (mean and 10-90 percentile band over pairs); the effective kernel irfftn(conj(L w)) is the "
                     "layer's impulse response when K and M are the DFT pair (with other factors it is the filter "
                     "between them). Kernels are drawn against the input offset they multiply: output position t*s reads "
                     "input t*s + offset, and buffer position u holds offset u - pad_left (circularly), so a 'same' conv's "
                     "taps sit around 0."))
    return doc


def _geometry_text(v: dict) -> str:
    if v["type"] == "XDGraphConv":
        return f"{v['geometry'][0]['nodes']} nodes."
    parts = [f"axis {i}: input {g['in_size']}, kernel {g['kernel']}, stride {g['stride']}, dilation {g['dilation']}, "
             f"pad {tuple(g['pad'])}, transform n={g['n']}, buffer {g['kernel_buffer']}"
             for i, g in enumerate(v["geometry"])]
    return f"Padding mode `{v['geometry'][0]['mode']}`; " + "; ".join(parts) + "."


def _caption(v: dict) -> str:
    sp, ke = v["spectrum"], v["kernel"]
    band = f"{sp['band_pairs']} of them" if sp["band_pairs"] < sp["pairs"] else "all"
    text = (f"Left: |L w| over {sp['pairs']} channel pairs, mean (line) and 10-90 percentile band ({band} pairs). "
            f"Kernel: red is the channel pair with the most energy (out {ke['pair'][0]}, in {ke['pair'][1]}), "
            "green the mean |kernel| over pairs.")
    if v["spatial_dims"] >= 2:
        text += " Images: mean |L w| (zero frequency of axis 0 centred) and the kernels around offset 0."
    if ke["cropped"]:
        text += " The kernel is shown in a central window of offsets (the buffer is longer)."
    return text


def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\[`([^`]*)`\]\(#([\w-]+)\)", r'<a href="#\2"><code>\1</code></a>', out)
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", out)


def _render_md(doc: list[tuple]) -> str:
    lines: list[str] = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "anchor":
            lines.append(f'<a id="{block[1]}"></a>')
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
        elif kind == "table":
            cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            lines.append("| " + " | ".join(cell(c) for c in block[1]) + " |")
            lines.append("|" + "---|" * len(block[1]))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in block[2]]
            lines.append("")
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 3px}
h3{margin-top:2em;border-top:1px solid #ddd;padding-top:.8em}"""


def _render_html(doc: list[tuple]) -> str:
    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>xdfx report</title>',
             f"<style>{CSS}</style></head><body>"]
    for block in doc:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "anchor":
            parts.append(f'<a id="{html.escape(block[1])}"></a>')
        elif kind == "img":
            parts.append(f'<p><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}"></p>')
        elif kind == "table":
            head = "".join(f"<th>{_inline_html(str(c))}</th>" for c in block[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ------------------------------------------------------------------ files
def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _write(folder: Path, summary: dict, views: list[dict], history: dict | None) -> None:
    from . import plots

    (folder / "layers").mkdir()
    figures = ["overview.png"]
    plots.overview_figure(folder / "overview.png", views)
    if history is not None and history["epoch"]:
        plots.history_figure(folder / "search.png", history)
        figures.append("search.png")
    for v in views:
        plots.layer_figure(folder / v["figure"], v)
        figures.append(v["figure"])
    doc = _document(summary, views, history)
    (folder / "report.md").write_text(_render_md(doc), encoding="utf-8")
    (folder / "report.html").write_text(_render_html(doc), encoding="utf-8")
    drop = ("decision_text", "factors_note")
    data = {"generator": GENERATOR, "format": 1, "summary": summary, "figures": figures,
            "layers": [{k: val for k, val in v.items() if k not in drop} for v in views], "history": history}
    (folder / "report.json").write_text(json.dumps(_jsonable(data), allow_nan=False), encoding="utf-8")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "layer"


def _is_report(folder: Path) -> bool:
    try:
        return json.loads((folder / "report.json").read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(target: Path) -> None:
    """Fail early, before any work, if ``target`` cannot become the report folder."""
    where = f"cannot write the report to {str(target)!r}"
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise XdfxError(f"{where}: it exists and is not a directory (a file or a link)")
        if any(target.iterdir()) and not _is_report(target):
            raise XdfxError(f"{where}: the folder is not empty and holds no xdfx report; choose a new path")
    ancestor = target.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise XdfxError(f"{where}: {str(ancestor)!r} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise XdfxError(f"{where}: {str(ancestor)!r} is not writable")


def _make_temp(target: Path) -> Path:
    try:
        target.absolute().parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.absolute().parent))
    except OSError as exc:
        raise XdfxError(f"cannot write the report to {str(target)!r}: {exc}") from exc


def _install(tmp: Path, target: Path) -> None:
    """Move the finished folder into place, replacing an earlier report only once it is complete."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.absolute().parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
