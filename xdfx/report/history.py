"""The search history a report plots: ``model.xdfx_history`` checked and turned into a :class:`History`.

Search loops record one entry per epoch in plain lists; the report accepts them only when every
list is present, numeric and of the same length, so a figure never silently drops an epoch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from torch import nn

from ..errors import XdfxInputError

#: Per-epoch lists of ``model.xdfx_history`` (plus the string ``"metric_name"``).
HISTORY_KEYS = ("epoch", "train_loss", "val_metric", "model_lr", "arch_lr")


@dataclass
class History:
    """Per-epoch curves of a search (missing values are NaN)."""

    metric_name: str
    epoch: list[float]
    train_loss: list[float]
    val_metric: list[float]
    model_lr: list[float]
    arch_lr: list[float]

    @property
    def val_label(self) -> str:
        """The validation metric's label, without a second "val" when its name already has one."""
        if re.match(r"val(id(ation)?)?\b|val_", self.metric_name, re.IGNORECASE):
            return self.metric_name
        return f"val {self.metric_name}"


def read_history(model: nn.Module) -> History | None:
    """``model.xdfx_history`` checked and converted to float lists (None when absent)."""
    raw = getattr(model, "xdfx_history", None)
    if raw is None:
        return None
    where = "model.xdfx_history"
    if not isinstance(raw, dict):
        raise XdfxInputError(f"{where} must be a dict of per-epoch lists, got {type(raw).__name__}")
    missing = [k for k in (*HISTORY_KEYS, "metric_name") if k not in raw]
    if missing:
        raise XdfxInputError(f"{where} lacks the keys {missing}; expected {list(HISTORY_KEYS)} and 'metric_name'")
    if not isinstance(raw["metric_name"], str):
        raise XdfxInputError(f"{where}['metric_name'] must be a string, got {type(raw['metric_name']).__name__}")
    curves: dict[str, list[float]] = {}
    for key in HISTORY_KEYS:
        try:
            curves[key] = [math.nan if v is None else float(v) for v in raw[key]]
        except (TypeError, ValueError) as exc:
            raise XdfxInputError(f"{where}[{key!r}] must be a list of numbers: {exc}") from None
    lengths = {k: len(v) for k, v in curves.items()}
    if len(set(lengths.values())) != 1:
        raise XdfxInputError(f"{where} lists must have equal lengths, got {lengths}")
    return History(metric_name=raw["metric_name"], **curves)
