"""``xdfx.harden``: every XD layer back to the cheapest standard operator that reproduces it.

Per layer the forms of :mod:`xdfx.forms` are built, measured on the activations the layer really
sees (with ``example_inputs``; random probes otherwise) and the cheapest within ``tol`` is
installed in a copy of the model. Where only the slow fallbacks are within ``tol``, the layer is
snapped onto its nearest cheap form instead (``snap``), for :func:`xdfx.finetune` to retrain.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from typing import Any, Sequence

import torch
from torch import fx, nn

from .common import (as_inputs, attribute, capture_inputs, check_finite, eval_mode, graph_nodes_calling, median_ms,
                     relative_error, xd_layers)
from .errors import XdfxError, XdfxInputError, XdfxSlowModelWarning
from .forms import FORM_BY_NAME, SNAP_MODES, candidates, choose, wants_snap
from .forms import cost as price
from .ops import XDConv
from .ops.circular import CircularLayer
from .ops.graph import XDGraphConv
from .passes.harden_context import (Candidate, LayerContext, core_views, original_conv, original_conv_flops,
                                    stored_numbers, xd_flops)
from .passes.relax_conv_variants import deepcopy_memo, put_hooks, take_hooks
from .records import SLOW_MARGIN, HardenRecord, HardenReport, Report, attach
from .relax import drop_dead_attributes


#: The least energy ``snap="auto"`` lowers ``energy`` to before it leaves a layer in a fallback form.
MIN_SNAP_ENERGY = 0.9
#: ``harden(cost=...)`` values.
COST_MODELS = ("estimate", "measure")


def harden(model: nn.Module, tol: float = 1e-4, example_inputs: torch.Tensor | Sequence[Any] | None = None, *,
           snap: str = "auto", energy: float = 0.99, max_cost: float | None = 2.0, cost: str = "estimate",
           fill: bool = False, original: nn.Module | None = None, timing: bool = True) -> fx.GraphModule:
    """Replace every XD layer by the cheapest standard operator within ``tol`` (relative error),
    or by its nearest cheap form where only slow ones are within ``tol`` (``snap``).

    Parameters
    ----------
    model : fx.GraphModule
        A relaxed (and usually searched) model; it is not modified.
    tol : float
        Largest accepted relative max error of each replacement on its probe inputs.
    example_inputs : optional
        Calibration inputs of the whole model: each layer is then measured on the activations it
        really sees, and the report gives the end-to-end error too.
    snap : {"auto", "always", "never"}
        Discretize, then retrain. ``"auto"``: a layer whose best form within ``tol`` is a fallback
        (``fft``, ``frozen``) or that has none is projected onto its cheapest *snapped* form (K and
        M onto the DFT, ``L w`` onto a few taps with a dilation or a few low modes), accepted
        beyond ``tol``; fine-tune the result with :func:`xdfx.finetune`. ``"always"``: snapped
        forms compete on cost with the forms within ``tol`` in every layer. ``"never"``: only
        forms within ``tol`` (the frozen layer as the last resort).
    energy : float
        The fraction of a layer's energy a snapped form keeps: of the kernel for taps, of the
        output on the probe inputs for modes. The report gives what each projection dropped.
        With ``snap="auto"``, a layer where no snapped form keeping ``energy`` is cheaper than
        its fallback keeps ten times less of it lost, then again, down to ``MIN_SNAP_ENERGY``.
    max_cost : float or None
        The speed target: what each layer's form may cost relative to the convolution it was
        relaxed from. With ``snap="auto"``, a layer whose best form within ``tol`` costs more is
        snapped onto a cheap form (lowering ``energy`` as above until one fits). ``None``: snap
        exactly where only a fallback form (every mode, frozen) is within ``tol``.
    cost : {"estimate", "measure"}
        How forms are priced: ``"estimate"``, FLOPs weighted by each form's measured efficiency, plus
        the fixed cost of each extra branch at the probes' batch (:mod:`xdfx.forms`; deterministic:
        calibrate with the batch you serve), or ``"measure"``, each candidate and the original
        convolution timed on the layer's probe inputs (median after warm-up, current threads).
    fill : bool
        Use the target, not only meet it: a snapped modes form keeps as many modes as ``max_cost``
        affords (at least the fewest that keep ``energy``), trading speed within the target for a
        smaller projection loss. Off: the fewest modes that keep ``energy``.
    original : nn.Module, optional
        The model before relax; with ``example_inputs`` its latency is reported beside the relaxed
        and hardened models'.
    timing : bool
        With ``example_inputs``, time the relaxed and hardened models (and ``original``) on them:
        ``report.latency_ms``. A hardened model more than ``SLOW_MARGIN`` times slower than the
        relaxed one raises :class:`~xdfx.errors.XdfxSlowModelWarning`.

    Returns
    -------
    fx.GraphModule
        Standard ops only; ``.xdfx_report`` (a :class:`~xdfx.records.HardenReport`) says per layer
        what was chosen, its error, FLOPs and stored numbers before and after, and the runner-up.

    Raises
    ------
    XdfxInputError
        ``tol`` is not a finite number >= 0, or ``example_inputs`` cannot calibrate: an empty
        batch, inputs the model refuses, or a layer (named) whose activations hold NaN or inf or are
        constant over space (all-zero or constant inputs), which cannot tell its forms apart.
    """
    if not isinstance(tol, numbers.Real) or not 0.0 <= tol < math.inf:  # NaN fails both comparisons
        raise XdfxInputError(f"tol is the relative error accepted per layer, a finite number >= 0 (e.g. 1e-4); got {tol}")
    if snap not in SNAP_MODES:
        raise XdfxInputError(f"snap must be one of {SNAP_MODES}, got {snap!r}")
    if max_cost is not None and not (isinstance(max_cost, numbers.Real) and 0.0 < max_cost < math.inf):
        raise XdfxInputError(f"max_cost is what a layer's form may cost relative to its original conv, a finite "
                             f"number > 0 (e.g. 2.0) or None; got {max_cost}")
    if fill and max_cost is None:
        raise XdfxInputError("fill=True keeps as many modes as max_cost affords: pass a max_cost (e.g. 1.2), or "
                             "fill=False")
    if cost not in COST_MODELS:
        raise XdfxInputError(f"cost must be one of {COST_MODELS}, got {cost!r}")
    if not 0.0 < energy <= 1.0:
        raise XdfxInputError(f"energy is the fraction of a layer's energy a snapped form keeps, in (0, 1]; got {energy}")
    if not isinstance(model, nn.Module):
        raise XdfxInputError(f"harden expects a relaxed model (nn.Module), got {type(model).__name__}")
    names = list(xd_layers(model))
    if not names:
        raise XdfxInputError("the model has no XD layers to harden: pass the output of xdfx.relax")
    check_finite(model, list(model.parameters()), "harden a checkpoint from before the divergence (lower the "
                 "architecture learning rate)")
    gm = copy.deepcopy(model, deepcopy_memo(model))  # memo: CSR buffers (a graph), which deepcopy refuses
    hooks = {name: take_hooks(gm.get_submodule(name)) for name in names}  # off while layers are measured
    inputs = as_inputs(example_inputs) if example_inputs is not None else None
    if inputs is not None:
        _check_calibration(inputs)
    probes = _capture(gm, names, inputs) if inputs is not None else {}
    for name, args in probes.items():
        _check_probe(name, gm.get_submodule(name), args[0])
    origins = getattr(model, "xdfx_report", None)
    origins = origins.origins() if isinstance(origins, Report) else {}
    records = []
    for name in names:
        layer = gm.get_submodule(name)
        ctx = _context(gm, name, layer, probes.get(name), tol, origins.get(name))
        ctx.energy = energy
        cands = _in_dtype(candidates(ctx), ctx.probes[0].dtype)
        for c in cands:
            c.error = ctx.measure(c)
        cost_of, base = _pricing(ctx, cost)
        limit = max_cost * base if (max_cost is not None and base) else None
        ctx.fits = (lambda c, limit=limit, cost_of=cost_of: cost_of(c) <= limit) if fill and limit is not None else None
        best, runner = choose(cands, tol, limit=limit, cost_of=cost_of)
        if snap == "always" or (snap == "auto" and wants_snap(best, tol, limit, cost_of)):
            while True:
                snapped = _in_dtype(candidates(ctx, snapped=True), ctx.probes[0].dtype)  # built only where they may win
                for c in snapped:
                    c.error = ctx.measure(c)
                best, runner = choose(cands + snapped, tol, snap, limit, cost_of)
                # "auto" promises a cheap form: where none keeps ``energy`` within the target, keep less
                fits = FORM_BY_NAME[best.form].role == "snapped" and (limit is None or cost_of(best) <= limit)
                if snap != "auto" or fits or ctx.energy <= MIN_SNAP_ENERGY:
                    break
                ctx.energy = max(MIN_SNAP_ENERGY, 1.0 - 10.0 * (1.0 - ctx.energy))
        _install(gm, name, best)
        if best.function is None:  # the layer's hooks (relax moved a conv's onto it) go on what replaces it
            put_hooks(gm.get_submodule(name), hooks[name])
        records.append(HardenRecord(
            name, best.name, best.detail, best.error, _flops(layer, ctx), best.flops, stored_numbers(layer), best.stored,
            runner.name if runner else "", runner.error if runner else None, runner.flops if runner else None,
            energy_lost=best.lost, cost_ratio=cost_of(best) / base if base else None,
        ))
    if isinstance(gm, fx.GraphModule):
        drop_dead_attributes(gm)
        gm.graph.lint()
        gm.recompile()
    report = HardenReport("xdfx.harden", records, tol=tol, kept_xd=list(xd_layers(gm)), snap=snap,
                          max_cost=max_cost, cost=cost)
    if inputs is not None:
        with eval_mode(model), eval_mode(gm), torch.no_grad():
            report.end_to_end_error = relative_error(gm(*inputs), model(*inputs))
            if timing:
                _time_models(report, {"original": original, "relaxed": model, "hardened": gm}, inputs)
    attach(gm, "xdfx_report", report)
    return gm


def _pricing(ctx: LayerContext, cost: str):
    """How the layer's candidates are priced, and the price of the conv it was relaxed from (None:
    unknown, a graph layer)."""
    layer = ctx.layer
    grid = isinstance(layer, XDConv)
    if cost == "estimate":
        batch = ctx.probes[0].shape[0]
        return (lambda c: price(c, batch)), (original_conv_flops(layer, ctx.sizes) if grid else None)
    x, times = ctx.probes[0], {}

    def timed(c: Candidate) -> float:
        if id(c) not in times:  # the candidate is kept with its time: a freed one's id could come back
            try:
                with torch.no_grad():
                    times[id(c)] = (c, median_ms(lambda: ctx.run(c, x), repeats=5, warmup=1, device=x.device))
            except RuntimeError:  # a form that cannot run on this input is never cheap
                times[id(c)] = (c, math.inf)
        return times[id(c)][1]

    if not grid:
        return timed, None
    conv = original_conv(layer)
    with torch.no_grad():
        return timed, median_ms(lambda: conv(x), repeats=5, warmup=1, device=x.device)


def _time_models(report: HardenReport, models: dict[str, nn.Module | None], inputs: tuple) -> None:
    """Median latency of each model on ``inputs`` (warm-up first); warns if harden made it slower."""
    device = inputs[0].device if isinstance(inputs[0], torch.Tensor) else None
    for label, m in models.items():
        if m is not None:
            with eval_mode(m):
                report.latency_ms[label] = median_ms(lambda: m(*inputs), repeats=7, warmup=2, budget_s=5.0, device=device)
    report.threads = torch.get_num_threads()
    hard, relaxed = report.latency_ms["hardened"], report.latency_ms["relaxed"]
    if hard > SLOW_MARGIN * relaxed:
        warnings.warn(f"the hardened model is slower than the relaxed one on example_inputs ({hard:.3g} ms vs "
                      f"{relaxed:.3g} ms): lower max_cost, or harden with snap='always'", XdfxSlowModelWarning,
                      stacklevel=3)


def _in_dtype(cands: list[Candidate], dtype: torch.dtype) -> list[Candidate]:
    """Plain torch forms (convs, pools) of a half layer in its dtype: taps read off a float32 spectrum
    would make a float32 conv that refuses the layer's float16 input (XD-based forms upcast inside)."""
    if dtype not in (torch.float16, torch.bfloat16):
        return cands
    for c in cands:
        if c.module is not None and not any(isinstance(m, CircularLayer) for m in c.module.modules()):
            c.module.to(dtype)
    return cands


