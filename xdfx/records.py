"""Per-layer records of what a pass did, printable as a table."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


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
        """A ``rich.table.Table`` with one row per record and one column per record field."""
        from rich.table import Table

        table = Table(title=self.title)
        columns = [f.name for f in fields(self.records[0])] if self.records else ["name"]
        for col in columns:
            table.add_column(col.replace("_", " "))
        for r in self.records:
            table.add_row(*(_cell(getattr(r, c)) for c in columns))
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


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.1e}" if value < 1e4 else f"{value:.3g}"
    return str(value)
