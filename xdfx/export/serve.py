"""``xdfx.export.compile``: ``torch.compile`` for serving, which never leaves the caller without a model.

Compilation can fail at once or on the first call (no C++ compiler, an unsupported op on this
platform); serving the eager model with a warning is more useful then than an exception.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import XdfxInputError
from .compare import check_outputs, model_args, output_tensors
from .result import XdfxExportWarning

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
    model.eval()  # for good: the served model must not update BatchNorm statistics
    served = CompiledModel(model, mode, backend)
    if example_inputs is not None:
        args = model_args(model, example_inputs)
        ref = output_tensors(model, args)
        got = output_tensors(served, args)
        check_outputs(ref, got, tol, what="the example inputs", runtime="the compiled model")
    return served
