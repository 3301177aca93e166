"""Convolutions that are not plain ``nn.Conv*d``: subclasses, parametrized and lazy convs, convs
with hooks, and the root's hooks. Every conv module of the model ends up relaxed or reported.

- A subclass that keeps ``nn.Conv*d``'s own ``forward`` (``weight_norm``-style parametrizations
  included) is relaxed like the conv it computes: the weight's value at relax time becomes the
  XD kernel (the parametrization is folded in, and the report says so).
- A subclass with its own ``forward`` is traced through, and the ``F.conv*d`` call it makes is
  relaxed by the functional row, its weight computed at run time as before (the report names the
  module); one that torch.fx cannot trace is kept whole and reported with the reason.
- Hooks are kept: they move from a relaxed conv onto the XD layer that replaces it (they then
  receive the XD layer as ``module``), and the root's hooks are copied onto the returned graph.
  Old-style ``weight_norm``/``spectral_norm`` hooks are folded like parametrizations.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from ..common import XD_TYPES
from ..records import LayerRecord, attach
from .context import RelaxContext
from .shape_info import input_shape

_BASES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# every dict of hooks that nn.Module.__call__ runs
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called", "_backward_pre_hooks", "_backward_hooks")
_REPARAM_HOOKS = (WeightNorm, SpectralNorm)  # pre-hooks that recompute the weight: folded like parametrizations


def is_conv_module(m: nn.Module) -> bool:
    """A (non-transposed) convolution module: ``nn.Conv*d`` or any subclass of ``_ConvNd``."""
    return isinstance(m, nn.modules.conv._ConvNd) and not getattr(m, "transposed", False)


def is_lazy(m: nn.Module) -> bool:
    return isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()


def _base(m: nn.Module) -> type | None:
    return next((b for b in _BASES if isinstance(m, b)), None)


def is_plain_conv_subclass(m: nn.Module) -> bool:
    """A strict subclass of ``nn.Conv{1,2,3}d`` that runs its base's ``forward`` (and
    ``_conv_forward``) on materialised weights, so it computes what its base computes."""
    base, cls = _base(m), type(m)
    if base is None or cls is base or is_lazy(m):
        return False
    return cls.forward is base.forward and cls._conv_forward is base._conv_forward and cls.__call__ is nn.Module.__call__


def _base_name(m: nn.Module) -> str:
    base = _base(m)
    return f"nn.{base.__name__}" if base is not None else "nn.Conv"


def folded(m: nn.Module, pre_hooks=None) -> str:
    """What relaxing ``m`` folded into the XD kernel, for the report ("" for a plain conv).
    ``pre_hooks``: its forward pre-hooks, if they are stashed."""
    notes = []
    if parametrize.is_parametrized(m):
        for tensor, plist in m.parametrizations.items():
            names = ", ".join(type(p).__name__ for p in plist)
            notes.append(f"parametrization {names} of {tensor} folded into the XD kernel (its value at relax time; "
                         "the XD layer trains the kernel directly)")
    for hook in (m._forward_pre_hooks if pre_hooks is None else pre_hooks).values():
        if isinstance(hook, _REPARAM_HOOKS):
            notes.append(f"{type(hook).__name__} hook of {hook.name} folded into the XD kernel (its value at relax time)")
    if not notes and type(m) is not _base(m):
        notes.append(f"{type(m).__name__} runs {_base_name(m)}'s forward: relaxed as {_base_name(m)}")
    return "; ".join(notes)


# ------------------------------------------------------------------------------------------ hooks
@dataclass
class _Stashed:
    module: nn.Module
    hooks: dict[str, OrderedDict]
    full_backward: bool | None


@dataclass
class HookStash:
    """The modules' hooks, taken off while relax runs (so the shape run and the probes neither
    trigger them nor depend on them) and put back after: on the modules kept, and on the XD
    layers that replace relaxed convs. Lazy modules not yet materialised keep theirs."""

    root: nn.Module
    stashed: dict[str, _Stashed] = field(default_factory=dict)

    def __enter__(self) -> "HookStash":
        for name, m in self.root.named_modules():
            if not name or is_lazy(m) or not any(getattr(m, d, None) for d in _HOOK_DICTS):
                continue
            hooks, full_backward = take_hooks(m)
            self.stashed[name] = _Stashed(m, hooks, full_backward)
            with torch.no_grad():  # the weight as the reparametrization hook would compute it now
                for hook in hooks.get("_forward_pre_hooks", {}).values():
                    if isinstance(hook, WeightNorm):
                        setattr(m, hook.name, hook.compute_weight(m))
                    elif isinstance(hook, SpectralNorm):
                        setattr(m, hook.name, hook.compute_weight(m, do_power_iteration=False))
        return self

    def __exit__(self, *exc) -> None:
        for s in self.stashed.values():
            _install(s.module, s.hooks, s.full_backward)

    def move_to_xd_layers(self, ctx: RelaxContext) -> None:
        """Give every XD layer that replaced a hooked conv that conv's hooks (reparametrization
        hooks excepted: they are folded) and say so in its report row."""
        for name, s in self.stashed.items():
            try:
                now = ctx.gm.get_submodule(name)
            except AttributeError:
                continue
            if now is s.module or not isinstance(now, XD_TYPES):
                continue
            hooks = {d: OrderedDict((k, h) for k, h in hs.items() if not isinstance(h, _REPARAM_HOOKS)) for d, hs in s.hooks.items()}
            _install(now, hooks, s.full_backward)
            labels = {"_forward_pre_hooks": "forward pre", "_forward_hooks": "forward", "_backward_pre_hooks": "backward pre",
                      "_backward_hooks": "backward"}
            moved = ", ".join(f"{len(hooks[d])} {label}" for d, label in labels.items() if hooks.get(d))
            if moved:
                for r in ctx.records:
                    if r.name == name and r.status == "relaxed":
                        _add(r, f"hooks moved onto the XD layer, which they receive as module ({moved})")

    def pre_hooks(self, name: str):
        """The module's forward pre-hooks, stashed or not (None: it had none when stashed)."""
        s = self.stashed.get(name)
        return None if s is None else s.hooks.get("_forward_pre_hooks")


