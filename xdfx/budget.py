"""How far each relaxed conv may grow: a budget on the numbers a relaxed model stores.

A conv relaxed with a full-length kernel stores ``C_out C_in/g`` complex gains per frequency,
which grows with the input area (a ResNet at 224x224 would grow tens of times). The policy:
if every layer at full growth fits the budget, every layer grows fully (small nets, PDE
backbones); otherwise pointwise convs stay as they are (they have no extent to grow) and every
other layer's kernel is capped at the largest per-axis size from :attr:`Budget.caps` that fits.
Per-layer overrides (glob, class or predicate, as ``include``/``exclude``) take precedence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from torch import nn

from .errors import XdfxInputError
from .ops.geometry import AxisGeometry
from .ops.monarch import DENSE_UP_TO, balanced_factors
from .ops.xd import XDConv
from .passes.context import Selector, matches

#: Override value that keeps a layer as it is.
KEEP = "keep"
FULL = None


@dataclass(frozen=True)
class Budget:
    """The most numbers a relaxed model may store: ``max(ratio * original, floor)``.

    ``caps``: per-axis kernel sizes tried, largest first, when full growth does not fit.
    ``pointwise``: ``"auto"`` keeps 1x1 convs when the budget binds, ``"relax"`` always relaxes
    them, ``"keep"`` never does. ``overrides``: ``(selector, value)`` pairs, value an int cap,
    ``None`` for full growth or ``"keep"``; the first matching selector wins.
    ``recompute``: whether XD layers recompute their forward in backward instead of storing its
    intermediates (less training memory, about one more forward of time); ``"auto"`` turns it on
    where the budget binds (large inputs), ``True``/``False`` everywhere/nowhere.
    """

    ratio: float = 4.0
    floor: int = 1 << 25
    caps: tuple[int, ...] = (64, 32, 16, 11, 9, 7, 5, 3)
    pointwise: str = "auto"
    overrides: tuple[tuple[Selector, int | str | None], ...] = ()
    recompute: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.recompute not in (True, False, "auto"):
            raise XdfxInputError(f"Budget(recompute={self.recompute!r}): use True, False or 'auto'")
        if self.pointwise not in ("auto", "relax", "keep"):
            raise XdfxInputError(f"Budget(pointwise={self.pointwise!r}): use 'auto', 'relax' or 'keep'")

    def limit(self, original: int) -> int:
        return int(max(self.ratio * original, self.floor))


@dataclass
class ConvSite:
    """One conv to be relaxed, as the policy sees it (before any XD layer is built)."""

    name: str
    module: nn.Module | None
    in_channels: int
    out_channels: int
    groups: int
    geometry: list[AxisGeometry]  # planned at full growth
    external_weight: bool = False
    learned_factors: bool = True
    bias: bool = True

    @property
    def pointwise(self) -> bool:
        return all(g.kernel == 1 for g in self.geometry)

    @property
    def original(self) -> int:
        taps = math.prod(g.kernel for g in self.geometry)
        own = 0 if self.external_weight else self.out_channels * self.in_channels // self.groups * taps
        return own + self._bias

    def numbers(self, cap: int | str | None) -> int:
        """Numbers the XD layer stores with kernels capped at ``cap`` taps per axis (None: full)."""
        if cap == KEEP:
            return self.original
        pairs = self.out_channels * self.in_channels // self.groups
        buffers = [AxisGeometry.buffer(g.n, g.kernel, g.dilation, cap)[0] for g in self.geometry]
        full = all(b == g.n for b, g in zip(buffers, self.geometry))
        if full and not self.external_weight:
            freq = math.prod(g.n for g in self.geometry[:-1]) * (self.geometry[-1].n // 2 + 1)
            kernel = pairs * freq * 2
        else:
            kernel = pairs * math.prod(buffers)
        factors = 0
        if self.learned_factors:
            for g, b in zip(self.geometry, buffers):
                n1, n2 = (1, g.n) if g.n <= DENSE_UP_TO else balanced_factors(g.n)
                factors += 2 * g.n * (n1 + n2 if n1 > 1 else g.n) + (0 if b == g.n else g.n * b)
        return kernel + factors + self._bias

    @property
    def _bias(self) -> int:
        return self.out_channels if self.bias and not self.external_weight else 0


@dataclass
class Plan:
    """What the policy chose for every conv, and the totals against the budget."""

    caps: dict[str, int | str | None] = field(default_factory=dict)  # name -> cap (None: full) or "keep"
    reasons: dict[str, str] = field(default_factory=dict)
    total: int = 0
    original: int = 0
    limit: int = 0
    recompute: bool = False

    def cap(self, name: str, default: int | None) -> int | str | None:
        return self.caps.get(name, default)

    def summary(self) -> str:
        ratio = self.total / max(self.original, 1)
        return (f"budget: the relaxed model stores {self.total:,} numbers ({ratio:.2f}x the original's "
                f"{self.original:,}); limit {self.limit:,}"
                + ("; XD layers recompute their forward in backward (Budget.recompute)" if self.recompute else ""))


def site_geometry(in_sizes: Sequence[int], kernel, stride, dilation, pads, mode) -> list[AxisGeometry]:
    return XDConv.plan_geometry(in_sizes, kernel, stride, dilation, pads, mode, None)


def plan(sites: list[ConvSite], other_numbers: int, budget: Budget | None) -> Plan:
    """Choose every site's cap so that the relaxed model stays within ``budget`` (None: unlimited)."""
    original = other_numbers + sum(s.original for s in sites)
    result = Plan(original=original)
    fixed = {}
    for s in sites:
        for selector, value in (budget.overrides if budget else ()):
            if matches(selector, s.name, s.module):
                fixed[s.name] = value
                result.reasons[s.name] = "override"
                break

    def total(caps: dict) -> int:
        return other_numbers + sum(s.numbers(caps[s.name]) for s in sites)

    caps = {s.name: fixed.get(s.name, FULL) for s in sites}
    result.limit = budget.limit(original) if budget else 0
    binds = budget is not None and total(caps) > result.limit
    result.recompute = budget is not None and (budget.recompute is True or (budget.recompute == "auto" and binds))
    if not binds:
        for s in sites:
            result.reasons.setdefault(s.name, "full growth" if caps[s.name] is None else "override")
        result.caps, result.total = caps, total(caps)
        return result
    free = [s for s in sites if s.name not in fixed]
    for s in free:
        if s.pointwise and budget.pointwise != "relax":
            caps[s.name] = KEEP
            result.reasons[s.name] = "budget: pointwise conv kept (nothing to grow)"
        elif budget.pointwise == "keep" and s.pointwise:
            caps[s.name] = KEEP
    growing = [s for s in free if caps[s.name] != KEEP]
    chosen = None
    for cap in budget.caps:
        for s in growing:
            caps[s.name] = cap
        if total(caps) <= result.limit:
            chosen = cap
            break
    if chosen is None:  # even the smallest cap does not fit: no growth at all
        for s in growing:
            caps[s.name] = 1
    for s in growing:
        result.reasons[s.name] = (f"budget: kernel capped at {caps[s.name]} taps per axis" if chosen is not None
                                  else "budget: no growth fits the budget, the conv's own taps only")
    result.caps, result.total = caps, total(caps)
    return result
