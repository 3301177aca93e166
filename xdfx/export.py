"""Serving a hardened model: ONNX export checked in onnxruntime, and ``torch.compile``.

``onnx()`` exports with the dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``; the
TorchScript exporter is deprecated and has no FFT), then runs the ONNX checker, loads the file
in onnxruntime and runs it on the example inputs and on random inputs of other batch sizes,
comparing every output with the PyTorch model in eval mode. An export that succeeds can still
fail to load or compute something else; nothing is returned until it has been run.

``compile()`` wraps ``torch.compile`` for serving and falls back to the eager model (with a
warning) where compilation fails.

Both run wherever the model's parameters live (CPU or CUDA); onnxruntime runs on its CPU
execution provider.

    import xdfx, xdfx.export
    hard = xdfx.harden(relaxed, example_inputs=x)
    result = xdfx.export.onnx(hard, x, "model.onnx")      # ExportResult: opset, errors, latency
    serve = xdfx.export.compile(hard, example_inputs=x)   # a callable
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .relax import as_inputs
from .errors import XdfxError, XdfxInputError
from .ops import XDConv
from .ops.graph import XDGraphConv

__all__ = [
    "CompiledModel", "ExportResult", "XdfxExportError", "XdfxExportWarning", "check_outputs", "compile", "onnx",
    "ort_session",
]

XD_TYPES = (XDConv, XDGraphConv)
#: Weights beyond this many bytes go to an external data file (protobuf's limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1 << 30


class XdfxExportError(XdfxError):
    """The model could not be exported, or the exported model does not compute what it does.

    ``.log`` holds what the exporter printed, when it failed (empty otherwise)."""

    log: str = ""


class XdfxExportWarning(UserWarning):
    """The export succeeded with less than was asked (e.g. a static batch dimension), or
    compilation fell back to the eager model."""


@dataclass
class ExportResult:
    """What :func:`onnx` wrote and how it checked it.

    Attributes
    ----------
    path : Path
        The ONNX file.
    opset : int
        The default-domain opset actually written (read back from the file; the exporter may
        write a newer one than asked for).
    errors : dict[int, float]
        Batch size -> largest relative error ``max|y_onnx - y| / max|y|`` over the outputs and
        the inputs checked at that batch size.
    dynamic_batch : bool
        Whether the file accepts any batch size (False where the model fixes dimension 0).
    input_names, output_names : list[str]
        Names in the ONNX graph, in the order of the model's tensor arguments and outputs.
    ort_ms, eager_ms : float or None
        Median latency on the example inputs of the onnxruntime session (CPU) and of the eager
        model on its own device, interleaved; None if not timed.
    """

    path: Path
    opset: int
    errors: dict[int, float]
    dynamic_batch: bool
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    ort_ms: float | None = None
    eager_ms: float | None = None

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def ratio(self) -> float | None:
        """onnxruntime latency over eager latency (< 1: onnxruntime is faster)."""
        if self.ort_ms is None or not self.eager_ms:
            return None
        return self.ort_ms / self.eager_ms

    def __str__(self) -> str:
        errs = ", ".join(f"batch {b}: {e:.2e}" for b, e in sorted(self.errors.items()))
        timing = ""
        if self.ort_ms is not None and self.eager_ms is not None:
            timing = f"; onnxruntime {self.ort_ms:.2f} ms vs eager {self.eager_ms:.2f} ms ({self.ratio:.2f}x)"
        batch = "dynamic" if self.dynamic_batch else "static"
        return f"{self.path} (opset {self.opset}, {batch} batch): max relative error {errs}{timing}"


# ====================================================================== helpers
def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _to(inputs: tuple, device: torch.device) -> tuple:
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in inputs)


def _leaves(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output (a tensor or any nesting of tuples, lists and dicts)."""
    leaves = torch.utils._pytree.tree_leaves(out)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def _xd_layers(model: nn.Module) -> list[str]:
    return [f"{n or '<root>'!r} ({type(m).__name__})" for n, m in model.named_modules() if isinstance(m, XD_TYPES)]


class _Log:
    text = ""


