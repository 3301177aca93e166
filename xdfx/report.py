"""Per-layer records of what a pass did, printable as a table."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerRecord:
    """One node of the graph that a pass rewrote or left alone, and why."""

    name: str
    op: str
    status: str  # "relaxed" | "skipped"
    input_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    detail: str = ""
    error: float | None = None  # relative max error of the rewrite on a random probe

    @property
    def kind(self) -> str:
        """conv, conv_transpose, avg_pool, max_pool, graph_conv or leaf."""
        if self.status == "leaf":
            return "leaf"
        op = self.op.lower()
        if "transpose" in op:
            return "conv_transpose"
        if "pool" in op:
            return "max_pool" if "max" in op else "avg_pool"
        if "graph" in op:
            return "graph_conv"
        return "conv" if "conv" in op else "other"


@dataclass
class Report:
    """A list of :class:`LayerRecord` with a table view."""

    title: str
    records: list[LayerRecord] = field(default_factory=list)

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def relaxed(self) -> list[LayerRecord]:
        return [r for r in self.records if r.status == "relaxed"]

    def skipped(self) -> list[LayerRecord]:
        return [r for r in self.records if r.status == "skipped"]

    def table(self):
        """A ``rich.table.Table`` of the records."""
        from rich.table import Table

        table = Table(title=self.title)
        for col in ("layer", "op", "status", "input", "output", "detail", "rel. error"):
            table.add_column(col, justify="right" if col == "rel. error" else "left")
        for r in self.records:
            table.add_row(
                r.name,
                r.op,
                r.status,
                "x".join(map(str, r.input_shape)) if r.input_shape else "",
                "x".join(map(str, r.output_shape)) if r.output_shape else "",
                r.detail,
                "" if r.error is None else f"{r.error:.1e}",
            )
        return table

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=160, record=True, file=_Null())
        console.print(self.table())
        return console.export_text()


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass
