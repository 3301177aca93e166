"""Heat diffusion on a stochastic block model: a graph regression task with an exact ground truth.

A graph of ``blocks`` communities is drawn with networkx (``stochastic_block_model``); each sample
is a heat distribution ``x`` on a few random source nodes, and its target is the heat after time
``t``: ``y = exp(-t L) x`` with ``L = I - D^-1/2 A D^-1/2`` the normalised Laplacian, computed
with scipy's ``expm_multiply`` (no eigendecomposition). The target is a low-pass filter of the
input on the graph: a GCN's few hops reach a small part of it, a learned spectral filter all of it.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import expm_multiply

__all__ = ["laplacian", "sbm", "generate"]


def sbm(nodes: int = 2000, blocks: int = 4, degree_in: float = 10.0, degree_out: float = 1.0,
        seed: int = 0) -> torch.Tensor:
    """``edge_index`` ``(2, E)`` (both directions) of a stochastic block model with equal blocks, an
    expected ``degree_in`` neighbours inside a node's block and ``degree_out`` outside it."""
    sizes = [nodes // blocks + (i < nodes % blocks) for i in range(blocks)]
    p_in = degree_in / max(sizes[0] - 1, 1)
    p_out = degree_out / max(nodes - sizes[0], 1)
    probs = [[p_in if i == j else p_out for j in range(blocks)] for i in range(blocks)]
    graph = nx.stochastic_block_model(sizes, probs, seed=seed)
    edges = np.array(graph.edges(), dtype=np.int64).reshape(-1, 2).T
    return torch.as_tensor(np.concatenate([edges, edges[::-1]], axis=1))


def laplacian(edge_index: torch.Tensor, nodes: int) -> sp.csr_matrix:
    """The normalised Laplacian ``I - D^-1/2 A D^-1/2`` (isolated nodes: a 1 on the diagonal)."""
    src, dst = edge_index.numpy()
    a = sp.csr_matrix((np.ones(len(src)), (dst, src)), shape=(nodes, nodes))
    deg = np.asarray(a.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    return sp.identity(nodes, format="csr") - sp.diags(inv) @ a @ sp.diags(inv)


def generate(samples: int, nodes: int = 2000, time: float = 5.0, sources: int = 20, blocks: int = 4,
             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(edge_index, x, y)``: the graph, ``samples`` heat sources ``(samples, nodes, 1)`` (``sources``
    random nodes each, amounts uniform in ``[0, 1]``) and the heat after ``time``, float32."""
    rng = np.random.default_rng(seed)
    edge_index = sbm(nodes, blocks, seed=seed)
    x = np.zeros((nodes, samples))
    for s in range(samples):
        x[rng.choice(nodes, size=sources, replace=False), s] = rng.uniform(size=sources)
    y = expm_multiply(-time * laplacian(edge_index, nodes), x)
    to_torch = lambda a: torch.as_tensor(a.T[:, :, None], dtype=torch.float32).contiguous()  # noqa: E731
    return edge_index, to_torch(x), to_torch(y)
