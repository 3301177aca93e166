"""Operators: structured transforms and the XD-operation."""

from .geometry import AxisGeometry, smooth_size
from .monarch import Monarch
from .xd import XDConv

__all__ = ["AxisGeometry", "Monarch", "XDConv", "smooth_size"]