@contextlib.contextmanager
def _quiet(enabled: bool = True):
    """Silence the exporter while it runs: its warnings, log records and the graph dumps that
    failed capture attempts print (at the file-descriptor level, so C++ output too). What it
    wrote is kept on the yielded object's ``text``; our own errors say what matters."""
    log = _Log()
    if not enabled:
        yield log
        return
    saved_levels = {}
    for name in list(logging.root.manager.loggerDict):
        if name == "torch" or name.startswith(("torch.", "onnxscript")):
            lg = logging.getLogger(name)
            saved_levels[name] = lg.level
            lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved_fds = []
        try:
            for fd in (1, 2):
                saved_fds.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
        except OSError:  # no usable descriptors (embedded interpreters): Python-level only
            pass
        text = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                warnings.simplefilter("ignore")
                yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, saved in saved_fds:
                os.dup2(saved, fd)
                os.close(saved)
            for name, level in saved_levels.items():
                logging.getLogger(name).setLevel(level)
            sink.seek(0)
            log.text = text.getvalue() + sink.read().decode(errors="replace")


def _random_like(t: torch.Tensor, batch: int | None, gen: torch.Generator) -> torch.Tensor:
    """A random tensor like ``t`` (batch ``batch`` in dimension 0 if given), of similar scale."""
    shape = (batch, *t.shape[1:]) if batch is not None and t.dim() else tuple(t.shape)
    if t.dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if not t.is_floating_point():
        lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 1)
        return torch.randint(lo, hi + 1, shape, generator=gen, dtype=t.dtype)
    ref = t.detach().double()
    mean = float(ref.mean()) if t.numel() else 0.0
    std = float(ref.std()) if t.numel() > 1 else 1.0
    std = std if math.isfinite(std) and std > 0 else 1.0
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * std + mean).to(t.dtype)


# ====================================================================== comparison
def check_outputs(reference: Sequence[Any], actual: Sequence[Any], tol: float, *, what: str = "the inputs",
                  names: Sequence[str] | None = None, runtime: str = "onnxruntime") -> float:
    """Raise :class:`XdfxExportError` unless every ``actual`` output is within
    ``tol * max|reference|`` of its reference (max abs error); return the largest relative error.

    Outputs are tensors or arrays, compared in float64 on the CPU. NaNs must sit at the same
    places in both; a shape or count mismatch is an error.
    """
    ref = [np.asarray(r.detach().cpu() if isinstance(r, torch.Tensor) else r) for r in reference]
    got = [np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a) for a in actual]
    label = lambda k: f"output {k}" + (f" ({names[k]!r})" if names and k < len(names) else "")  # noqa: E731
    if len(ref) != len(got):
        raise XdfxExportError(f"{runtime} returns {len(got)} outputs for {what}, the PyTorch model {len(ref)}")
    worst, worst_at = 0.0, None
    for k, (r, a) in enumerate(zip(ref, got)):
        if r.shape != a.shape:
            raise XdfxExportError(
                f"{label(k)} has shape {tuple(a.shape)} in {runtime} but {tuple(r.shape)} in PyTorch, on {what}"
            )
        r64, a64 = r.astype(np.float64), a.astype(np.float64)
        nan_r, nan_a = np.isnan(r64), np.isnan(a64)
        if (nan_r != nan_a).any():
            raise XdfxExportError(f"{label(k)} has NaNs at different places in {runtime} and PyTorch, on {what}")
        r64, a64 = np.where(nan_r, 0.0, r64), np.where(nan_a, 0.0, a64)
        err = float(np.abs(a64 - r64).max()) if r64.size else 0.0
        scale = float(np.abs(r64).max()) if r64.size else 0.0
        if not math.isfinite(err):  # matching infinities give inf - inf = nan
            err = 0.0 if np.array_equal(r64, a64) else math.inf
        rel = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
        if err > tol * scale or (scale == 0 and err > 0):
            raise XdfxExportError(
                f"{runtime} disagrees with the eager PyTorch model on {what}: {label(k)} (shape {tuple(r.shape)}) "
                f"has max error {err:.3g} > tol {tol:g} * max|y| {scale:.3g} (relative error {rel:.3g}). The traced "
                "graph computes something else than the eager model: look for code that branches on "
                "torch.compiler.is_exporting() / is_compiling(), state read once at trace time, or a "
                "translation bug in the ops feeding that output"
            )
        if worst_at is None or rel > worst:
            worst, worst_at = rel, k
    return worst


