"""``xdfx.relax``: turn a CNN into a search space of warm-started XD operations."""

from __future__ import annotations

import copy
import inspect
import numbers
import re
from typing import Any, Sequence

import torch
from torch import fx, nn

from .common import FiniteCheck, as_inputs, attribute, xd_layers
from .errors import XdfxInputError, XdfxShapeError
from .op_kinds import OP_KINDS, module_kind
from .passes.context import RelaxConfig, RelaxContext, Selector
from .passes.relax_conv_variants import (
    HookStash, account_for_convs, conv_modules, copy_root_hooks, deepcopy_memo, note_variants)
from .passes.relax_leaves import leaf_watch_list, record_kept, relax_inside_leaves
from .passes.shape_info import propagate_shapes
from .budget import Budget, plan as plan_budget
from .passes.relax_conv import conv_sites
from .records import RelaxReport, attach
from .ops.xd import XDConv
from .trace import TraceOptions, trace


def relax(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[Any],
    *,
    arch: str = "fixed",
    max_kernel_size: int | None = None,
    budget: Budget | None = Budget(),
    include: Sequence[Selector] = (),
    exclude: Sequence[Selector] = (),
    leaf_modules: Sequence[str] = (),
    leaf_classes: Sequence[type] = (),
    concrete_args: dict[str, Any] | None = None,
    inplace: bool = False,
    check_finite: bool = False,
) -> fx.GraphModule:
    """Rewrite every convolution, average pooling and fixed-graph convolution of ``model`` into an
    XD-operation that computes the same thing.

    Parameters
    ----------
    model : nn.Module
        The network. It is copied first and never modified unless ``inplace=True``.
    example_inputs : Tensor or tuple
        Arguments of ``model.forward``; their spatial sizes fix each layer's transform length.
    arch : {"monarch", "fixed"}
        Learnable structured K, L, M (the search space) or plain FFTs.
    max_kernel_size : int, optional
        Cap on the kernel taps per axis of every layer (overrides ``budget``); by default ``w``
        spans the whole transform wherever the budget allows.
    budget : Budget or None
        How many numbers the relaxed model may store (:class:`xdfx.Budget`: by default
        ``max(4 x the original's, 2**25)``); where full growth does not fit, pointwise convs are
        kept and kernels capped (the report says per layer). None: full growth everywhere.
    include, exclude : sequence of glob, module class or predicate ``(name, module) -> bool``
        Which layers to relax (default: all).
    leaf_modules, leaf_classes, concrete_args
        Tracing options: modules to keep whole, and fixed values of non-tensor arguments.
        Modules that torch.fx cannot trace are found and kept whole automatically.
    inplace : bool
        Skip the copy: ``model``'s own layer modules are replaced by the XD layers, which the
        returned graph shares.
    check_finite : bool
        Every XD layer checks its input and raises an ``XdfxInputError`` naming itself on NaN or
        inf (one NaN reaches every output of its sample through the FFTs, where a conv spreads it
        over a kernel's footprint). Costs one reduction per layer and call; skipped when compiling.

    Returns
    -------
    fx.GraphModule
        The relaxed model; ``.xdfx_report`` lists every rewritten and skipped layer.
    """
    if not isinstance(model, nn.Module):
        raise XdfxInputError(f"relax expects an nn.Module, got {type(model).__name__}")
    inputs = as_inputs(example_inputs)
    _check_not_meta(model, inputs)
    already = list(xd_layers(model))
    if already:
        raise XdfxInputError(f"the model is already relaxed (XD layers at {already[:3]}); relax the original model")
    if arch not in ("monarch", "fixed"):
        raise XdfxInputError(f"arch must be 'monarch' (learnable K, L, M) or 'fixed' (plain FFTs), got {arch!r}")
    if max_kernel_size is not None and (not isinstance(max_kernel_size, numbers.Integral) or max_kernel_size < 1):
        raise XdfxInputError(f"max_kernel_size caps the kernel taps per axis: an int >= 1 or None, got {max_kernel_size!r}")
    if budget is not None and not isinstance(budget, Budget):
        raise XdfxInputError(f"budget must be an xdfx.Budget or None, got {type(budget).__name__}")
    config = RelaxConfig(arch=arch, max_kernel_size=max_kernel_size, include=tuple(include), exclude=tuple(exclude),
                         budget=budget)
    root = model if inplace else copy.deepcopy(model, deepcopy_memo(model))  # memo: weight_norm's computed weights
    if concrete_args is None:
        concrete_args = _non_tensor_arguments(model, inputs)
    whole = lambda m: module_kind(m) is not None  # noqa: E731  (modules a row rewrites stay call_module nodes)
    traced = trace(root, TraceOptions(tuple(leaf_modules), tuple(leaf_classes), concrete_args, whole))
    gm = traced.graph_module
    convs = conv_modules(root)
    with HookStash(root) as stash:  # hooks off while shapes and probes run; back on (or on the XD layers) after
        leaf_shapes = propagate_shapes(gm, inputs, leaf_watch_list(gm, traced.leaves, OP_KINDS))
        _check_batched(gm)
        ctx = RelaxContext(gm, config, traced.leaves, leaf_shapes, inputs=inputs)
        if max_kernel_size is None:
            sites, other = conv_sites(ctx, OP_KINDS)
            ctx.plan = plan_budget([s for s in sites if config.selects(s.name, s.module)], other, budget)
        for kind in OP_KINDS:  # the rows of xdfx.op_kinds, in order
            if kind.relax is not None:
                kind.relax(ctx, kind)
        relax_inside_leaves(ctx, OP_KINDS)
        record_kept(ctx, OP_KINDS)
        if ctx.plan is not None and ctx.plan.recompute:
            for layer in xd_layers(gm).values():
                if isinstance(layer, XDConv):
                    layer.recompute = True
        stash.move_to_xd_layers(ctx)
        note_variants(ctx, convs, stash)
    account_for_convs(ctx, convs)
    if check_finite:  # after the user's hooks, so the check sees what the layer is fed
        for name, layer in xd_layers(gm).items():
            layer.register_forward_pre_hook(FiniteCheck(name))
    copy_root_hooks(root, gm)
    drop_dead_attributes(gm)
    for node in gm.graph.nodes:  # string annotations (``from __future__ import annotations``) break fx's pickling
        if isinstance(node.type, str):
            node.type = None
    gm.graph.lint()
    gm.recompile()
    if inplace:
        for name, module in xd_layers(gm).items():
            if _has_submodule(model, name):
                model.set_submodule(name, module)
    gm.training = model.training
    attach(gm, "xdfx_report", RelaxReport("xdfx.relax", ctx.records, budget=ctx.plan.summary() if ctx.plan else ""))
    return gm


