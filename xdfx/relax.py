"""``xdfx.relax``: turn a CNN into a search space of warm-started XD operations."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import fx, nn

from .errors import XdfxInputError
from .ops import XDConv
from .passes.relax_conv import RelaxConfig, relax_conv_functions, relax_conv_modules
from .passes.shape_info import propagate_shapes
from .report import Report
from .trace import trace


def _as_inputs(example_inputs: Any) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs:
        return tuple(example_inputs)
    raise XdfxInputError(
        f"example_inputs must be a tensor or a non-empty tuple of forward arguments, got "
        f"{type(example_inputs).__name__}"
    )


def relax(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[Any],
    *,
    arch: str = "monarch",
    max_kernel_size: int | None = None,
    inplace: bool = False,
) -> fx.GraphModule:
    """Rewrite every convolution of ``model`` into an XD-operation that computes the same thing.

    Parameters
    ----------
    model : nn.Module
        The network. It is copied first and never modified unless ``inplace=True``.
    example_inputs : Tensor or tuple
        Arguments of ``model.forward``; their spatial sizes fix each layer's transform length.
    arch : {"monarch", "fixed"}
        Learnable structured K, L, M (the search space) or plain FFTs.
    max_kernel_size : int, optional
        Cap on the kernel taps per axis; by default ``w`` spans the whole transform.
    inplace : bool
        Skip the copy: ``model``'s own conv modules are replaced by the XD layers, which the
        returned graph shares.

    Returns
    -------
    fx.GraphModule
        The relaxed model; ``.xdfx_report`` lists every rewritten and skipped layer.
    """
    if not isinstance(model, nn.Module):
        raise XdfxInputError(f"relax expects an nn.Module, got {type(model).__name__}")
    inputs = _as_inputs(example_inputs)
    already = [n for n, m in model.named_modules() if isinstance(m, XDConv)]
    if already:
        raise XdfxInputError(
            f"the model is already relaxed (XD layers at {already[:3]}); relax the original model"
        )
    config = RelaxConfig(arch=arch, max_kernel_size=max_kernel_size)
    root = model if inplace else copy.deepcopy(model)
    gm = trace(root)
    propagate_shapes(gm, inputs)
    records = relax_conv_modules(gm, config) + relax_conv_functions(gm, config)
    gm.graph.lint()
    gm.recompile()
    if inplace:
        for name, module in gm.named_modules():
            if isinstance(module, XDConv) and _has_submodule(model, name):
                model.set_submodule(name, module)
    gm.training = model.training
    gm.xdfx_report = Report("xdfx.relax", records)
    return gm


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True