# ====================================================================== explaining failures
_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>(?:\. Failure message: ([^\n]*))?")
_NODE = re.compile(r"Error when translating node %(\w+) : .*?call_function\[target=([\w.:]+)\]")
_STATIC = re.compile(r"inferred a static shape of (\d+) for dimension inputs\[['\"]?(\w+)['\"]?\](?:\[(\d+)\])?\.shape\[0\]")
_CALL_MODULE = re.compile(r"While executing %(\w+) : .*?call_module\[target=([\w.]+)\]")
_USER_CALL = re.compile(r"The following call raised this error:\s*\n\s*File \"([^\"]+)\", line (\d+), in (\w+)\n\s*([^\n]+)")


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _frames(exc: BaseException):
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _failing_fx_node(excs: list[BaseException]) -> torch.fx.Node | None:
    """The exported-graph node being translated when the exporter failed (from its frames)."""
    for exc in excs:
        found = None
        for frame in _frames(exc):
            node = frame.f_locals.get("node")
            if isinstance(node, torch.fx.Node):
                found = node
        if found is not None:
            return found
    return None


def _failing_module(model: nn.Module, excs: list[BaseException]) -> tuple[str, nn.Module] | None:
    """The innermost submodule of ``model`` whose code was running when tracing failed."""
    names = {id(m): n for n, m in model.named_modules()}
    best = None
    for exc in excs:
        for frame in _frames(exc):
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names and "/torch/" not in frame.f_code.co_filename:
                best = (names[id(owner)], owner)
    return best


def _module_of(model: nn.Module, node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, cls = list(stack.values())[-1]
    path = re.sub(r"^L\['self'\]\.?", "", str(path))
    try:
        cls = type(model.get_submodule(path)).__name__
    except AttributeError:
        cls = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].rstrip("'>")
    return f"module {path or '<root>'!r} ({cls})"


def _source_of(node: torch.fx.Node) -> str:
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    where = re.match(r'File "([^"]+)", line (\d+)', lines[-2]) if len(lines) >= 2 else None
    return f", `{lines[-1]}` at {where.group(1)}:{where.group(2)}" if where else ""


def _explain(model: nn.Module, exc: BaseException) -> str:
    """A one-paragraph account of an exporter failure: which op, node and module, and what to do."""
    excs = _chain(exc)
    text = "\n".join(f"{type(e).__name__}: {e}" for e in excs)
    parts: list[str] = []
    data_dependent = any(
        "GuardOnDataDependentSymNode" in type(e).__name__ or "data-dependent" in str(e) or "DataDependent" in type(e).__name__
        for e in excs
    )
    if data_dependent:
        where = None
        m = _CALL_MODULE.search(text)
        if m:
            try:
                where = (m.group(2), model.get_submodule(m.group(2)))
            except AttributeError:
                where = None
        where = where or _failing_module(model, excs)
        code = _USER_CALL.search(text)
        loc = f" (`{code.group(4).strip()}` at {code.group(1)}:{code.group(2)})" if code else ""
        mod = f"module {where[0]!r} ({type(where[1]).__name__})" if where else "the model"
        parts.append(
            f"{mod} has data-dependent control flow{loc}: a Python branch on the value of a tensor. "
            "torch.export (and so ONNX) records one path through the code, so no graph exists that computes it "
            "for every input. Rewrite the branch with torch.where(...) or torch.cond(...) to export it"
        )
    else:
        op = _OP.search(text)
        node = _failing_fx_node(excs)
        nm = _NODE.search(text)
        if op or nm or node is not None:
            target = f"{op.group(1)}.{op.group(2)}" if op else (nm.group(2) if nm else str(getattr(node, "target", "?")))
            target = target.removeprefix("torch.ops.")
            name = node.name if node is not None else (nm.group(1) if nm else "?")
            where = ""
            if node is not None:
                mod = _module_of(model, node)
                where = (f" in {mod}" if mod else "") + _source_of(node)
            if op:
                reason = f" ({op.group(3).strip()})" if op.group(3) else ""
                parts.append(f"the exporter has no ONNX translation for op {target} (graph node %{name}{where}){reason}")
            else:
                inner = excs[-1]
                first = (str(inner).strip().splitlines() or [""])[0]
                parts.append(
                    f"the exporter failed to translate op {target} (graph node %{name}{where}): "
                    f"{type(inner).__name__}: {first}"
                )
        else:
            summary = next((str(e).strip().splitlines()[-1] for e in reversed(excs) if str(e).strip()), type(exc).__name__)
            where = _failing_module(model, excs)
            mod = f" in module {where[0]!r} ({type(where[1]).__name__})" if where else ""
            parts.append(f"torch.onnx.export failed{mod}: {type(excs[-1]).__name__}: {summary}")
    xd = _xd_layers(model)
    if xd:
        parts.append(
            f"The model still contains XD layers ({', '.join(xd[:4])}{', ...' if len(xd) > 4 else ''}): "
            "xdfx.harden(model, example_inputs=...) replaces them with standard operators, which is also what "
            "to export for serving"
        )
    return "xdfx.export.onnx: " + ". ".join(parts) + "."


