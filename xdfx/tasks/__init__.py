"""Data generators for the FNO benchmark tasks (Burgers 1-d, Darcy flow 2-d, Navier-Stokes 2-d), permuted digits, Bach chorales and heat diffusion on a graph."""

from . import burgers, cache, chorales, darcy, graph_heat, navier_stokes, permuted_digits

__all__ = ["burgers", "cache", "chorales", "darcy", "graph_heat", "navier_stokes", "permuted_digits"]
