"""Small helpers that several passes and tools share: inputs, layer lookup, activations capture,
errors, eval mode and latency timing."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import fx, nn

from .errors import XdfxError, XdfxInputError
from .ops.graph import XDGraphConv
from .ops.xd import XDConv

# the installed packages' own folders, to tell library frames from the user's (a user's code may
# well live under a folder named "xdfx" or "torch" itself)
_XDFX_DIR, _TORCH_DIR = (os.path.dirname(os.path.abspath(p)) + os.sep for p in (__file__, torch.__file__))

#: The searchable layers that relax creates and harden replaces.
XD_TYPES: tuple[type[nn.Module], ...] = (XDConv, XDGraphConv)


def as_inputs(example_inputs: Any) -> tuple:
    """``example_inputs`` as a tuple of forward arguments (a lone tensor becomes a 1-tuple)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs:
        return tuple(example_inputs)
    raise XdfxInputError(
        f"example_inputs must be a tensor or a non-empty tuple of forward arguments, got "
        f"{type(example_inputs).__name__}"
    )


def xd_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> XD layer, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, XD_TYPES)}


def attribute(root: nn.Module, target: str) -> Any:
    """What a ``get_attr`` target such as ``"layer1.adj"`` names inside ``root``."""
    owner, _, leaf = target.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, leaf)


def is_library_file(filename: str, torch_only: bool = False) -> bool:
    """Whether ``filename`` belongs to torch (or xdfx) itself, not to the user's code."""
    return os.path.abspath(filename).startswith(_TORCH_DIR if torch_only else (_TORCH_DIR, _XDFX_DIR))


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|got - ref| / max|ref|`` in float64 (0 when both are exactly equal)."""
    diff = float((got.detach().double() - ref.detach().double()).abs().max()) if ref.numel() else 0.0
    scale = float(ref.detach().double().abs().max()) if ref.numel() else 0.0
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (no BatchNorm statistics move), then restore every module's flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def run_with_pre_hooks(model: nn.Module, hooks: dict[str, Callable], inputs: tuple, *, with_kwargs: bool = False) -> None:
    """Run ``model`` on ``inputs`` (in eval mode, without gradients) with a forward pre-hook on each
    named submodule; the hooks are removed and the model is left as it was."""
    handles = [model.get_submodule(name).register_forward_pre_hook(hook, with_kwargs=with_kwargs)
               for name, hook in hooks.items()]
    try:
        with eval_mode(model), torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()


def capture_inputs(model: nn.Module, names: Sequence[str], inputs: tuple) -> dict[str, tuple]:
    """The arguments each named submodule receives on its first call while ``model`` runs on
    ``inputs`` (in eval mode, without gradients; the model is left as it was)."""
    seen: dict[str, tuple] = {}

    def hook_for(name: str) -> Callable:
        def hook(_module, args):
            seen.setdefault(name, tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
        return hook

    run_with_pre_hooks(model, {name: hook_for(name) for name in names}, inputs)
    return seen


def graph_nodes_calling(gm: nn.Module, target: str) -> list[fx.Node]:
    """The ``call_module`` nodes of ``gm`` (a GraphModule; none otherwise) that call ``target``."""
    if not isinstance(gm, fx.GraphModule):
        return []
    return [n for n in gm.graph.nodes if n.op == "call_module" and n.target == target]


def check_finite(model: nn.Module, parameters: Sequence[nn.Parameter], advice: str) -> None:
    """Raise an ``XdfxError`` naming the first of ``parameters`` with NaN or infinite entries."""
    names = {id(p): n for n, p in model.named_parameters()}
    for p in parameters:
        if not torch.isfinite(p).all():
            raise XdfxError(f"parameter {names.get(id(p), '?')!r} has NaN or infinite entries; {advice}")


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Raise an ``XdfxError`` unless ``path`` can be created: its nearest existing ancestor must be a
    writable folder (checked before any work, so a long run does not fail at its last step)."""
    target = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(target)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        why = "is not a folder" if not os.path.isdir(parent) else "is not writable"
        raise XdfxError(f"cannot write {what} {os.fspath(path)!r}: {parent!r} {why}; pass a path in a writable folder")


class FiniteCheck:
    """Forward pre-hook of ``relax(check_finite=True)``: NaN or inf fed to an XD layer raise an
    ``XdfxInputError`` naming it (a class, so that relaxed models still deepcopy and pickle)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: nn.Module, args: tuple) -> None:
        exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
        if exporting or torch.compiler.is_compiling() or torch.jit.is_tracing():  # no data-dependent raise in a graph
            return
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise XdfxInputError(
                f"layer {self.name!r} was fed NaN or infinite values (relax(..., check_finite=True)); through its "
                "FFTs one NaN would reach every output of its sample. Find where they come from upstream of this "
                "layer, or clean the input"
            )


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2, budget_s: float | None = None,
              device: torch.device | None = None) -> float:
    """Median wall-clock milliseconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs
    (fewer repeats, at least 3, when ``budget_s`` would be exceeded)."""
    for _ in range(warmup):
        fn()
        _sync(device)
    times: list[float] = []
    spent = 0.0
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if budget_s is not None and i >= 2 and spent > budget_s:
            break
    return 1e3 * statistics.median(times)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")
