"""Layers users can put in their models; xdfx.relax knows how to rewrite them."""

from __future__ import annotations

import math

import torch
from torch import nn

from .ops.graph import normalized_adjacency


class GraphConv(nn.Module):
    """Graph convolution on a fixed graph (Kipf & Welling): ``y = A (x W) + b``.

    ``A = D^-1/2 (adj + I) D^-1/2`` is built once from a ``networkx.Graph`` or an adjacency
    tensor and stored as a buffer. ``x`` has nodes on its second-to-last axis.
    """

    def __init__(self, graph, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        if isinstance(graph, torch.Tensor):
            adjacency = graph
        else:
            import networkx as nx

            adjacency = torch.as_tensor(nx.to_numpy_array(graph, weight=None), dtype=torch.float64)
        self.register_buffer("adj", normalized_adjacency(adjacency).to(torch.float32))
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight.T, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.adj @ (x @ self.weight)
        return y if self.bias is None else y + self.bias
