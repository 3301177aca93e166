"""``xdfx.harden``: every XD layer back to the cheapest standard operator that reproduces it."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import fx, nn

from .errors import XdfxError, XdfxInputError
from .ops import XDConv
from .ops.graph import XDGraphConv
from .passes.harden_xd import Candidate, choose, graph_candidates, measure, xd_flops, xdconv_candidates
from .relax import as_inputs, drop_dead_attributes
from .records import Report

XD_TYPES = (XDConv, XDGraphConv)


@dataclass
class HardenRecord:
    """What one XD layer became."""

    name: str
    form: str
    detail: str
    error: float
    flops_before: float
    flops_after: float
    params_before: int
    params_after: int
    runner_up: str = ""
    runner_up_error: float | None = None
    runner_up_flops: float | None = None
    status: str = "hardened"

    @property
    def op(self) -> str:
        return self.form


@dataclass
class HardenReport(Report):
    """Per-layer records plus the whole-model error on the calibration inputs (if given)."""

    end_to_end_error: float | None = None
    tol: float = 0.0
    records: list = field(default_factory=list)


def _capture_inputs(gm: nn.Module, names: Sequence[str], inputs: tuple) -> dict[str, tuple]:
    """The arguments each named module sees on its first call while ``gm`` runs on ``inputs``."""
    seen: dict[str, tuple] = {}
    handles = []
    for name in names:
        def hook(_m, args, name=name):
            seen.setdefault(name, tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
        handles.append(gm.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            gm(*inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _random_probe(module: nn.Module, gm: fx.GraphModule, name: str) -> tuple:
    gen = torch.Generator().manual_seed(0)
    if isinstance(module, XDGraphConv):
        c_in = module.weight.shape[1] if not module.depthwise else module.weight.shape[0]
        return (torch.randn(module.nodes, c_in, generator=gen).to(module.weight),)
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    x = torch.randn(2, module.in_channels, *(g.in_size for g in module.geometry), generator=gen, dtype=dtype).to(device)
    if not module.external_weight:
        return (x,)
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == name and node.args[1].op == "get_attr":
            weight = _attr(gm, node.args[1].target)
            bias = _attr(gm, node.args[2].target) if len(node.args) > 2 and node.args[2].op == "get_attr" else None
            return (x, weight.detach(), None if bias is None else bias.detach())
    raise XdfxInputError(f"layer {name!r} takes a weight computed at run time: pass example_inputs to harden")


def _attr(gm: nn.Module, target: str) -> torch.Tensor:
    owner, _, leaf = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, leaf)


def _check_finite(gm: nn.Module) -> None:
    for name, p in gm.named_parameters():
        if not torch.isfinite(p).all():
            raise XdfxError(
                f"parameter {name!r} has NaN or infinite entries; harden a checkpoint from before the "
                "divergence (lower the architecture learning rate)"
            )


def harden(model: nn.Module, tol: float = 1e-4, example_inputs: torch.Tensor | Sequence[Any] | None = None) -> fx.GraphModule:
    """Replace every XD layer by the cheapest standard operator within ``tol`` (relative error).

    Parameters
    ----------
    model : fx.GraphModule
        A relaxed (and usually searched) model; it is not modified.
    tol : float
        Largest accepted relative max error of each replacement on its probe inputs.
    example_inputs : optional
        Calibration inputs of the whole model: each layer is then measured on the activations it
        really sees, and the report gives the end-to-end error too.

    Returns
    -------
    fx.GraphModule
        Standard ops only; ``.xdfx_report`` (a :class:`HardenReport`) says per layer what was
        chosen, its error, FLOPs and parameters before and after, and the runner-up.
    """
    if not isinstance(model, nn.Module):
        raise XdfxInputError(f"harden expects a relaxed model (nn.Module), got {type(model).__name__}")
    names = [n for n, m in model.named_modules() if isinstance(m, XD_TYPES)]
    if not names:
        raise XdfxInputError("the model has no XD layers to harden: pass the output of xdfx.relax")
    _check_finite(model)
    gm = copy.deepcopy(model)
    inputs = as_inputs(example_inputs) if example_inputs is not None else None
    probes = _capture_inputs(gm, names, inputs) if inputs is not None else {}
    records = []
    is_graph = isinstance(gm, fx.GraphModule)
    for name in names:
        layer = gm.get_submodule(name)
        args = probes.get(name) or _random_probe(layer, gm, name)
        x, weight = args[0], (args[1] if len(args) > 1 else None)
        bias = args[2] if len(args) > 2 else None
        if isinstance(layer, XDGraphConv):
            cands = graph_candidates(layer, [x], tol)
            ref = lambda t, layer=layer: layer(t)  # noqa: E731
            before = 4.0 * layer.nodes ** 2 * max(layer.weight.shape[:2]) + 2.0 * layer.nodes * math.prod(layer.weight.shape[:2])
        else:
            cands = xdconv_candidates(layer, [x], tol, weight, bias)
            ref = lambda t, layer=layer, w=weight, b=bias: layer(t, w, b)  # noqa: E731
            before = xd_flops(layer, x.shape[2:])
        for c in cands:
            c.error = measure(ref, c, [x], weight, bias)
        best, runner = choose(cands, tol)
        _install(gm, name, best, is_graph)
        records.append(
            HardenRecord(
                name, best.form, best.detail, best.error, before, best.flops,
                sum(p.numel() for p in layer.parameters()), best.params,
                runner.form if runner else "", runner.error if runner else None, runner.flops if runner else None,
            )
        )
    if is_graph:
        drop_dead_attributes(gm)
        gm.graph.lint()
        gm.recompile()
    report = HardenReport("xdfx.harden", records, tol=tol)
    if inputs is not None:
        with torch.no_grad():
            y, z = model(*inputs), gm(*inputs)
        report.end_to_end_error = float((y - z).abs().max() / y.abs().max().clamp_min(1e-30))
    gm.xdfx_report = report
    return gm


def _install(gm: nn.Module, name: str, chosen: Candidate, is_graph: bool) -> None:
    """Put the chosen form in place of the XD layer ``name`` (graph node or module inside a leaf)."""
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == name] if is_graph else []
    if chosen.function is not None:
        for node in nodes:
            x, w = node.args[0], node.args[1]
            b = node.args[2] if len(node.args) > 2 else None
            with gm.graph.inserting_before(node):
                new = gm.graph.call_function(chosen.function, (x, w, b), dict(chosen.options))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
        gm.delete_submodule(name)
        return
    gm.set_submodule(name, chosen.module) if "." in name or not is_graph else gm.add_submodule(name, chosen.module)
    for node in nodes:
        if len(node.args) > 1:  # a functional conv's XD: (x, weight[, bias])
            keep_bias = chosen.form == "frozen" and len(node.args) > 2
            node.args = (node.args[0], node.args[2]) if keep_bias else (node.args[0],)
