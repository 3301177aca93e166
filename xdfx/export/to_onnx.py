"""``xdfx.export.onnx``: export a model to ONNX and prove the file computes what the model does.

It exports with the dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``; the
TorchScript exporter is deprecated and has no FFT), then runs the ONNX checker, loads the file in
onnxruntime and runs it on the example inputs and on random inputs of other batch sizes,
comparing every output with the PyTorch model in eval mode. An export that succeeds can still
fail to load or compute something else; nothing is returned until it has been run.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import onnx as onnx_pkg  # the pip package: absolute import, not this module
import torch
from torch import nn

from ..common import check_writable, eval_mode, median_ms, model_device
from ..errors import XdfxInputError
from .compare import check_outputs, model_args, output_tensors, random_probe
from .diagnose import explain, static_inputs
from .forms import onnx_forms
from .slow import layer_timings, warn_if_slow
from .quiet import quiet
from .result import ExportResult, XdfxExportError, XdfxExportWarning
from .runtime import OrtModel

#: Weights beyond this many bytes go to an external data file (protobuf's limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1 << 30


def _torch_export(model: nn.Module, args: tuple, path: Path, opset: int, static: set[int], verbose: bool) -> None:
    """One ``torch.onnx.export`` call, dimension 0 dynamic in every tensor input not in ``static``."""
    dynamic = tuple(
        {0: torch.export.Dim.DYNAMIC} if isinstance(a, torch.Tensor) and a.dim() and i not in static else None
        for i, a in enumerate(args)
    )
    nbytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    with quiet(not verbose) as log:
        try:
            torch.onnx.export(
                model, args, f=str(path), dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                external_data=nbytes > EXTERNAL_DATA_BYTES, verbose=verbose, optimize=True,
            )
        except Exception as exc:
            exc.__xdfx_log__ = log  # filled in when quiet() exits
            raise


def _export_error(model: nn.Module, exc: BaseException) -> XdfxExportError:
    err = XdfxExportError(explain(model, exc))
    log = getattr(exc, "__xdfx_log__", None)
    err.log = log.text if log is not None else ""
    return err


def _export(model: nn.Module, args: tuple, path: Path, opset: int, dynamic_batch: bool, verbose: bool) -> set[int]:
    """Write the file; return the positions of the inputs whose dimension 0 stays static.

    With ``dynamic_batch``, inputs the exporter finds fixed by the model are made static and the
    export retried once, with a warning."""
    static: set[int] = set() if dynamic_batch else set(range(len(args)))
    try:
        _torch_export(model, args, path, opset, static, verbose)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; we explain them
        fixed = static_inputs(model, args, exc) if dynamic_batch else None
        if not fixed:
            raise _export_error(model, exc) from exc
        static |= fixed
        warnings.warn(
            f"xdfx.export.onnx: the model fixes dimension 0 of input(s) {sorted(fixed)} "
            f"(shape {[tuple(args[i].shape) for i in sorted(fixed)]}): it is not a batch axis there (or the code "
            "hard-codes its size), so the ONNX file takes exactly that size",
            XdfxExportWarning,
            stacklevel=3,
        )
        try:  # still inside the handler, so the first failure stays on the chain explain() reads
            _torch_export(model, args, path, opset, static, verbose)
        except Exception as exc2:  # noqa: BLE001
            raise _export_error(model, exc2) from exc2
    return static


def _check_file(path: Path, opset: int) -> int:
    """Run the full ONNX checker on ``path``; return the default-domain opset it holds (with a
    warning where that is not ``opset``)."""
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
            stacklevel=3,
        )
    return written


def _parity(model: nn.Module, args: tuple, reference: list[torch.Tensor], ort: OrtModel, *, static: set[int],
            dynamic: bool, check_batches: Sequence[int], tol: float) -> dict[int, float]:
    """Batch size -> largest relative error of ``ort`` against ``model``, on ``args`` (whose
    outputs are ``reference``) and on random probes of batch ``check_batches`` (of the
    example's shape where no input has a dynamic batch)."""
    batch0 = next((args[i].shape[0] for i in ort.tensor_pos if args[i].dim()), 1)
    what = "the example inputs"
    errors = {batch0: check_outputs(reference, ort.run(args, what), tol, what=what, names=ort.output_names)}
    gen = torch.Generator().manual_seed(0)
    sizes = list(dict.fromkeys(int(b) for b in check_batches)) if dynamic else [batch0]
    for b in sizes:
        probe = random_probe(args, b, static, gen)
        what = f"random inputs of batch size {b}" if dynamic else "random inputs of the example's shape"
        err = check_outputs(output_tensors(model, probe), ort.run(probe, what), tol, what=what, names=ort.output_names)
        errors[b] = max(errors.get(b, 0.0), err)
    return errors


def _latency(model: nn.Module, args: tuple, ort: OrtModel, runs: int) -> tuple[float, float]:
    """Median milliseconds of the session, then of the eager model, on ``args`` (each after one
    warm-up run; timed one after the other, not interleaved)."""
    ort_ms = median_ms(lambda: ort.session.run(None, ort.feed(args)), repeats=runs, warmup=1)
    with torch.no_grad():
        eager_ms = median_ms(lambda: model(*args), repeats=runs, warmup=1, device=model_device(model))
    return ort_ms, eager_ms


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
    slow_ratio: float | None = 1.5,
    verbose: bool = False,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path`` and check it in onnxruntime.

    Parameters
    ----------
    model : nn.Module
        Usually a hardened model (:func:`xdfx.harden`); exported and compared in eval mode (its
        modules' modes are restored afterwards).
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
        Timed runs of the session, then of the eager model, on the example inputs (0: no timing).
    slow_ratio : float or None
        Where onnxruntime is slower than this multiple of eager (timed with ``timing_runs``),
        profile both per layer and warn (:class:`XdfxSlowExportWarning`) naming the slowest
        layers and their exported forms; :attr:`ExportResult.layer_timings` holds the profile.
        None: no check.
    verbose : bool
        Let the exporter print its progress and warnings (silenced by default).

    Raises
    ------
    XdfxExportError
        The exporter failed (the message names the op, graph node and module, and suggests
        :func:`xdfx.harden` if XD layers are left), the file fails the ONNX checker or does not
        load in onnxruntime, or onnxruntime's outputs differ from the model's beyond ``tol``.
    """
    if not isinstance(model, nn.Module):
        raise XdfxInputError(f"xdfx.export.onnx expects an nn.Module, got {type(model).__name__}")
    path = Path(path)
    check_writable(path, "the ONNX file")  # before the export's work, not after it
    path.parent.mkdir(parents=True, exist_ok=True)
    args = model_args(model, example_inputs)
    with eval_mode(model):
        reference = output_tensors(model, args)  # also fills lazily built caches with real tensors
        with onnx_forms(model) as methods:  # the forms onnxruntime runs fastest; parity is against the eager forms
            static = _export(model, args, path, opset, dynamic_batch, verbose)
        written = _check_file(path, opset)
        ort = OrtModel.load(path, args)
        dynamic = any(i not in static for i in ort.tensor_pos)
        errors = _parity(model, args, reference, ort, static=static, dynamic=dynamic, check_batches=check_batches,
                         tol=tol)
        ort_ms, eager_ms = _latency(model, args, ort, timing_runs) if timing_runs > 0 else (None, None)
        result = ExportResult(path, written, errors, dynamic, ort.input_names, ort.output_names, ort_ms, eager_ms,
                              exported_forms=methods)
        if slow_ratio is not None and result.ratio is not None and result.ratio > slow_ratio:
            forms = {n: f"{type(model.get_submodule(n)).__name__} {m}" for n, m in methods.items()}
            threads = torch.get_num_threads()
            result.layer_timings = layer_timings(model, args, path, ort.feed(args), forms, threads, max(timing_runs, 3))
            dft = sum(n.op_type == "DFT" for n in onnx_pkg.load(str(path), load_external_data=False).graph.node)
            result.slow_warning = warn_if_slow(result.ratio, slow_ratio, ort_ms, eager_ms, result.layer_timings,
                                               threads, dft, [n for n, m in methods.items() if m == "fft"])
    return result
