"""Convolutions and pools inside leaf modules (kept whole by tracing) are swapped module by module."""

from __future__ import annotations

import copy

from torch import nn

from ..errors import XdfxUnsupportedError
from ..records import LayerRecord
from .context import RelaxContext
from .relax_conv import CONV_MODULES, conv_module_to_xd, describe, probe_error
from .relax_pool import ADAPTIVE_MODULES, AVG_POOL_MODULES, _module_pool, pool_to_xd

TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def leaf_watch_list(gm: nn.Module, leaves: dict[str, str]) -> list[str]:
    """Qualified names of the rewritable modules that live inside leaves."""
    kinds = CONV_MODULES + tuple(AVG_POOL_MODULES) + tuple(ADAPTIVE_MODULES)
    out = []
    for leaf in leaves:
        for sub, m in gm.get_submodule(leaf).named_modules():
            if sub and type(m) in kinds:
                out.append(f"{leaf}.{sub}")
    return out


def relax_inside_leaves(ctx: RelaxContext) -> None:
    gm = ctx.gm
    for leaf, why in ctx.leaves.items():
        ctx.records.append(LayerRecord(leaf, type(gm.get_submodule(leaf)).__name__, "leaf", detail=f"kept whole ({why})"))
    for name in leaf_watch_list(gm, ctx.leaves):
        module = gm.get_submodule(name)
        op = f"{type(module).__name__} (in leaf)"
        shapes = ctx.leaf_shapes.get(name, [])
        if not shapes:
            ctx.records.append(LayerRecord(name, op, "skipped", detail="not called on the example inputs"))
            continue
        if not ctx.config.selects(name, module):
            ctx.records.append(LayerRecord(name, op, "skipped", tuple(shapes[0]), detail="excluded by filter"))
            continue
        try:
            if type(module) in CONV_MODULES:
                xd = conv_module_to_xd(ctx, name, module, shapes)
            else:
                if len({tuple(s) for s in shapes}) > 1:
                    raise XdfxUnsupportedError(f"pool called on several sizes {[tuple(s) for s in shapes]}")
                kernel, stride, padding = _module_pool(module, shapes[0])
                xd = pool_to_xd(module, shapes[0], kernel, stride, padding, arch=ctx.config.arch,
                                max_kernel_size=ctx.config.max_kernel_size, dtype=shapes_dtype(gm), device=ctx.device)
                xd.layer_name = name
                xd.origin = {"kind": "pool", "module": copy.deepcopy(module)}
        except XdfxUnsupportedError as err:
            ctx.records.append(LayerRecord(name, op, "skipped", tuple(shapes[0]), detail=str(err)))
            continue
        error = probe_error(module, xd, shapes[0], shapes_dtype(gm), ctx.device)
        gm.set_submodule(name, xd)
        ctx.records.append(LayerRecord(name, op, "relaxed", tuple(shapes[0]), None, describe(xd), error))


def shapes_dtype(gm: nn.Module):
    import torch

    return next((p.dtype for p in gm.parameters() if p.is_floating_point()), torch.float32)


def record_unsupported(ctx: RelaxContext) -> None:
    """Transposed convolutions stay as they are, and the report says so."""
    from .shape_info import input_shape

    for node in ctx.gm.graph.nodes:
        if node.op == "call_module" and isinstance(ctx.gm.get_submodule(node.target), TRANSPOSED):
            ctx.records.append(
                LayerRecord(node.target, type(ctx.gm.get_submodule(node.target)).__name__, "skipped",
                            tuple(input_shape(node)), detail="transposed convolution: not supported yet, kept")
            )