# ====================================================================== export
def _dynamic_shapes(model: nn.Module, args: tuple, static: set[int]) -> tuple:
    return tuple(
        {0: torch.export.Dim.DYNAMIC} if isinstance(a, torch.Tensor) and a.dim() and i not in static else None
        for i, a in enumerate(args)
    )


def _static_inputs(model: nn.Module, args: tuple, exc: BaseException) -> set[int] | None:
    """Positions of the inputs whose dimension 0 the model fixes (from the exporter's message)."""
    hits = [m for e in _chain(exc) for m in _STATIC.finditer(str(e))]
    if not hits:
        return None
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    out = set()
    for m in hits:
        name = m.group(2)
        if name in params and params.index(name) < len(args):
            out.add(params.index(name))
        else:  # a name we cannot map (varargs): keep every input static
            return {i for i, a in enumerate(args) if isinstance(a, torch.Tensor)}
    return out


def _torch_export(model: nn.Module, args: tuple, path: Path, opset: int, dynamic: tuple, verbose: bool) -> None:
    nbytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    with _quiet(not verbose) as log:
        try:
            torch.onnx.export(
                model, args, f=str(path), dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                external_data=nbytes > EXTERNAL_DATA_BYTES, verbose=verbose, optimize=True,
            )
        except Exception as exc:
            exc.__xdfx_log__ = log  # filled in when _quiet exits
            raise


def _export_error(model: nn.Module, exc: BaseException) -> XdfxExportError:
    err = XdfxExportError(_explain(model, exc))
    log = getattr(exc, "__xdfx_log__", None)
    err.log = log.text if log is not None else ""
    return err


