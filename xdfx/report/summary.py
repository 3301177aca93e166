"""Whole-model numbers of a report: parameters, XD-layer FLOPs, chosen forms and latency.

Latency is measured only when the caller passes example inputs: the median of a few forward calls
after a warm-up, in eval mode without gradients, with every module's train flag restored after.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from ..common import eval_mode, median_ms
from ..params import arch_parameters
from .layer import LayerView

LATENCY_RUNS, LATENCY_WARMUP, LATENCY_BUDGET_S = 7, 1, 2.0


@dataclass
class Summary:
    xd_layers: int
    forms: dict[str, int]  # chosen form -> number of layers, most common first
    params_before: int
    params_after: int
    arch_params: int
    xd_flops_before: float
    xd_flops_after: float
    tol: float
    end_to_end_error: float | None
    latency_before_s: float | None = None
    latency_after_s: float | None = None
    latency_runs: list[int] | None = None
    latency_note: str = "latency: not measured (pass example_inputs)"


def _latency(module: nn.Module, inputs: tuple) -> tuple[float, int]:
    """Median seconds per forward (eval mode, no grad) after a warm-up call, and the timed run count."""
    calls = 0

    def forward() -> None:
        nonlocal calls
        calls += 1
        module(*inputs)

    with eval_mode(module), torch.no_grad():
        ms = median_ms(forward, repeats=LATENCY_RUNS, warmup=LATENCY_WARMUP, budget_s=LATENCY_BUDGET_S)
    return ms / 1e3, calls - LATENCY_WARMUP


def summarize(model: nn.Module, hardened: nn.Module, views: list[LayerView], inputs: tuple | None,
              tol: float) -> Summary:
    forms = Counter(v.decision.form for v in views)
    summary = Summary(
        xd_layers=len(views),
        forms=dict(sorted(forms.items(), key=lambda kv: (-kv[1], kv[0]))),
        params_before=sum(p.numel() for p in model.parameters()),
        params_after=sum(p.numel() for p in hardened.parameters()),
        arch_params=sum(p.numel() for p in arch_parameters(model)),
        xd_flops_before=sum(v.decision.flops_before for v in views),
        xd_flops_after=sum(v.decision.flops_after for v in views),
        tol=tol,
        end_to_end_error=hardened.xdfx_report.end_to_end_error,
    )
    if inputs is not None:
        before, runs = _latency(model, inputs)
        after, runs_after = _latency(hardened, inputs)
        summary.latency_before_s, summary.latency_after_s, summary.latency_runs = before, after, [runs, runs_after]
        summary.latency_note = (f"median of {runs} / {runs_after} forward calls on example_inputs after a warm-up, "
                                f"eval mode, no grad, {torch.get_num_threads()} threads")
    return summary
