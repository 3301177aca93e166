"""Rewrite every ``nn.Conv{1,2,3}d`` call and ``F.conv{1,2,3}d`` call into a warm-started XD node."""

from __future__ import annotations

import inspect
from collections import defaultdict

import torch
from torch import fx, nn

from ..common import relative_error
from ..errors import XdfxShapeError, XdfxUnsupportedError
from ..ops import XDConv
from ..ops.xd import _ntuple, conv_pads
from ..records import LayerRecord, Origin
from .context import RelaxContext
from .shape_info import input_shape, output_shape


def _conv_signature(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: ARG001
    """Argument layout of ``F.conv{1,2,3}d``."""


_SIGNATURE = inspect.signature(_conv_signature)


def probe_error(reference, candidate, shape, dtype, device) -> float:
    """Relative max error of ``candidate`` against ``reference`` on one random input."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn((1, *shape[1:]), generator=gen, dtype=dtype).to(device)
    with torch.no_grad():
        return relative_error(candidate(x), reference(x))


def conv_module_to_xd(ctx: RelaxContext, name: str, conv: nn.Module, shapes: list[torch.Size]) -> XDConv:
    """An XD layer for ``conv``, built to serve every input shape in ``shapes`` exactly."""
    spatial = [max(s[2 + i] for s in shapes) for i in range(len(conv.kernel_size))]
    xd = XDConv.from_conv(conv, spatial, max_kernel_size=ctx.config.max_kernel_size, arch=ctx.config.arch)
    xd.layer_name = name
    for s in shapes:  # a shared conv seen at several sizes: each must be computed exactly
        for i, geo in enumerate(xd.geometry):
            try:
                geo.check(s[2 + i], name, i)
            except XdfxShapeError as err:
                raise XdfxUnsupportedError(
                    f"conv {name!r} is called on inputs of different sizes {[tuple(x) for x in shapes]} "
                    f"that one XD layer cannot serve exactly: {err}. Exclude it from relax "
                    f"(exclude=[{name!r}]) or use one module per call site."
                ) from err
    return xd


def relax_conv_modules(ctx: RelaxContext, kind) -> None:
    """Replace each conv module (by its qualified name, so state_dict keys stay) with an XD layer."""
    gm = ctx.gm
    calls: dict[str, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_module" and kind.matches_module(gm.get_submodule(node.target)):
            calls[node.target].append(node)
    for target, nodes in calls.items():
        conv = gm.get_submodule(target)
        op = type(conv).__name__
        if not ctx.config.selects(target, conv):
            for n in nodes:
                ctx.record(LayerRecord(target, op, "skipped", tuple(input_shape(n)), detail="excluded by filter", kind=kind.name))
            continue
        shapes = [input_shape(n) for n in nodes]
        xd = conv_module_to_xd(ctx, target, conv, shapes)
        error = probe_error(conv, xd, shapes[0], conv.weight.dtype, conv.weight.device)
        gm.add_submodule(target, xd)
        for n in nodes:
            ctx.record(LayerRecord(target, op, "relaxed", tuple(input_shape(n)), _tuple(output_shape(n)), describe(xd),
                                   error, kind=kind.name, origin=Origin(kind.name)))


def relax_conv_functions(ctx: RelaxContext, kind) -> None:
    """Replace each ``F.conv*d(x, weight, bias, ...)`` call with an XD layer fed by the same weight."""
    gm = ctx.gm
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not kind.matches_function(node.target):
            continue
        bound = _SIGNATURE.bind(*node.args, **node.kwargs)
        bound.apply_defaults()
        a = bound.arguments
        meta = a["weight"].meta["tensor_meta"]
        d = len(meta.shape) - 2
        op = f"conv{d}d (function)"
        x_shape = tuple(input_shape(node))
        if not ctx.config.selects(node.name, None):
            ctx.record(LayerRecord(node.name, op, "skipped", x_shape, detail="excluded by filter", kind=kind.name))
            continue
        dynamic = [k for k in ("stride", "padding", "dilation", "groups") if _has_node(a[k])]
        if dynamic:
            ctx.record(LayerRecord(node.name, op, "skipped", x_shape, detail=f"{', '.join(dynamic)} computed at run time",
                                   kind=kind.name))
            continue
        kernel = tuple(meta.shape[2:])
        dilation = _ntuple(a["dilation"], d)
        pads = conv_pads(a["padding"], kernel, dilation)
        geometry = XDConv.plan_geometry(x_shape[2:], kernel, _ntuple(a["stride"], d), dilation, pads, "zeros", ctx.config.max_kernel_size)
        xd = XDConv(
            meta.shape[1] * a["groups"], meta.shape[0], geometry, groups=a["groups"], arch=ctx.config.arch,
            external_weight=True, dtype=meta.dtype, device=ctx.device,
        )
        name = ctx.free_name(f"xd_{node.name}")
        xd.layer_name = name
        options = {k: a[k] for k in ("stride", "padding", "dilation", "groups")}
        args = (a["input"], a["weight"]) + ((a["bias"],) if a["bias"] is not None else ())
        new = ctx.replace_with_module(node, name, xd, args)
        ctx.record(LayerRecord(name, op, "relaxed", x_shape, _tuple(output_shape(new)), describe(xd), kind=kind.name,
                               origin=Origin(kind.name, function=node.target, options=options)))


def describe(xd: XDConv) -> str:
    ns = "x".join(str(g.n) for g in xd.geometry)
    ws = "x".join(str(g.kernel_buffer) for g in xd.geometry)
    return f"n={ns} w={ws} {xd.arch} {xd.geometry[0].mode}"


def _has_node(v) -> bool:
    if isinstance(v, fx.Node):
        return True
    return isinstance(v, (tuple, list)) and any(isinstance(e, fx.Node) for e in v)


def _tuple(shape) -> tuple[int, ...] | None:
    return None if shape is None else tuple(shape)
