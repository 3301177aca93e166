"""Operators: structured transforms, the XD-operation, and the standard forms harden produces."""

from .frozen import FrozenXD
from .geometry import AxisGeometry, smooth_size
from .graph import XDGraphConv
from .graph_forms import FrozenGraphConv, GraphPolynomial
from .hardened import Gather, LocalPlusModes, Pad, PadTo, Zero, make_conv
from .monarch import FixedMonarch, LinearMap, Monarch
from .spectral import SpectralConv
from .xd import XDConv

__all__ = [
    "AxisGeometry", "FixedMonarch", "FrozenGraphConv", "FrozenXD", "Gather", "GraphPolynomial", "LinearMap",
    "LocalPlusModes", "Monarch", "Pad", "PadTo", "SpectralConv", "XDConv", "XDGraphConv", "Zero", "make_conv",
    "smooth_size",
]
