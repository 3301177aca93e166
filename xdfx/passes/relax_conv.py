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
from ..budget import KEEP
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
    xd = XDConv.from_conv(conv, spatial, max_kernel_size=ctx.cap(name), arch=ctx.config.arch)
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
        if ctx.cap(target) == KEEP:
            for n in nodes:
                ctx.record(LayerRecord(target, op, "skipped", tuple(input_shape(n)), detail=ctx.cap_reason(target), kind=kind.name))
            continue
        xd = conv_module_to_xd(ctx, target, conv, shapes)
        error = probe_error(conv, xd, shapes[0], conv.weight.dtype, conv.weight.device)
        gm.add_submodule(target, xd)
        for n in nodes:
            ctx.record(LayerRecord(target, op, "relaxed", tuple(input_shape(n)), _tuple(output_shape(n)),
                                   describe(xd, _join(ctx.cap_reason(target), dropped_taps(conv, xd))), error,
                                   kind=kind.name, origin=Origin(kind.name)))


def relax_conv_functions(ctx: RelaxContext, kind) -> None:
    """Replace each ``F.conv*d(x, weight, bias, ...)`` call with an XD layer fed by the same weight."""
    gm = ctx.gm
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not kind.matches_function(node.target):
            continue
        a = _conv_arguments(node)
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
        if ctx.cap(node.name) == KEEP:
            ctx.record(LayerRecord(node.name, op, "skipped", x_shape, detail=ctx.cap_reason(node.name), kind=kind.name))
            continue
        geometry = function_geometry(a, x_shape, ctx.cap(node.name))
        xd = XDConv(
            meta.shape[1] * a["groups"], meta.shape[0], geometry, groups=a["groups"], arch=ctx.config.arch,
            external_weight=True, dtype=meta.dtype, device=ctx.device,
        )
        name = ctx.free_name(f"xd_{node.name}")
        xd.layer_name = name
        options = {k: a[k] for k in ("stride", "padding", "dilation", "groups")}
        args = (a["input"], a["weight"]) + ((a["bias"],) if a["bias"] is not None else ())
        new = ctx.replace_with_module(node, name, xd, args)
        ctx.record(LayerRecord(name, op, "relaxed", x_shape, _tuple(output_shape(new)), describe(xd, ctx.cap_reason(node.name)),
                               kind=kind.name, origin=Origin(kind.name, function=node.target, options=options)))


def dropped_taps(conv: nn.Module, xd: XDConv) -> str:
    kept = tuple(g.kernel for g in xd.geometry)
    if kept == tuple(conv.kernel_size):
        return ""
    show = lambda k: "x".join(map(str, k))  # noqa: E731
    return f"kernel {show(conv.kernel_size)} -> {show(kept)}: the other taps only ever read zero padding"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def describe(xd: XDConv, why: str = "") -> str:
    ns = "x".join(str(g.n) for g in xd.geometry)
    ws = "x".join(f"{g.kernel_buffer}" + (f"@{g.buffer_step}" if g.buffer_step > 1 else "") for g in xd.geometry)
    return f"n={ns} w={ws} {xd.arch} {xd.geometry[0].mode}" + (f"; {why}" if why else "")


def _conv_arguments(node: fx.Node) -> dict:
    bound = _SIGNATURE.bind(*node.args, **node.kwargs)
    bound.apply_defaults()
    return bound.arguments


def function_geometry(a: dict, x_shape, cap) -> list:
    """The per-axis geometry of a functional conv call with bound arguments ``a``."""
    meta = a["weight"].meta["tensor_meta"]
    kernel = tuple(meta.shape[2:])
    d = len(kernel)
    dilation = _ntuple(a["dilation"], d)
    pads = conv_pads(a["padding"], kernel, dilation)
    return XDConv.plan_geometry(x_shape[2:], kernel, _ntuple(a["stride"], d), dilation, pads, "zeros", cap)


def module_geometry(conv: nn.Module, spatial, cap) -> list:
    """The per-axis geometry of a conv module on inputs of sizes ``spatial``."""
    return XDConv.conv_geometry(conv, spatial, cap)


def conv_sites(ctx: RelaxContext, kinds) -> tuple[list, int]:
    """Every conv relax may rewrite, as the budget policy sees it, and the numbers the rest of
    the model stores."""
    from ..budget import ConvSite

    gm, learned = ctx.gm, ctx.config.arch == "monarch"
    modules = [k for k in kinds if k.relax is relax_conv_modules]
    functions = [k for k in kinds if k.relax is relax_conv_functions]
    is_conv = lambda m: any(k.matches_module(m) for k in modules)  # noqa: E731
    shapes: dict[str, list] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_module" and is_conv(gm.get_submodule(node.target)):
            shapes[node.target].append(input_shape(node))
    for name, seen in ctx.leaf_shapes.items():
        if is_conv(gm.get_submodule(name)):
            shapes[name] += seen
    sites, covered = [], set()
    for name, seen in shapes.items():
        conv = gm.get_submodule(name)
        spatial = [max(s[2 + i] for s in seen) for i in range(len(conv.kernel_size))]
        try:
            geometry = module_geometry(conv, spatial, None)
        except (XdfxShapeError, ValueError):
            continue
        covered |= {id(t) for t in conv.state_dict(keep_vars=True).values()}
        sites.append(ConvSite(name, conv, conv.in_channels, conv.out_channels, conv.groups, geometry,
                              learned_factors=learned, bias=conv.bias is not None))
    for node in gm.graph.nodes:
        if node.op == "call_function" and any(k.matches_function(node.target) for k in functions):
            a = _conv_arguments(node)
            if any(_has_node(a[k]) for k in ("stride", "padding", "dilation", "groups")):
                continue
            w = a["weight"].meta["tensor_meta"].shape
            try:
                geometry = function_geometry(a, tuple(input_shape(node)), None)
            except (XdfxShapeError, ValueError):
                continue
            sites.append(ConvSite(node.name, None, w[1] * a["groups"], w[0], a["groups"], geometry, external_weight=True,
                                  learned_factors=learned))
    other = sum(t.numel() for t in gm.state_dict(keep_vars=True).values()
                if id(t) not in covered and not isinstance(t, nn.parameter.UninitializedTensorMixin))
    return sites, other


def _has_node(v) -> bool:
    if isinstance(v, fx.Node):
        return True
    return isinstance(v, (tuple, list)) and any(isinstance(e, fx.Node) for e in v)


def _tuple(shape) -> tuple[int, ...] | None:
    return None if shape is None else tuple(shape)
