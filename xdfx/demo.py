"""The end-to-end demo (grows with the pipeline; today: relax and check the warm start)."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from .params import arch_parameters, model_parameters
from .relax import relax


def _reference_models():
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from examples.models import CNN3d, DepthwiseSeparable, ResNetSmall, TCN

    return [
        ("ResNet (2-d, BatchNorm, residuals)", ResNetSmall(), (8, 3, 32, 32)),
        ("TCN (1-d, dilated 'same')", TCN(), (8, 1, 1024)),
        ("MobileNet-style (depthwise, circular)", DepthwiseSeparable(), (8, 3, 33, 31)),
        ("3-d CNN (strided, replicate)", CNN3d(), (2, 1, 12, 10, 9)),
    ]


def run_demo(arch: str = "monarch", seed: int = 0) -> int:
    """Relax the reference models, print each layer's warm-start error and the model's."""
    torch.manual_seed(seed)
    console = Console(width=130)
    summary = Table(title=f"xdfx demo: warm start of relaxed models (arch={arch}, float32)")
    for col in ("model", "XD layers", "arch params", "model params", "max rel. error", "relax time"):
        summary.add_column(col)
    for name, model, shape in _reference_models():
        model.eval()
        x = torch.randn(*shape)
        start = time.perf_counter()
        relaxed = relax(model, (x,), arch=arch)
        elapsed = time.perf_counter() - start
        console.print(relaxed.xdfx_report.table())
        with torch.no_grad():
            y, z = model(x), relaxed(x)
        err = float((y - z).abs().max() / y.abs().max())
        summary.add_row(
            name,
            str(len(relaxed.xdfx_report.relaxed())),
            f"{sum(p.numel() for p in arch_parameters(relaxed)):,}",
            f"{sum(p.numel() for p in model_parameters(relaxed)):,}",
            f"{err:.1e}",
            f"{elapsed:.2f} s",
        )
    console.print(summary)
    console.print("Next stages (search, harden, export) are not built yet; see the open issues.")
    return 0
