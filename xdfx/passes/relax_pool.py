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

AVG_POOL_MODULES = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
ADAPTIVE_MODULES = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
AVG_POOL_FUNCTIONS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
ADAPTIVE_FUNCTIONS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3}
MAX_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
)


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
    if not torch.allclose(scale, torch.ones_like(scale), rtol=0, atol=1e-12):
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


def _module_pool(module: nn.Module, shape) -> XDConv:
    d = AVG_POOL_MODULES.get(type(module)) or ADAPTIVE_MODULES[type(module)]
    if type(module) in ADAPTIVE_MODULES:
        kernel, stride = adaptive_windows(module.output_size, shape[2:])
        padding = (0,) * d
    else:
        kernel, stride, padding = avg_pool_args(module.kernel_size, module.stride, module.padding, d)
    return kernel, stride, padding


def relax_pools(ctx) -> None:
    """Replace average-pooling modules and calls with XD layers (one per call site)."""
    from ..records import LayerRecord
    from .shape_info import input_shape, output_shape
    from .relax_conv import describe, probe_error

    gm, cfg = ctx.gm, ctx.config
    for node in list(gm.graph.nodes):
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        is_module = module is not None and type(module) in {**AVG_POOL_MODULES, **ADAPTIVE_MODULES}
        is_function = node.op == "call_function" and node.target in {**AVG_POOL_FUNCTIONS, **ADAPTIVE_FUNCTIONS}
        if not (is_module or is_function):
            continue
        shape = tuple(input_shape(node))
        name = node.target if is_module else node.name
        op = type(module).__name__ if is_module else node.target.__name__
        if not cfg.selects(name, module):
            ctx.records.append(LayerRecord(name, op, "skipped", shape, detail="excluded by filter"))
            continue
        try:
            if is_module:
                kernel, stride, padding = _module_pool(module, shape)
                pool = module
            elif node.target in AVG_POOL_FUNCTIONS:
                d = AVG_POOL_FUNCTIONS[node.target]
                a = inspect.signature(_pool_signature).bind(*node.args, **node.kwargs)
                a.apply_defaults()
                a = dict(a.arguments)
                a.pop("input")
                if node.target is F.avg_pool1d:
                    a.pop("divisor_override")
                kernel, stride, padding = avg_pool_args(a["kernel_size"], a["stride"], a["padding"], d)
                pool = lambda t, f=node.target, a=a: f(t, **a)  # noqa: E731
            else:
                d = ADAPTIVE_FUNCTIONS[node.target]
                a = inspect.signature(_adaptive_signature).bind(*node.args, **node.kwargs).arguments
                kernel, stride = adaptive_windows(a["output_size"], shape[2:])
                padding = (0,) * d
                pool = lambda t, f=node.target, o=a["output_size"]: f(t, o)  # noqa: E731
            meta = node.meta["tensor_meta"]
            xd = pool_to_xd(pool, shape, kernel, stride, padding, arch=cfg.arch, max_kernel_size=cfg.max_kernel_size, dtype=meta.dtype, device=ctx.device)
        except XdfxUnsupportedError as err:
            ctx.records.append(LayerRecord(name, op, "skipped", shape, detail=str(err)))
            continue
        xd.origin = {"kind": "pool", "module": copy.deepcopy(module) if is_module else _pool_module(node.target, node, shape)}
        target = name if is_module and not ctx.used_names.get(name) else ctx.free_name(f"xd_{name.replace('.', '_')}")
        ctx.used_names[name] = True
        xd.layer_name = target
        error = probe_error(pool, xd, shape, meta.dtype, ctx.device)
        new = ctx.replace_with_module(node, target, xd, (node.args[0],))
        ctx.records.append(LayerRecord(target, op, "relaxed", shape, tuple(output_shape(new)), describe(xd), error))


def record_max_pools(ctx) -> None:
    """Max pooling is not linear: it stays, and the report says so."""
    from ..records import LayerRecord
    from .shape_info import input_shape

    for node in ctx.gm.graph.nodes:
        module = ctx.gm.get_submodule(node.target) if node.op == "call_module" else None
        if (module is not None and isinstance(module, MAX_POOLS[:6])) or (node.op == "call_function" and node.target in MAX_POOLS[6:]):
            name = node.target if module is not None else node.name
            op = type(module).__name__ if module is not None else node.target.__name__
            ctx.records.append(LayerRecord(name, op, "skipped", tuple(input_shape(node)), detail="max pooling is not linear: kept"))


def _pool_module(fn, node, shape) -> nn.Module:
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
