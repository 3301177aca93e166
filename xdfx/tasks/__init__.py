"""Data generators for the FNO benchmark tasks (Burgers 1-d, Darcy flow 2-d, Navier-Stokes 2-d), permuted digits and Bach chorales."""

from . import burgers, cache, chorales, darcy, navier_stokes, permuted_digits

__all__ = ["burgers", "cache", "chorales", "darcy", "navier_stokes", "permuted_digits"]
