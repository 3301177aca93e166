"""Comparing a served model with the eager PyTorch model it came from.

An export or a compilation can succeed and still compute something else, so every output is
compared with eager PyTorch's, on the example inputs and on random probes of other batch sizes
(random, so that a graph specialised to the example's values shows up).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Collection, Sequence

import numpy as np
import torch
from torch import nn

from ..common import as_inputs, model_device
from .result import XdfxExportError


def model_args(model: nn.Module, example_inputs: torch.Tensor | Sequence[Any]) -> tuple:
    """``example_inputs`` as forward arguments, their tensors on the model's device."""
    device = model_device(model)
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in as_inputs(example_inputs))


def output_tensors(fn: Callable[..., Any], args: tuple) -> list[torch.Tensor]:
    """The tensors of ``fn(*args)`` run without gradients (any nesting of tuples, lists and dicts)."""
    with torch.no_grad():
        out = fn(*args)
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def random_like(t: torch.Tensor, batch: int | None, gen: torch.Generator) -> torch.Tensor:
    """A random tensor like ``t`` (batch ``batch`` in dimension 0 if given), of similar scale."""
    shape = (batch, *t.shape[1:]) if batch is not None and t.dim() else tuple(t.shape)
    if t.dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if not t.is_floating_point():
        lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 1)
        return torch.randint(lo, hi + 1, shape, generator=gen, dtype=t.dtype)
    ref = t.detach().double()
    mean = float(ref.mean()) if t.numel() else 0.0
    std = float(ref.std()) if t.numel() > 1 else 1.0
    std = std if math.isfinite(std) and std > 0 else 1.0
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * std + mean).to(t.dtype)


def random_probe(args: tuple, batch: int, static: Collection[int], gen: torch.Generator) -> tuple:
    """Random forward arguments like ``args``: batch ``batch`` in every tensor whose position is
    not in ``static``, the example's shape in the others; non-tensors are kept."""
    return tuple(
        random_like(a, None if i in static else batch, gen).to(a.device) if isinstance(a, torch.Tensor) else a
        for i, a in enumerate(args)
    )


def _as_array(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)


def check_outputs(reference: Sequence[Any], actual: Sequence[Any], tol: float, *, what: str = "the inputs",
                  names: Sequence[str] | None = None, runtime: str = "onnxruntime") -> float:
    """Raise :class:`XdfxExportError` unless every ``actual`` output is within
    ``tol * max|reference|`` of its reference (max abs error); return the largest relative error.

    Outputs are tensors or arrays, compared in float64 on the CPU. NaNs must sit at the same
    places in both; a shape or count mismatch is an error.
    """
    ref = [_as_array(r) for r in reference]
    got = [_as_array(a) for a in actual]
    label = lambda k: f"output {k}" + (f" ({names[k]!r})" if names and k < len(names) else "")  # noqa: E731
    if len(ref) != len(got):
        raise XdfxExportError(f"{runtime} returns {len(got)} outputs for {what}, the PyTorch model {len(ref)}")
    worst, worst_at = 0.0, None
    for k, (r, a) in enumerate(zip(ref, got)):
        if r.shape != a.shape:
            raise XdfxExportError(
                f"{label(k)} has shape {tuple(a.shape)} in {runtime} but {tuple(r.shape)} in PyTorch, on {what}"
            )
        r64, a64 = r.astype(np.float64), a.astype(np.float64)
        nan_r, nan_a = np.isnan(r64), np.isnan(a64)
        if (nan_r != nan_a).any():
            raise XdfxExportError(f"{label(k)} has NaNs at different places in {runtime} and PyTorch, on {what}")
        r64, a64 = np.where(nan_r, 0.0, r64), np.where(nan_a, 0.0, a64)
        err = float(np.abs(a64 - r64).max()) if r64.size else 0.0
        scale = float(np.abs(r64).max()) if r64.size else 0.0
        if not math.isfinite(err):  # matching infinities give inf - inf = nan
            err = 0.0 if np.array_equal(r64, a64) else math.inf
        rel = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
        if err > tol * scale or (scale == 0 and err > 0):
            raise XdfxExportError(
                f"{runtime} disagrees with the eager PyTorch model on {what}: {label(k)} (shape {tuple(r.shape)}) "
                f"has max error {err:.3g} > tol {tol:g} * max|y| {scale:.3g} (relative error {rel:.3g}). The traced "
                "graph computes something else than the eager model: look for code that branches on "
                "torch.compiler.is_exporting() / is_compiling(), state read once at trace time, or a "
                "translation bug in the ops feeding that output"
            )
        if worst_at is None or rel > worst:
            worst, worst_at = rel, k
    return worst