def _capture(gm: nn.Module, names: list[str], inputs: tuple) -> dict[str, tuple]:
    """Each XD layer's arguments on ``inputs``; a model that refuses them raises an xdfx error."""
    try:
        return capture_inputs(gm, names, inputs)
    except XdfxError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's model refused the inputs: say so, without our frames
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in inputs]
        raise XdfxInputError(
            f"running the relaxed model on example_inputs ({shapes}) failed: {type(err).__name__}: "
            f"{(str(err).strip().splitlines() or [''])[0]}. Pass the forward arguments the model takes (a tensor, "
            "or a tuple with one entry per argument)"
        ) from err


def _check_calibration(inputs: tuple) -> None:
    """Refuse example inputs with an empty batch: no layer would see any activation."""
    for i, t in enumerate(inputs):
        if isinstance(t, torch.Tensor) and t.numel() == 0:
            raise XdfxInputError(
                f"example_inputs[{i}] is empty (shape {tuple(t.shape)}): harden measures every form on the "
                "activations it produces; pass a batch of real inputs, or example_inputs=None for random probes"
            )


def _check_probe(name: str, layer: nn.Module, x: torch.Tensor) -> None:
    """Refuse activations that cannot tell forms apart: NaN or inf (every error is NaN), or constant
    over space (only the zero frequency is probed, so 'zero' or any form passes)."""
    if not torch.isfinite(x).all():
        raise XdfxInputError(
            f"layer {name!r} sees NaN or infinite activations on example_inputs, so no form can be measured; "
            "pass finite calibration inputs (a batch of real data), or find where the NaN comes from"
        )
    d = layer.spatial_dims if isinstance(layer, XDConv) else 0
    spatial = x.flatten(-d) if d else x.reshape(1, -1)
    if spatial.shape[-1] > 1 and bool((spatial.amax(-1) == spatial.amin(-1)).all()):
        raise XdfxInputError(
            f"layer {name!r} sees activations that are constant{' over space' if d else ''} on example_inputs "
            f"(e.g. {float(x.flatten()[0]):g}), which cannot tell its forms apart; calibrate on a batch of real "
            "inputs, or pass example_inputs=None for random probes"
        )


