"""Running an exported file in onnxruntime the way the PyTorch model is called.

The ONNX graph takes only the model's tensor arguments (the others are baked in), by name, as
CPU arrays; :class:`OrtModel` keeps that mapping in one place so that the parity checks and the
timing feed the session exactly as the model is fed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .result import XdfxExportError


def ort_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session on ``path`` with ``threads`` intra-op threads (default: as many
    as torch uses) that do not spin while idle, so that timings interleaved with eager PyTorch
    runs on the same cores stay fair."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class OrtModel:
    """An onnxruntime session on an exported file, called with the PyTorch model's arguments."""

    path: Path
    session: Any
    tensor_pos: list[int]  # positions of the model's tensor arguments, in graph-input order
    input_names: list[str]
    output_names: list[str]

    @classmethod
    def load(cls, path: Path, args: tuple) -> OrtModel:
        """Open ``path`` in onnxruntime; raise :class:`XdfxExportError` unless it loads and takes
        one input per tensor in ``args``."""
        try:
            session = ort_session(path)
        except Exception as exc:  # noqa: BLE001
            raise XdfxExportError(
                f"xdfx.export.onnx: the exporter wrote {path}, but onnxruntime cannot load it: {exc}"
            ) from exc
        tensor_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        in_names = [i.name for i in session.get_inputs()]
        out_names = [o.name for o in session.get_outputs()]
        if len(in_names) != len(tensor_pos):
            raise XdfxExportError(
                f"xdfx.export.onnx: the ONNX graph has {len(in_names)} inputs {in_names} but the model takes "
                f"{len(tensor_pos)} tensor arguments"
            )
        return cls(path, session, tensor_pos, in_names, out_names)

    def feed(self, args: tuple) -> dict:
        """The session's input dict for the model's forward arguments ``args``."""
        return {n: args[i].detach().cpu().numpy() for n, i in zip(self.input_names, self.tensor_pos)}

    def run(self, args: tuple, what: str) -> list:
        """The session's outputs on ``args`` (``what`` names them in the error if it fails)."""
        try:
            return self.session.run(None, self.feed(args))
        except Exception as exc:  # noqa: BLE001
            raise XdfxExportError(f"xdfx.export.onnx: onnxruntime fails to run {self.path} on {what}: {exc}") from exc