def ort_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session on ``path`` with ``threads`` intra-op threads (default: as many
    as torch uses) that do not spin while idle, so that timings interleaved with eager PyTorch
    runs on the same cores stay fair."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[Any],
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    opset: int = 18,
    tol: float = 1e-4,
    check_batches: Sequence[int] = (1, 3),
    timing_runs: int = 5,
    verbose: bool = False,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path`` and check it in onnxruntime.

    Parameters
    ----------
    model : nn.Module
        Usually a hardened model (:func:`xdfx.harden`); exported and compared in eval mode (its
        mode is restored afterwards).
    example_inputs : tensor or tuple
        Forward arguments; tensors become graph inputs, anything else is baked in.
    path : str or Path
        Where to write the file.
    dynamic_batch : bool
        Make dimension 0 of every tensor input dynamic. Where the model fixes it (e.g. a graph
        model whose first axis is the nodes) that input stays static, with a warning.
    opset : int
        The ONNX opset asked for; :attr:`ExportResult.opset` says what was written.
    tol : float
        Every output must satisfy ``max|y_onnx - y| <= tol * max|y|``.
    check_batches : sequence of int
        Batch sizes run besides the example inputs, on random inputs of the same non-batch
        shape (only with a dynamic batch).
    timing_runs : int
        Interleaved timed runs of the session and the eager model on the example inputs
        (0: no timing).
    verbose : bool
        Let the exporter print its progress and warnings (silenced by default).

    Raises
    ------
    XdfxExportError
        The exporter failed (the message names the op, graph node and module, and suggests
        :func:`xdfx.harden` if XD layers are left), the file fails the ONNX checker or does not
        load in onnxruntime, or onnxruntime's outputs differ from the model's beyond ``tol``.
    """
    import onnx as onnx_pkg

    if not isinstance(model, nn.Module):
        raise XdfxInputError(f"xdfx.export.onnx expects an nn.Module, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = _device(model)
    args = _to(as_inputs(example_inputs), device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = _leaves(model(*args))  # also fills lazily built caches with real tensors
        static: set[int] = set() if dynamic_batch else {i for i in range(len(args))}
        try:
            _torch_export(model, args, path, opset, _dynamic_shapes(model, args, static), verbose)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; we explain them
            fixed = _static_inputs(model, args, exc) if dynamic_batch else None
            if not fixed:
                raise _export_error(model, exc) from exc
            static |= fixed
            warnings.warn(
                f"xdfx.export.onnx: the model fixes dimension 0 of input(s) {sorted(fixed)} "
                f"(shape {[tuple(args[i].shape) for i in sorted(fixed)]}): it is not a batch axis there (or the code "
                "hard-codes its size), so the ONNX file takes exactly that size",
                XdfxExportWarning,
                stacklevel=2,
            )
            try:
                _torch_export(model, args, path, opset, _dynamic_shapes(model, args, static), verbose)
            except Exception as exc2:  # noqa: BLE001
                raise _export_error(model, exc2) from exc2
        tensor_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        dynamic = any(i not in static for i in tensor_pos)

        try:
            onnx_pkg.checker.check_model(str(path), full_check=True)
        except Exception as exc:  # noqa: BLE001
            raise XdfxExportError(f"xdfx.export.onnx: {path} fails the ONNX checker: {exc}") from exc
        proto = onnx_pkg.load(str(path), load_external_data=False)
        written = int(next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset))
        if written != opset:
            warnings.warn(
                f"xdfx.export.onnx: asked for opset {opset}, the exporter wrote opset {written} (it could not "
                "convert every op down); a runtime limited to the opset asked for will reject the file",
                XdfxExportWarning,
                stacklevel=2,
            )
        try:
            session = ort_session(path)
        except Exception as exc:  # noqa: BLE001
            raise XdfxExportError(
                f"xdfx.export.onnx: the exporter wrote {path}, but onnxruntime cannot load it: {exc}"
            ) from exc
        in_names = [i.name for i in session.get_inputs()]
        out_names = [o.name for o in session.get_outputs()]
        if len(in_names) != len(tensor_pos):
            raise XdfxExportError(
                f"xdfx.export.onnx: the ONNX graph has {len(in_names)} inputs {in_names} but the model takes "
                f"{len(tensor_pos)} tensor arguments"
            )

        def feed(a: tuple) -> dict:
            return {n: a[i].detach().cpu().numpy() for n, i in zip(in_names, tensor_pos)}

        def run(a: tuple, what: str) -> list:
            try:
                return session.run(None, feed(a))
            except Exception as exc:  # noqa: BLE001
                raise XdfxExportError(f"xdfx.export.onnx: onnxruntime fails to run {path} on {what}: {exc}") from exc

        errors: dict[int, float] = {}
        batch0 = next((args[i].shape[0] for i in tensor_pos if args[i].dim()), 1)
        errors[batch0] = check_outputs(reference, run(args, "the example inputs"), tol, what="the example inputs",
                                       names=out_names)
        gen = torch.Generator().manual_seed(0)
        sizes = list(dict.fromkeys(int(b) for b in check_batches)) if dynamic else [batch0]
        for b in sizes:
            probe = tuple(
                _random_like(a, None if i in static else b, gen).to(a.device) if isinstance(a, torch.Tensor) else a
                for i, a in enumerate(args)
            )
            what = f"random inputs of batch size {b}" if dynamic else "random inputs of the example's shape"
            with torch.no_grad():
                ref = _leaves(model(*probe))
            err = check_outputs(ref, run(probe, what), tol, what=what, names=out_names)
            errors[b] = max(errors.get(b, 0.0), err)

        ort_ms = eager_ms = None
        if timing_runs > 0:
            ort_ms, eager_ms = _time(lambda: session.run(None, feed(args)), model, args, timing_runs)
        return ExportResult(path, written, errors, dynamic, in_names, out_names, ort_ms, eager_ms)
    finally:
        model.train(was_training)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(ort_call: Callable[[], object], model: nn.Module, args: tuple, runs: int) -> tuple[float, float]:
    """Median milliseconds of the session and of the eager model, interleaved, after a warm-up."""
    device = _device(model)

    def eager() -> None:
        with torch.no_grad():
            model(*args)
        _sync(device)

    ort_call()
    eager()
    t_ort, t_eager = [], []
    for _ in range(runs):
        start = time.perf_counter()
        ort_call()
        t_ort.append(time.perf_counter() - start)
        _sync(device)
        start = time.perf_counter()
        eager()
        t_eager.append(time.perf_counter() - start)
    return 1e3 * statistics.median(t_ort), 1e3 * statistics.median(t_eager)


# ====================================================================== torch.compile
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompiledModel(nn.Module):
    """``torch.compile(model)`` that turns into the eager model, with a warning, the first time
    compiling fails. ``.compiled`` says which one runs; ``.fallback_reason`` why."""

    def __init__(self, model: nn.Module, mode: str, backend: str | Callable = "inductor") -> None:
        super().__init__()
        self.model = model
        self.mode = mode
        self.fallback_reason: str | None = None
        # kept out of the module tree: the compiled wrapper shares the model's parameters
        object.__setattr__(self, "_compiled_fn", None)
        try:
            kwargs = {"mode": mode} if backend == "inductor" else {}
            object.__setattr__(self, "_compiled_fn", torch.compile(model, backend=backend, **kwargs))
        except Exception as exc:  # noqa: BLE001 - e.g. no compiler on this platform
            self._fall_back(exc)

    @property
    def compiled(self) -> bool:
        return self._compiled_fn is not None

    def _fall_back(self, exc: BaseException) -> None:
        lines = []
        for line in str(exc).strip().splitlines():
            if line.startswith("Set TORCHDYNAMO_VERBOSE"):
                break
            if line.strip():
                lines.append(line.strip())
        self.fallback_reason = f"{type(exc).__name__}: {' '.join(lines)}"[:500]
        object.__setattr__(self, "_compiled_fn", None)
        warnings.warn(
            f"xdfx.export.compile: torch.compile(mode={self.mode!r}) failed on this model/platform "
            f"({self.fallback_reason}); serving the eager model instead",
            XdfxExportWarning,
            stacklevel=3,
        )

    def forward(self, *args, **kwargs):
        fn = self._compiled_fn
        if fn is None:
            return self.model(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            out = self.model(*args, **kwargs)  # the caller's own error, if eager fails as well
            self._fall_back(exc)
            return out


def compile(
    model: nn.Module,
    *,
    mode: str = "default",
    example_inputs: torch.Tensor | Sequence[Any] | None = None,
    tol: float = 1e-4,
    backend: str | Callable = "inductor",
) -> CompiledModel:
    """An optimized callable serving ``model``: ``torch.compile(model, mode=mode)``.

    The model is put in eval mode. On CUDA, ``mode="reduce-overhead"`` replays CUDA graphs. If
    compilation raises (at once or on a call) the eager model serves instead, with an
    :class:`XdfxExportWarning`. With ``example_inputs`` it runs once to compile (on the
    model's device) and checks the outputs against eager within ``tol * max|y|``.

    Raises
    ------
    XdfxExportError
        The compiled model's outputs on ``example_inputs`` differ from eager's.
    """
    if not isinstance(model, nn.Module):
        raise XdfxInputError(f"xdfx.export.compile expects an nn.Module, got {type(model).__name__}")
    if mode not in COMPILE_MODES:
        raise XdfxInputError(f"mode {mode!r} is not one of {COMPILE_MODES}")
    model.eval()
    served = CompiledModel(model, mode, backend)
    if example_inputs is not None:
        args = _to(as_inputs(example_inputs), _device(model))
        with torch.no_grad():
            ref = _leaves(model(*args))
            got = _leaves(served(*args))
        check_outputs(ref, got, tol, what="the example inputs", runtime="the compiled model")
    return served
