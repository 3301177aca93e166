"""Saying when an exported model runs slower than eager PyTorch, and which layers are to blame.

The whole-model latencies come from :func:`xdfx.export.onnx`. Where onnxruntime is slower than
``slow_ratio`` x eager, the session is profiled (its nodes carry the module they came from in
the exporter's ``pkg.torch.onnx.name_scopes`` metadata) and the eager model is timed per module
with forward hooks, so that each layer's onnxruntime time stands next to its eager time.
"""

from __future__ import annotations

import ast
import collections
import json
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx as onnx_pkg
import torch
from torch import nn

from .result import XdfxExportWarning


class XdfxSlowExportWarning(XdfxExportWarning):
    """The exported model runs slower in onnxruntime than the eager model, beyond the ratio asked."""


@dataclass
class LayerTiming:
    """One top-level module's share of the latency: milliseconds per run in each runtime."""

    name: str
    form: str
    ort_ms: float
    eager_ms: float

    @property
    def ratio(self) -> float:
        return self.ort_ms / self.eager_ms if self.eager_ms > 0 else float("inf")


def _node_modules(path: Path) -> dict[str, str]:
    """ONNX node name -> the first name scope the exporter recorded for it (a module path)."""
    out = {}
    for node in onnx_pkg.load(str(path), load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        if scopes:
            try:
                names = ast.literal_eval(scopes)
            except (ValueError, SyntaxError):
                continue
            if len(names) > 1:
                out[node.name] = names[0]
    return out


def _ort_per_module(path: Path, feed: dict, threads: int, runs: int) -> dict[str, float]:
    """Milliseconds per run of each top-level module's nodes in a profiled onnxruntime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix("")) + "_profile"
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, feed)
    for _ in range(runs):
        session.run(None, feed)
    trace = session.end_profiling()
    try:
        events = json.loads(Path(trace).read_text())
    finally:
        os.remove(trace)
    modules = _node_modules(path)
    total: dict[str, float] = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            total[modules.get(node, "")] += e["dur"] / 1e3
    return {k: v / (runs + 1) for k, v in total.items()}


def _eager_per_module(model: nn.Module, args: tuple, names: list[str], runs: int) -> dict[str, float]:
    """Median milliseconds per call of the named submodules, timed with forward hooks."""
    times: dict[str, list[float]] = {n: [] for n in names}
    start: dict[str, float] = {}
    handles = []
    for n in names:
        m = model.get_submodule(n)
        handles.append(m.register_forward_pre_hook(lambda _m, _a, n=n: start.__setitem__(n, time.perf_counter())))
        handles.append(m.register_forward_hook(
            lambda _m, _a, _o, n=n: times[n].append(1e3 * (time.perf_counter() - start[n]))))
    try:
        with torch.no_grad():
            model(*args)
            for v in times.values():
                v.clear()
            for _ in range(runs):
                model(*args)
    finally:
        for h in handles:
            h.remove()
    calls = {n: max(1, len(v) // runs) for n, v in times.items()}
    return {n: statistics.median(v) * calls[n] if v else 0.0 for n, v in times.items()}


def layer_timings(model: nn.Module, args: tuple, path: Path, feed: dict, forms: dict[str, str],
                  threads: int, runs: int = 5) -> list[LayerTiming]:
    """Per module that owns nodes of the graph (frozen and spectral layers, convs, ...),
    onnxruntime against eager milliseconds, slowest in onnxruntime first."""
    ort_ms = _ort_per_module(path, feed, threads, runs)
    modules = dict(model.named_modules())
    # nodes carry the module path fx called (a hardened layer, or a plain module next to them)
    names = [n for n in ort_ms if n and n in modules]
    eager_ms = _eager_per_module(model, args, names, runs)
    out = []
    for n in names:
        form = forms.get(n, type(modules[n]).__name__)
        out.append(LayerTiming(n, form, ort_ms[n], eager_ms.get(n, 0.0)))
    return sorted(out, key=lambda t: -t.ort_ms)


def warn_if_slow(ratio: float | None, slow_ratio: float | None, ort_ms: float | None, eager_ms: float | None,
                 timings: list[LayerTiming], threads: int, dft_nodes: int, dft_layers: list[str]) -> str | None:
    """Warn (:class:`XdfxSlowExportWarning`) where ``ratio`` exceeds ``slow_ratio``; return the message."""
    if ratio is None or slow_ratio is None or ratio <= slow_ratio:
        return None
    blame = [t for t in timings if t.ratio > slow_ratio][:5]
    parts = [f"xdfx.export.onnx: onnxruntime runs the exported model {ratio:.2f}x slower than eager PyTorch "
             f"({ort_ms:.2f} ms vs {eager_ms:.2f} ms, {threads} thread(s)), beyond slow_ratio={slow_ratio:g}."]
    if dft_nodes:
        which = f" (layers exported with method 'fft': {', '.join(dft_layers)})" if dft_layers else ""
        parts.append(f"The graph holds {dft_nodes} ONNX DFT node(s){which}, which onnxruntime runs far slower "
                     "than matmuls: set those layers' onnx_method to 'factored' or 'matmul'.")
    if blame:
        listed = "; ".join(f"{t.name} ({t.form}): {t.ort_ms:.2f} ms vs {t.eager_ms:.2f} ms eager" for t in blame)
        parts.append(f"Slowest layers against eager: {listed}.")
    parts.append("Timings on a shared machine vary between runs: re-measure before acting on them.")
    message = " ".join(parts)
    warnings.warn(message, XdfxSlowExportWarning, stacklevel=3)
    return message
