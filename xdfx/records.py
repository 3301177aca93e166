"""What the passes record: per-layer rows of relax and harden, printable as tables, and the
provenance of each XD layer (the op it came from), which harden reads back."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from torch import fx, nn

#: ``LayerRecord.status`` values.
STATUSES = ("relaxed", "skipped", "leaf")
# fx.GraphModule.__deepcopy__ restores the attributes listed under this key of ``gm.meta``
_PRESERVED = "_user_preserved_attributes"


#: A hardened model this many times slower than the relaxed one is reported (timing noise stays below).
SLOW_MARGIN = 1.1

@dataclass(frozen=True)
class Origin:
    """The op an XD layer was relaxed from: its op kind (a row of :mod:`xdfx.op_kinds`) and what
    harden needs to give it back."""

    kind: str
    module: nn.Module | None = None  # the original module (pools), a private copy
    function: Callable | None = None  # the original function (functional convs)
    options: dict = field(default_factory=dict)  # the function's non-tensor arguments


@dataclass
class LayerRecord:
    """One call site of an op that relax rewrote, skipped or kept inside a leaf, and why."""

    name: str
    op: str
    status: str  # one of STATUSES
    input_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    detail: str = ""
    error: float | None = None  # relative max error of the rewrite on a random probe
    kind: str = "other"  # the op kind: conv, conv_function, avg_pool, max_pool, conv_transpose, graph_conv, leaf
    origin: Origin | None = field(default=None, repr=False)
    module: str = field(default="", repr=False)  # the model's conv module whose traced-through forward made this call


@dataclass
class HardenRecord:
    """What one XD layer became. Parameter counts include buffers: every number the layer stores."""

    name: str
    form: str
    detail: str
    error: float
    flops_before: float
    flops_after: float
    params_before: int
    params_after: int
    runner_up: str = ""
    runner_up_error: float | None = None
    runner_up_flops: float | None = None
    # snapped forms: the fraction of the layer's energy the projection dropped (its error is above)
    energy_lost: float | None = field(default=None, metadata={"hide_empty": True})
    # the chosen form's cost over the conv the layer was relaxed from (harden's ``cost`` pricing)
    cost_ratio: float | None = field(default=None, metadata={"hide_empty": True})
    # after xdfx.finetune(reference=...): the layer's relative error to the searched layer, same probes
    finetuned_error: float | None = field(default=None, metadata={"hide_empty": True})


@dataclass
class FinetuneRecord:
    """What :func:`xdfx.finetune` did to a hardened model, and the model's error before and after."""

    epochs: int
    steps: int
    seconds: float
    metric_name: str = ""
    metric_before: float | None = None  # on the validation loader
    metric_after: float | None = None
    end_to_end_error_before: float | None = None  # relative max error to the searched model
    end_to_end_error_after: float | None = None


@dataclass
class Report:
    """A list of records with a table view."""

    title: str
    records: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def relaxed(self) -> list[LayerRecord]:
        return [r for r in self.records if getattr(r, "status", "") == "relaxed"]

    def skipped(self) -> list[LayerRecord]:
        return [r for r in self.records if getattr(r, "status", "") == "skipped"]

    def origins(self) -> dict[str, Origin]:
        """Layer name -> where each relaxed layer came from."""
        return {r.name: r.origin for r in self.records if getattr(r, "origin", None) is not None}

    def table(self):
        """A ``rich.table.Table`` with one row per record and one column per shown field."""
        from rich.table import Table

        table = Table(title=self.title)
        shown = [f for f in fields(self.records[0]) if f.repr] if self.records else []
        columns = [f.name for f in shown if not (  # an optional column nobody filled in
            f.metadata.get("hide_empty") and all(getattr(r, f.name) is None for r in self.records))] or ["name"]
        for col in columns:
            table.add_column(col.replace("_", " "), overflow="fold")
        for r in self.records:
            table.add_row(*(_cell(getattr(r, c)) for c in columns))
        return table

    def summary(self) -> str:
        return ""

    def __str__(self) -> str:
        from rich.console import Console

        width = max(120, shutil.get_terminal_size((160, 24)).columns)
        console = Console(width=width, record=True, file=_Null())
        console.print(self.table())
        text = console.export_text()
        return text + (self.summary() + "\n" if self.summary() else "")


@dataclass
class RelaxReport(Report):
    """The relax records plus what the budget policy chose overall."""

    budget: str = ""

    def summary(self) -> str:
        return self.budget


@dataclass
class HardenReport(Report):
    """Per-layer harden records plus the whole-model error on the calibration inputs (if given)."""

    end_to_end_error: float | None = None
    tol: float = 0.0
    kept_xd: list[str] = field(default_factory=list)  # layers left as learnable XD layers
    snap: str = "never"
    finetune: FinetuneRecord | None = None
    max_cost: float | None = None  # the speed target, relative to each layer's original conv
    cost: str = "estimate"
    latency_ms: dict[str, float] = field(default_factory=dict)  # original/relaxed/hardened on example_inputs
    threads: int | None = None

    def snapped(self) -> list[HardenRecord]:
        """The layers projected onto a snapped form (accepted beyond ``tol``)."""
        return [r for r in self.records if r.form.startswith("snapped_")]

    def summary(self) -> str:
        frozen = sum(r.form == "frozen" for r in self.records)
        kept = ", ".join(self.kept_xd) if self.kept_xd else "none"
        line = f"{len(self.records)} XD layers hardened; frozen XD forms: {frozen}; learnable XD layers kept: {kept}"
        if self.end_to_end_error is not None:
            line += f"; end-to-end relative error {self.end_to_end_error:.2e}"
        over = [r.name for r in self.records
                if self.snap != "never" and self.max_cost and r.cost_ratio and r.cost_ratio > self.max_cost]
        if over:
            line += (f"\n{len(over)} layers cost more than max_cost={self.max_cost:g}x their conv even snapped "
                     f"({', '.join(over[:5])}{', ...' if len(over) > 5 else ''})")
        t = self.latency_ms
        if t:
            parts = ", ".join(f"{k} {v:.3g} ms" for k, v in t.items())
            line += f"\nlatency on example_inputs ({self.threads} threads, median after warm-up): {parts}"
            if "original" in t:
                line += f"; hardened / original {t['hardened'] / t['original']:.2f}x"
            if t["hardened"] > SLOW_MARGIN * t["relaxed"]:
                line += "; the hardened model is SLOWER than the relaxed one"
        snapped = self.snapped()
        if snapped:
            line += f"\n{len(snapped)} layers snapped onto cheap forms beyond tol"
            line += "; fine-tune them with xdfx.finetune" if self.finetune is None else ""
        f = self.finetune
        if f is not None:
            line += f"\nfine-tuned {f.steps} steps ({f.epochs} epochs)"
            if f.metric_before is not None:
                line += f"; {f.metric_name} {f.metric_before:.4g} -> {f.metric_after:.4g}"
            if f.end_to_end_error_before is not None:
                line += (f"; end-to-end relative error to the searched model {f.end_to_end_error_before:.2e} -> "
                         f"{f.end_to_end_error_after:.2e}")
        return line


def attach(gm: nn.Module, name: str, value: Any) -> None:
    """Set ``gm.<name> = value`` so that it survives ``copy.deepcopy`` of a GraphModule."""
    setattr(gm, name, value)
    if isinstance(gm, fx.GraphModule):
        gm.meta.setdefault(_PRESERVED, {})[name] = value


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.1e}" if value < 1e4 else f"{value:.3g}"
    return str(value)
