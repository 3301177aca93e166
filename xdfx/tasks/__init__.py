"""Data generators for the FNO benchmark tasks: Burgers 1-d, Darcy flow 2-d, permuted digits."""

from . import burgers, cache, darcy, permuted_digits

__all__ = ["burgers", "cache", "darcy", "permuted_digits"]