def _install(m: nn.Module, hooks: dict[str, OrderedDict], full_backward: bool | None) -> None:
    for d, hs in hooks.items():
        getattr(m, d).update(hs)
    if full_backward is not None:
        m._is_full_backward_hook = full_backward


def deepcopy_memo(model: nn.Module) -> dict[int, torch.Tensor]:
    """``copy.deepcopy`` memo entries for the weights that old-style ``weight_norm`` /
    ``spectral_norm`` hooks computed (non-leaf tensors, which deepcopy refuses): detached copies;
    and clones of compressed sparse buffers, which deepcopy cannot copy either."""
    memo = {}
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            t = getattr(m, hook.name, None) if isinstance(hook, _REPARAM_HOOKS) else None
            if isinstance(t, torch.Tensor) and not t.is_leaf:
                memo[id(t)] = t.detach().clone()
        for t in m._buffers.values():  # CSR/CSC adjacency buffers: deepcopy cannot copy their storage
            if isinstance(t, torch.Tensor) and t.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr):
                memo[id(t)] = t.clone()
    return memo


def copy_root_hooks(root: nn.Module, gm: fx.GraphModule) -> None:
    """fx's GraphModule does not carry the root's hooks: the returned module gets them (they
    receive the GraphModule as ``module``), and keeps them through ``copy.deepcopy``."""
    _install(gm, {d: OrderedDict(getattr(root, d)) for d in _HOOK_DICTS if hasattr(root, d)},
             getattr(root, "_is_full_backward_hook", None))
    for d in _HOOK_DICTS:
        if getattr(gm, d, None):  # GraphModule.__deepcopy__ drops forward hooks, keeps these attributes
            attach(gm, d, getattr(gm, d))


