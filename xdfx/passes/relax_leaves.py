"""Ops inside leaf modules (kept whole by tracing) are swapped module by module, and ops that stay
as they are get their report row."""

from __future__ import annotations

import copy

from ..budget import KEEP
from ..errors import XdfxUnsupportedError
from ..records import LayerRecord, Origin
from .context import RelaxContext
from .relax_conv import conv_module_to_xd, describe, probe_error
from .relax_pool import module_pool_windows, pool_to_xd
from .shape_info import input_shape

# the op kinds whose modules are also rewritten inside leaves
LEAF_KINDS = ("conv", "conv_subclass", "avg_pool")


def leaf_watch_list(gm, leaves: dict[str, str], kinds) -> list[str]:
    """Qualified names of the rewritable modules that live inside leaves."""
    rows = [k for k in kinds if k.name in LEAF_KINDS]
    return [f"{leaf}.{sub}" for leaf in leaves for sub, m in gm.get_submodule(leaf).named_modules()
            if sub and any(k.matches_module(m) for k in rows)]


def relax_inside_leaves(ctx: RelaxContext, kinds) -> None:
    gm = ctx.gm
    for leaf, why in ctx.leaves.items():
        ctx.record(LayerRecord(leaf, type(gm.get_submodule(leaf)).__name__, "leaf", detail=f"kept whole ({why})", kind="leaf"))
    for name in leaf_watch_list(gm, ctx.leaves, kinds):
        module = gm.get_submodule(name)
        kind = next(k for k in kinds if k.matches_module(module))
        op = f"{type(module).__name__} (in leaf)"
        shapes = ctx.leaf_shapes.get(name, [])
        if not shapes:
            ctx.record(LayerRecord(name, op, "skipped", detail="not called on the example inputs", kind=kind.name))
            continue
        if not ctx.config.selects(name, module):
            ctx.record(LayerRecord(name, op, "skipped", tuple(shapes[0]), detail="excluded by filter", kind=kind.name))
            continue
        if kind.name == "conv" and ctx.cap(name) == KEEP:
            ctx.record(LayerRecord(name, op, "skipped", tuple(shapes[0]), detail=ctx.cap_reason(name), kind=kind.name))
            continue
        try:
            if kind.name in ("conv", "conv_subclass"):
                xd = conv_module_to_xd(ctx, name, module, shapes)
                origin = Origin(kind.name)
            else:
                if len({tuple(s) for s in shapes}) > 1:
                    raise XdfxUnsupportedError(f"pool called on several sizes {[tuple(s) for s in shapes]}")
                kernel, stride, padding = module_pool_windows(module, shapes[0])
                xd = pool_to_xd(module, shapes[0], kernel, stride, padding, arch=ctx.config.arch,
                                max_kernel_size=ctx.config.max_kernel_size, dtype=ctx.dtype, device=ctx.device)
                xd.layer_name = name
                origin = Origin(kind.name, module=copy.deepcopy(module))
        except XdfxUnsupportedError as err:
            ctx.record(LayerRecord(name, op, "skipped", tuple(shapes[0]), detail=str(err), kind=kind.name))
            continue
        error = probe_error(module, xd, shapes[0], ctx.dtype, ctx.device)
        gm.set_submodule(name, xd)
        ctx.record(LayerRecord(name, op, "relaxed", tuple(shapes[0]), None, describe(xd, ctx.cap_reason(name)), error,
                               kind=kind.name, origin=origin))


def record_kept(ctx: RelaxContext, kinds) -> None:
    """A row for every call of an op kind that relax keeps as it is, with the reason."""
    for node in ctx.gm.graph.nodes:
        module = ctx.gm.get_submodule(node.target) if node.op == "call_module" else None
        for kind in kinds:
            if kind.relax is None and (kind.matches_module(module) or (node.op == "call_function" and kind.matches_function(node.target))):
                name = node.target if module is not None else node.name
                op = type(module).__name__ if module is not None else node.target.__name__
                ctx.record(LayerRecord(name, op, "skipped", tuple(input_shape(node)), detail=kind.kept_because, kind=kind.name))
