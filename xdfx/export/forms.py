"""Which form each hardened layer takes in an exported graph.

Frozen and spectral layers hold an eager ``method`` (what PyTorch runs fastest: real FFTs for
long transforms) and an ``onnx_method`` (what onnxruntime runs fastest: its ``DFT`` op is one to
two orders of magnitude slower than matmuls there). :func:`onnx_forms` switches every layer to
its ``onnx_method`` for the duration of an export, and puts the eager methods back.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


def layer_forms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer with an eager and an export method."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "onnx_method") and hasattr(m, "method")]


@contextlib.contextmanager
def onnx_forms(model: nn.Module) -> Iterator[dict[str, str]]:
    """Within the block, every frozen / spectral layer computes with its ``onnx_method``; yields
    layer name -> the method it is exported with."""
    saved = {}
    try:
        for name, m in layer_forms(model):
            saved[name] = (m, m.method)
            m.method = m.onnx_method
        yield {name: m.method for name, (m, _) in saved.items()}
    finally:
        for m, method in saved.values():
            m.method = method