def take_hooks(m: nn.Module) -> tuple[dict[str, OrderedDict], bool | None]:
    """Remove ``m``'s hooks and return them, for :func:`put_hooks`."""
    hooks = {d: OrderedDict(getattr(m, d)) for d in _HOOK_DICTS if hasattr(m, d)}
    for d in hooks:
        getattr(m, d).clear()
    return hooks, getattr(m, "_is_full_backward_hook", None)


def put_hooks(m: nn.Module, taken: tuple[dict[str, OrderedDict], bool | None]) -> None:
    _install(m, *taken)


# ------------------------------------------------------------------------------------- accounting
def conv_modules(root: nn.Module) -> dict[str, nn.Module]:
    """The model's conv modules by name (taken before the passes replace any)."""
    return {name: m for name, m in root.named_modules() if name and is_conv_module(m)}


def note_variants(ctx: RelaxContext, convs: dict[str, nn.Module], stash: HookStash) -> None:
    """Report rows of relaxed conv variants say what was folded; functional conv calls made by a
    conv module's traced-through forward name that module."""
    nodes = {n.target if n.op == "call_module" else n.name: n for n in ctx.gm.graph.nodes}
    for r in ctx.records:
        m = convs.get(r.name)
        if r.status == "relaxed" and m is not None:
            _add(r, folded(m, stash.pre_hooks(r.name)))
        if r.kind == "conv_function" and r.name in nodes:
            owner = _owner_conv(nodes[r.name], convs)
            if owner:
                r.module = owner
                _add(r, f"called by {owner}'s forward ({type(convs[owner]).__name__})")


def _add(r: LayerRecord, note: str) -> None:
    if note and note not in r.detail:
        r.detail = f"{r.detail}; {note}" if r.detail else note


def _owner_conv(node: fx.Node, convs: dict[str, nn.Module]) -> str:
    """The innermost conv module whose traced-through forward created ``node`` ("" if none)."""
    stack = node.meta.get("nn_module_stack") or {}
    return next((path for path in reversed(list(stack)) if path in convs), "")


def account_for_convs(ctx: RelaxContext, convs: dict[str, nn.Module]) -> None:
    """A report row, with the reason, for every conv module of the model that no row mentions."""
    covered = {r.name for r in ctx.records if r.kind != "leaf"} | {r.module for r in ctx.records if r.module}
    calls = {n.target: n for n in ctx.gm.graph.nodes if n.op == "call_module"}
    traced = {p for n in ctx.gm.graph.nodes for p in (n.meta.get("nn_module_stack") or {})}
    for name, m in convs.items():
        if name in covered:
            continue
        node = calls.get(name)
        ctx.record(LayerRecord(name, type(m).__name__, "skipped", _shape(node), detail=_why_kept(ctx, name, m, node, traced),
                               kind="conv" if type(m) in _BASES else "conv_subclass"))


def _shape(node) -> tuple[int, ...] | None:
    try:
        return tuple(input_shape(node))
    except (AttributeError, KeyError, IndexError):
        return None


def _why_kept(ctx: RelaxContext, name: str, m: nn.Module, node, traced: set[str]) -> str:
    kind = type(m).__name__
    if is_lazy(m):
        return (f"{kind} has not run yet: its weights do not exist until its first call (then drawn at random, "
                "unlike the original's): kept as it was; call the model once before relax")
    own = f"{kind} has its own forward" if type(m).forward is not getattr(_base(m), "forward", None) else kind
    if name in ctx.leaves:
        return f"{own}, kept whole ({ctx.leaves[name]}): kept as it was, not relaxed"
    if node is not None:
        return f"{own}, kept whole by torch.fx (a torch.nn module): kept as it was, not relaxed"
    leaf = next((leaf for leaf in ctx.leaves if name.startswith(leaf + ".")), None)
    if leaf is not None:
        return f"{own}, inside leaf {leaf!r}: kept as it was, not relaxed"
    if name in traced:
        return f"{own}; its traced-through forward makes no conv call that relax rewrites: kept as it was"
    return "not called by forward on the example inputs: left as it was"
