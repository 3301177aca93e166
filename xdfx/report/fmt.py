"""Number formatting shared by the report's tables and figure text ("-" where there is no value)."""

from __future__ import annotations

import math


def num(x) -> str:
    """A count with a k/M/G suffix, three significant digits."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    x = float(x)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def err(x) -> str:
    """A relative error in scientific notation."""
    if x is None:
        return "-"
    return "inf" if not math.isfinite(x) else f"{x:.1e}"


def ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"
