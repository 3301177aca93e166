"""Serving a hardened model: ONNX export checked in onnxruntime, and ``torch.compile``.

``onnx()`` exports with the dynamo-based exporter and returns only once the file has passed the
ONNX checker and onnxruntime has reproduced the model's outputs; ``compile()`` wraps
``torch.compile`` and falls back to the eager model (with a warning) where compilation fails.
Both run wherever the model's parameters live (CPU or CUDA); onnxruntime runs on its CPU
execution provider.

    import xdfx, xdfx.export
    hard = xdfx.harden(relaxed, example_inputs=x)
    result = xdfx.export.onnx(hard, x, "model.onnx")      # ExportResult: opset, errors, latency
    serve = xdfx.export.compile(hard, example_inputs=x)   # a callable

One job per module: ``to_onnx`` (export and check), ``serve`` (compile), ``compare`` (outputs against
eager), ``diagnose`` (why the exporter failed), ``runtime`` (onnxruntime sessions), ``quiet``
(silencing the exporter), ``forms`` (each layer's exported form: matmuls where eager runs FFTs),
``slow`` (the per-layer profile and warning when onnxruntime is slower than eager) and ``result``
(what is returned or raised).
"""

from .compare import check_outputs
from .serve import CompiledModel, compile
from .to_onnx import onnx
from .result import ExportResult, XdfxExportError, XdfxExportWarning
from .runtime import ort_session
from .slow import LayerTiming, XdfxSlowExportWarning

__all__ = [
    "CompiledModel", "ExportResult", "XdfxExportError", "XdfxExportWarning", "check_outputs", "compile", "onnx",
    "LayerTiming", "XdfxSlowExportWarning", "ort_session",
]
