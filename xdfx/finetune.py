"""``xdfx.finetune``: retrain the weights of a hardened model ("discretize, then retrain").

:func:`xdfx.harden` snaps layers that no cheap form reproduces within ``tol`` onto their nearest
cheap form; fine-tuning the weights of the result on the user's data recovers what the projection
lost. It is :func:`xdfx.search`'s trainer (progress, checkpoints, NaN detection) on a model with no
architecture parameters left, and it adds its outcome to the harden report.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .common import as_inputs, capture_inputs, eval_mode, relative_error
from .errors import XdfxInputError
from .params import arch_parameters
from .records import FinetuneRecord, HardenReport
from .search import SearchOptimizers, evaluate, optimizers, search


def finetune(
    model: nn.Module,
    train_loader: Iterable,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 3e-5,
    opt: SearchOptimizers | None = None,
    val_loader: Iterable | None = None,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    metric_name: str = "val loss",
    reference: nn.Module | None = None,
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    schedule: str | None = "cosine",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    grad_clip: float | None = None,
) -> nn.Module:
    """Train every weight of a hardened ``model`` in place on ``(x, y)`` batches; returns it.

    Parameters
    ----------
    model : nn.Module
        The output of :func:`xdfx.harden` (it must hold no architecture parameter).
    train_loader, loss_fn
        Batches ``(x, y)`` and ``loss_fn(model(x), y)``, as for :func:`xdfx.search`.
    epochs, steps : int, optional
        The budget: whole passes over ``train_loader``, optimizer steps, or both (the first
        reached stops). ``steps`` alone takes as many epochs as it needs.
    lr : float
        Adam's learning rate (ignored with ``opt``, e.g. ``xdfx.optimizers(model, lambda p: ...)``).
        The default is a small fraction of a usual training rate: Adam's first steps move every
        weight by about ``lr``, and on the demo ``1e-4`` first undid much of what the snapped
        weights kept (``3e-5`` did not).
    val_loader, metric, metric_name
        Evaluated before and after fine-tuning (``metric`` defaults to ``loss_fn``).
    reference : nn.Module, optional
        The searched model that was hardened: the report then gives each layer's relative error
        to it after fine-tuning (before: the harden error), and the whole model's, on
        ``example_inputs`` (default: the first batch of ``train_loader``).
    schedule, checkpoint, resume, progress, grad_clip
        As for :func:`xdfx.search`.

    Returns
    -------
    nn.Module
        ``model``, fine-tuned, with ``xdfx_history`` (per epoch) and, if it came from
        :func:`xdfx.harden`, its report's ``finetune`` and per-layer ``finetuned_error`` filled in.

    Raises
    ------
    XdfxInputError
        No budget, an empty loader, or a model that still has architecture parameters.
    XdfxError
        The loss became NaN or infinite (naming the epoch and step).
    """
    if opt is None and not 0.0 < lr < math.inf:  # NaN fails both
        raise XdfxInputError(f"lr must be a finite number > 0 (default 3e-5), got {lr}")
    if epochs is None and steps is None:
        raise XdfxInputError("finetune needs a budget: epochs=..., steps=... or both")
    if arch_parameters(model):
        raise XdfxInputError("finetune trains a hardened model, but this one still has architecture parameters "
                             "(K, L, M): call xdfx.harden first, or xdfx.search to keep searching")
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
        if loader is not None and hasattr(loader, "__len__") and len(loader) == 0:
            raise XdfxInputError(f"{name} is empty (0 batches): fine-tuning needs data")
    if epochs is None:
        per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else 1
        epochs = math.ceil(steps / per_epoch)
    metric = metric or (lambda p, t: loss_fn(p, t))
    report = getattr(model, "xdfx_report", None)
    report = report if isinstance(report, HardenReport) else None
    device = next(model.parameters()).device
    inputs = _calibration(reference, example_inputs, train_loader, device)
    before = _end_to_end(model, reference, inputs)
    metric_before = evaluate(model, val_loader, metric, device) if val_loader is not None else None
    began = time.perf_counter()
    search(model, train_loader, loss_fn, epochs, val_loader=val_loader, metric=metric, metric_name=metric_name,
           opt=opt or optimizers(model, lambda p: torch.optim.Adam(p, lr=lr)), schedule=schedule,
           checkpoint=checkpoint, resume=resume, progress=progress, grad_clip=grad_clip, max_steps=steps)
    history = model.xdfx_history
    if report is not None:
        report.finetune = FinetuneRecord(
            epochs=len(history["epoch"]), steps=history["steps"][-1] if history["steps"] else 0,
            seconds=time.perf_counter() - began, metric_name=metric_name if val_loader is not None else "",
            metric_before=metric_before, metric_after=history["val_metric"][-1] if val_loader is not None else None,
            end_to_end_error_before=before, end_to_end_error_after=_end_to_end(model, reference, inputs))
        if reference is not None:
            _layer_errors(model, reference, inputs, report)
    return model


def _calibration(reference, example_inputs, loader, device) -> tuple | None:
    if reference is None:
        return None
    if example_inputs is not None:
        return as_inputs(example_inputs)
    x, _ = next(iter(loader))
    return (x.to(device),) if isinstance(x, torch.Tensor) else tuple(x)


def _end_to_end(model: nn.Module, reference: nn.Module | None, inputs: tuple | None) -> float | None:
    if reference is None:
        return None
    with eval_mode(model), eval_mode(reference), torch.no_grad():
        return relative_error(model(*inputs), reference(*inputs))


def _layer_errors(model: nn.Module, reference: nn.Module, inputs: tuple, report: HardenReport) -> None:
    """Each hardened layer against the searched layer, both fed what the searched layer saw."""
    modules = dict(model.named_modules())
    names = [r.name for r in report.records if r.name in modules]
    probes = capture_inputs(reference, names, inputs)
    for record in report.records:
        args = probes.get(record.name)
        if args is None:
            continue
        layer, hard = reference.get_submodule(record.name), modules[record.name]
        with eval_mode(model), torch.no_grad():
            ref = layer(*args)
            got = hard(args[0], args[2]) if record.form == "frozen" and len(args) > 2 else hard(args[0])
        record.finetuned_error = relative_error(got, ref)