def _check_not_meta(model: nn.Module, inputs: tuple) -> None:
    """Refuse meta tensors: relax runs the model to check every rewrite, and they hold no values."""
    meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        raise XdfxInputError(
            f"the model's {meta[0]!r}{f' (and {len(meta) - 1} more)' if len(meta) > 1 else ''} is on the meta device "
            "and holds no values; materialise the model first: model.to_empty(device='cpu'), then "
            "model.load_state_dict(...)"
        )
    if any(isinstance(t, torch.Tensor) and t.is_meta for t in inputs):
        raise XdfxInputError("example_inputs are on the meta device and hold no values; pass real tensors on the "
                             "model's device")


def _check_batched(gm: fx.GraphModule) -> None:
    """Refuse an unbatched input to a conv or pool node: the XD layers are built for (batch, C, *spatial)."""
    for node in gm.graph.nodes:
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        fn = node.target if node.op == "call_function" else None
        if not any(k.relax is not None and (k.matches_module(module) or k.matches_function(fn)) for k in OP_KINDS):
            continue
        if isinstance(module, nn.modules.conv._ConvNd):  # subclasses keep the kernel, not the name
            d = len(module.kernel_size)
        else:
            found = re.search(r"([123])d$", type(module).__name__ if module is not None else getattr(fn, "__name__", ""))
            d = int(found.group(1)) if found else None
        arg = node.args[0] if node.args else None
        meta = arg.meta.get("tensor_meta") if isinstance(arg, fx.Node) else None
        if d and meta is not None and hasattr(meta, "shape") and len(meta.shape) == d + 1:
            what = f"layer {node.target!r} ({type(module).__name__})" if module is not None else f"{fn.__name__} ({node.name})"
            raise XdfxShapeError(
                f"{what} gets an unbatched input of shape {tuple(meta.shape)}; xdfx relaxes batched layers only: "
                "pass example_inputs with a batch axis (x.unsqueeze(0)) and run the relaxed model on batches"
            )


def _non_tensor_arguments(model: nn.Module, inputs: tuple) -> dict[str, Any] | None:
    """Values of ``forward``'s non-tensor arguments in the example call (given or defaulted):
    they are fixed while tracing, as a user calling the model that way expects."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    fixed = {}
    for i, p in enumerate(params):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            break
        if i < len(inputs):
            if not isinstance(inputs[i], torch.Tensor):
                fixed[p.name] = inputs[i]
        elif p.default is not p.empty and not isinstance(p.default, torch.Tensor):
            fixed[p.name] = p.default
    return fixed or None


def drop_dead_attributes(gm: fx.GraphModule) -> None:
    """Remove ``get_attr`` nodes left without users (fused weights), and their tensors."""
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
            still_used = any(n.op == "get_attr" and n.target == node.target for n in gm.graph.nodes)
            owner, _, name = node.target.rpartition(".")
            if not still_used and isinstance(attribute(gm, node.target), nn.Parameter):
                delattr(gm.get_submodule(owner) if owner else gm, name)


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True