def _context(gm: nn.Module, name: str, layer: nn.Module, args: tuple | None, tol: float, origin) -> LayerContext:
    args = args or _random_probe(gm, name, layer)
    x, weight = args[0], (args[1] if len(args) > 1 else None)
    bias = args[2] if len(args) > 2 else None
    ctx = LayerContext(layer, [x], tol, weight, bias, origin)
    if isinstance(layer, XDConv):
        with torch.no_grad():
            ctx.spectrum = layer.spectrum(weight).detach()
        ctx.views = core_views(layer, ctx.sizes, tol)
    return ctx


def _flops(layer: nn.Module, ctx: LayerContext) -> float:
    if isinstance(layer, XDGraphConv):
        return layer.flops()
    return xd_flops(layer)


def _random_probe(gm: nn.Module, name: str, module: nn.Module) -> tuple:
    gen = torch.Generator().manual_seed(0)
    if isinstance(module, XDGraphConv):
        c_in = module.weight.shape[1] if not module.depthwise else module.weight.shape[0]
        return (torch.randn(module.nodes, c_in, generator=gen).to(module.weight),)
    ref = next(module.parameters())
    x = torch.randn(2, module.in_channels, *(g.in_size for g in module.geometry), generator=gen, dtype=ref.dtype)
    x = x.to(ref.device)
    if not module.external_weight:
        return (x,)
    for node in graph_nodes_calling(gm, name):
        if node.args[1].op == "get_attr":
            weight = attribute(gm, node.args[1].target)
            bias = attribute(gm, node.args[2].target) if len(node.args) > 2 and node.args[2].op == "get_attr" else None
            return (x, weight.detach(), None if bias is None else bias.detach())
    raise XdfxInputError(f"layer {name!r} takes a weight computed at run time: pass example_inputs to harden")


def _install(gm: nn.Module, name: str, chosen: Candidate) -> None:
    """Put the chosen form in place of the XD layer ``name`` (graph node or module inside a leaf)."""
    nodes = graph_nodes_calling(gm, name)
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
    gm.set_submodule(name, chosen.module)
    for node in nodes:
        if len(node.args) > 1:  # a functional conv's XD: (x, weight[, bias])
            keep_bias = chosen.form == "frozen" and len(node.args) > 2
            node.args = (node.args[0], node.args[2]) if keep_bias else (node.args[0],)
