"""``report()``: a self-contained folder that shows what search did to every XD layer.

    path/
      report.html     open in any browser (no server, no scripts)
      report.md       the same content as Markdown with relative image links
      report.json     the data behind every figure and table (for tests and notebooks)
      overview.png    per-layer FLOPs before/after hardening, largest factor distance
      search.png      loss, validation metric and learning rates per epoch (with model.xdfx_history)
      layers/NN_<name>.png  per XD layer: spectrum |L w|, effective kernel, factor distances

The folder is written into a temporary sibling and renamed into place at the end (see
:mod:`.install`), so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..common import as_inputs, xd_layers
from ..errors import XdfxError, XdfxInputError
from . import figures
from .content import report_document
from .document import to_html, to_markdown
from .history import HISTORY_KEYS, History, read_history
from .install import GENERATOR, check_target, install, make_temp
from .layer import LayerView, layer_view
from .sources import harden_records, origin_kind, runtime_weights
from .summary import Summary, summarize

__all__ = ["report", "HISTORY_KEYS"]


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
    layers = xd_layers(model)
    if not layers:
        raise XdfxInputError(
            "the model has no XD layers, so there is nothing to report: pass the output of xdfx.relax "
            "(before hardening), not the original or the hardened model"
        )
    history = read_history(model)
    inputs = None if example_inputs is None else as_inputs(example_inputs)
    target = Path(path)
    check_target(target)

    if hardened is None:
        from ..harden import harden

        hardened = harden(model, tol=tol, example_inputs=example_inputs)
    records = harden_records(hardened, list(layers))
    tol = float(hardened.xdfx_report.tol or tol)

    weights = runtime_weights(model, layers, inputs)
    views = [layer_view(name, layer, records[name], weights.get(name), origin_kind(model, name, layer),
                        figure=f"layers/{index:02d}_{_safe(name)}.png")
             for index, (name, layer) in enumerate(layers.items())]
    summary = summarize(model, hardened, views, inputs, tol)

    tmp = make_temp(target)
    try:
        _write(tmp, summary, views, history)
        install(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise XdfxError(f"could not write the report to {str(target)!r}: {exc}") from exc
        raise
    return target


def _write(folder: Path, summary: Summary, views: list[LayerView], history: History | None) -> None:
    (folder / "layers").mkdir()
    written = ["overview.png"]
    figures.overview_figure(folder / "overview.png", views)
    if history is not None and history.epoch:
        figures.history_figure(folder / "search.png", history)
        written.append("search.png")
    for v in views:
        figures.layer_figure(folder / v.figure, v)
        written.append(v.figure)
    doc = report_document(summary, views, history)
    (folder / "report.md").write_text(to_markdown(doc), encoding="utf-8")
    (folder / "report.html").write_text(to_html(doc), encoding="utf-8")
    data = {"generator": GENERATOR, "format": 1, "summary": asdict(summary), "figures": written,
            "layers": [v.to_json() for v in views], "history": None if history is None else asdict(history)}
    (folder / "report.json").write_text(json.dumps(_jsonable(data), allow_nan=False), encoding="utf-8")


def _jsonable(x):
    """Plain JSON values: numpy arrays and scalars converted, non-finite floats as null."""
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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "layer"
