"""Average pooling as a warm-started XD node: a depthwise conv with a constant kernel.

Where PyTorch's divisor varies with the position (``count_include_pad=False``, ``ceil_mode``,
``divisor_override``) the XD layer carries a fixed per-position output scale, read off PyTorch's
own pooling of a ones tensor, so the border rules are PyTorch's by construction.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import XdfxUnsupportedError
from ..ops import XDConv
from ..ops.xd import _ntuple

# the pooling ops' spatial dimensions (which of them the table matches is xdfx.op_kinds' job)
AVG_POOL_MODULES = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
ADAPTIVE_MODULES = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
AVG_POOL_FUNCTIONS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
ADAPTIVE_FUNCTIONS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3}


def pool_to_xd(
    pool: Callable[[torch.Tensor], torch.Tensor],
    input_shape: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    *,
    arch: str,
    max_kernel_size: int | None,
    dtype: torch.dtype,
    device: torch.device,
) -> XDConv:
    """An XD layer equal to ``pool`` (an average pooling with these windows) on ``input_shape``."""
    d = len(kernel)
    channels, spatial = int(input_shape[1]), [int(s) for s in input_shape[2:]]
    probe = torch.ones(1, 1, *spatial, dtype=torch.float64)
    target = pool(probe)
    out = target.shape[2:]
    pads = []
    for i in range(d):
        right = max(0, (out[i] - 1) * stride[i] + kernel[i] - spatial[i] - padding[i])
        pads.append((padding[i], right))
    geometry = XDConv.plan_geometry(spatial, kernel, stride, (1,) * d, pads, "zeros", max_kernel_size)
    xd = XDConv(channels, channels, geometry, groups=channels, bias=False, arch=arch, dtype=torch.float64)
    with torch.no_grad():
        xd.set_kernel(xd.embed(torch.full((channels, 1, *kernel), 1.0 / math.prod(kernel), dtype=torch.float64)))
        mine = xd(probe.expand(1, channels, *spatial))[:, :1]
    if mine.shape != target.shape or bool((mine == 0).any()):
        raise XdfxUnsupportedError(f"pooling windows {kernel}/{stride}/{padding} on {spatial} are not a convolution")
    scale = (target / mine)[0, 0]
    # an adaptive pool's windows hold for this input size only: a scale (of ones) pins the output size
    if type(pool) in ADAPTIVE_MODULES or not torch.allclose(scale, torch.ones_like(scale), rtol=0, atol=1e-12):
        xd.out_scale = scale
    return xd.to(dtype=dtype, device=device)


def avg_pool_args(kernel_size, stride, padding, d: int) -> tuple[tuple, tuple, tuple]:
    kernel = _ntuple(kernel_size, d)
    stride = kernel if stride is None or stride == [] or stride == () else _ntuple(stride, d)
    return kernel, stride, _ntuple(padding, d)


def adaptive_windows(output_size, spatial: Sequence[int]) -> tuple[tuple, tuple]:
    """Kernel and stride of an adaptive average pool, when its windows are all equal."""
    d = len(spatial)
    outs = _ntuple(output_size, d)
    kernel = []
    for o, n in zip(outs, spatial):
        o = n if o is None else int(o)
        if n % o:
            raise XdfxUnsupportedError(
                f"adaptive average pooling from {n} to {o} uses windows of unequal sizes (not a convolution)"
            )
        kernel.append(n // o)
    return tuple(kernel), tuple(kernel)


def _pool_signature(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):  # noqa: ARG001, E501
    """Argument layout of ``F.avg_pool{1,2,3}d``."""


def _adaptive_signature(input, output_size):  # noqa: ARG001
    """Argument layout of ``F.adaptive_avg_pool{1,2,3}d``."""


def module_pool_windows(module: nn.Module, shape) -> tuple[tuple, tuple, tuple]:
    """Kernel, stride and padding of an average-pooling module on inputs of ``shape``."""
    d = AVG_POOL_MODULES.get(type(module)) or ADAPTIVE_MODULES[type(module)]
    if type(module) in ADAPTIVE_MODULES:
        kernel, stride = adaptive_windows(module.output_size, shape[2:])
        padding = (0,) * d
    else:
        kernel, stride, padding = avg_pool_args(module.kernel_size, module.stride, module.padding, d)
    return kernel, stride, padding


def relax_pools(ctx, kind) -> None:
    """Replace average-pooling modules and calls with XD layers (one per call site)."""
    from ..records import LayerRecord, Origin
    from .shape_info import input_shape, output_shape
    from .relax_conv import describe, probe_error

    gm, cfg = ctx.gm, ctx.config
    for node in list(gm.graph.nodes):
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        is_module = kind.matches_module(module)
        if not (is_module or (node.op == "call_function" and kind.matches_function(node.target))):
            continue
        shape = tuple(input_shape(node))
        name = node.target if is_module else node.name
        op = type(module).__name__ if is_module else node.target.__name__
        if not cfg.selects(name, module):
            ctx.record(LayerRecord(name, op, "skipped", shape, detail="excluded by filter", kind=kind.name))
            continue
        try:
            if is_module:
                kernel, stride, padding = module_pool_windows(module, shape)
                pool = module
            else:
                pool = _pool_module(node.target, node)
                kernel, stride, padding = module_pool_windows(pool, shape)
            meta = node.meta["tensor_meta"]
            xd = pool_to_xd(pool, shape, kernel, stride, padding, arch=cfg.arch, max_kernel_size=cfg.max_kernel_size,
                            dtype=meta.dtype, device=ctx.device)
        except XdfxUnsupportedError as err:
            ctx.record(LayerRecord(name, op, "skipped", shape, detail=str(err), kind=kind.name))
            continue
        target = name if is_module and not ctx.used_names.get(name) else ctx.free_name(f"xd_{name.replace('.', '_')}")
        ctx.used_names[name] = True
        xd.layer_name = target
        error = probe_error(pool, xd, shape, meta.dtype, ctx.device)
        new = ctx.replace_with_module(node, target, xd, (node.args[0],))
        ctx.record(LayerRecord(target, op, "relaxed", shape, tuple(output_shape(new)), describe(xd), error,
                               kind=kind.name, origin=Origin(kind.name, module=copy.deepcopy(pool))))


def _pool_module(fn, node) -> nn.Module:
    """The ``nn`` module equivalent to a functional average-pool call."""
    if fn in AVG_POOL_FUNCTIONS:
        a = inspect.signature(_pool_signature).bind(*node.args, **node.kwargs)
        a.apply_defaults()
        a = dict(a.arguments)
        a.pop("input")
        d = AVG_POOL_FUNCTIONS[fn]
        if d == 1:
            a.pop("divisor_override")
        return [nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d][d - 1](**a)
    a = inspect.signature(_adaptive_signature).bind(*node.args, **node.kwargs).arguments
    return [nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d][ADAPTIVE_FUNCTIONS[fn] - 1](a["output_size"])
