"""What the export functions hand back or raise: the checked export's record, and the error and
warning classes, kept apart so that every other module of the package can use them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import XdfxError


class XdfxExportError(XdfxError):
    """The model could not be exported, or the exported model does not compute what it does.

    ``.log`` holds what the exporter printed, when it failed (empty otherwise)."""

    log: str = ""


class XdfxExportWarning(UserWarning):
    """The export succeeded with less than was asked (e.g. a static batch dimension), or
    compilation fell back to the eager model."""


@dataclass
class ExportResult:
    """What :func:`xdfx.export.onnx` wrote and how it checked it.

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
        model on its own device, timed one after the other; None if not timed.
    exported_forms : dict[str, str]
        Frozen / spectral layer name -> the method it was exported with (its ``onnx_method``).
    layer_timings : list
        Only where onnxruntime was slower than ``slow_ratio`` x eager: per module, onnxruntime
        and eager milliseconds (:class:`xdfx.export.slow.LayerTiming`), slowest first.
    slow_warning : str or None
        The message of the slow-export warning, if one was given.
    """

    path: Path
    opset: int
    errors: dict[int, float]
    dynamic_batch: bool
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    ort_ms: float | None = None
    eager_ms: float | None = None
    exported_forms: dict[str, str] = field(default_factory=dict)
    layer_timings: list = field(default_factory=list)
    slow_warning: str | None = None

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
