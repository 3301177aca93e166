"""Rewrite every ``nn.Conv{1,2,3}d`` call and ``F.conv{1,2,3}d`` call into a warm-started XD node."""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import XdfxShapeError, XdfxUnsupportedError
from ..ops import XDConv
from ..ops.xd import conv_pads
from ..report import LayerRecord
from .shape_info import input_shape, output_shape

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_FUNCTIONS = {
    F.conv1d: 1, F.conv2d: 2, F.conv3d: 3,
    torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3,
}


@dataclass(frozen=True)
class RelaxConfig:
    """Options of :func:`xdfx.relax`.

    arch: ``"monarch"`` (learnable structured K, L, M) or ``"fixed"`` (plain FFTs).
    max_kernel_size: cap on the taps per axis of the kernel ``w`` (None: the transform length,
        so ``w`` can grow into a global filter).
    """

    arch: str = "monarch"
    max_kernel_size: int | None = None


def _conv_signature(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: ARG001
    """Argument layout of ``F.conv{1,2,3}d``."""


_SIGNATURE = inspect.signature(_conv_signature)


def _probe_error(reference, candidate, shape, dtype, device) -> float:
    """Relative max error of ``candidate`` against ``reference`` on one random input."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn((1, *shape[1:]), generator=gen, dtype=dtype).to(device)
    with torch.no_grad():
        y, z = reference(x), candidate(x)
    return float((y - z).abs().max() / y.abs().max().clamp_min(torch.finfo(dtype).tiny))


def relax_conv_modules(gm: fx.GraphModule, config: RelaxConfig) -> list[LayerRecord]:
    """Replace each conv module (by its qualified name, so state_dict keys stay) with an XD layer."""
    calls: dict[str, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_module" and type(gm.get_submodule(node.target)) in CONV_MODULES:
            calls[node.target].append(node)
    records = []
    for target, nodes in calls.items():
        conv = gm.get_submodule(target)
        shapes = [input_shape(n) for n in nodes]
        spatial = [max(s[2 + i] for s in shapes) for i in range(len(conv.kernel_size))]
        xd = XDConv.from_conv(conv, spatial, max_kernel_size=config.max_kernel_size, arch=config.arch)
        xd.layer_name = target
        for s in shapes:  # a shared conv seen at several sizes: each must be computed exactly
            for i, geo in enumerate(xd.geometry):
                try:
                    geo.check(s[2 + i], target, i)
                except XdfxShapeError as err:
                    raise XdfxUnsupportedError(
                        f"conv {target!r} is called on inputs of different sizes {[tuple(x) for x in shapes]} "
                        f"that one XD layer cannot serve exactly: {err}"
                    ) from err
        error = _probe_error(conv, xd, shapes[0], conv.weight.dtype, conv.weight.device)
        gm.add_submodule(target, xd)
        for n in nodes:
            records.append(
                LayerRecord(
                    target, type(conv).__name__, "relaxed", tuple(input_shape(n)), _tuple(output_shape(n)),
                    _describe(xd), error,
                )
            )
    return records


def relax_conv_functions(gm: fx.GraphModule, config: RelaxConfig) -> list[LayerRecord]:
    """Replace each ``F.conv*d(x, weight, bias, ...)`` call with an XD layer fed by the same weight."""
    records = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in CONV_FUNCTIONS:
            continue
        d = CONV_FUNCTIONS[node.target]
        op = f"conv{d}d (function)"
        bound = _SIGNATURE.bind(*node.args, **node.kwargs)
        bound.apply_defaults()
        a = bound.arguments
        dynamic = [k for k in ("stride", "padding", "dilation", "groups") if _has_node(a[k])]
        if dynamic:
            records.append(LayerRecord(node.name, op, "skipped", detail=f"{', '.join(dynamic)} computed at run time"))
            continue
        w_shape = a["weight"].meta["tensor_meta"].shape
        x_shape = input_shape(node)
        kernel = tuple(w_shape[2:])
        dilation = _ntuple(a["dilation"], d)
        pads = conv_pads(a["padding"], kernel, dilation)
        geometry = XDConv.plan_geometry(x_shape[2:], kernel, _ntuple(a["stride"], d), dilation, pads, "zeros", config.max_kernel_size)
        meta = a["weight"].meta["tensor_meta"]
        xd = XDConv(
            w_shape[1] * a["groups"], w_shape[0], geometry, groups=a["groups"], arch=config.arch,
            external_weight=True, dtype=meta.dtype, device=_device_of(gm),
        )
        name = _free_name(gm, f"xd_{node.name}")
        xd.layer_name = name
        gm.add_submodule(name, xd)
        args = (a["input"], a["weight"]) + ((a["bias"],) if a["bias"] is not None else ())
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, args)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        records.append(LayerRecord(name, op, "relaxed", tuple(x_shape), _tuple(output_shape(new)), _describe(xd)))
    return records


def _device_of(gm: fx.GraphModule) -> torch.device:
    return next((p.device for p in gm.parameters()), torch.device("cpu"))


def _describe(xd: XDConv) -> str:
    ns = "x".join(str(g.n) for g in xd.geometry)
    ws = "x".join(str(g.kernel_buffer) for g in xd.geometry)
    return f"n={ns} w={ws} {xd.arch} {xd.geometry[0].mode}"


def _has_node(v) -> bool:
    if isinstance(v, fx.Node):
        return True
    return isinstance(v, (tuple, list)) and any(isinstance(e, fx.Node) for e in v)


def _ntuple(v, d: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d


def _tuple(shape) -> tuple[int, ...] | None:
    return None if shape is None else tuple(shape)


def _free_name(gm: fx.GraphModule, base: str) -> str:
    name, i = base, 1
    while hasattr(gm, name):
        name, i = f"{base}_{i}", i + 1
    return name
