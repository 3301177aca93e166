"""Node classification on Zachary's karate club (ships with networkx): a GCN, relaxed into XD
graph convolutions, trained from one labelled node per club.

    python examples/karate_gcn.py
"""

from __future__ import annotations

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

import xdfx
from xdfx.nn import GraphConv


class GCN(nn.Module):
    def __init__(self, graph: nx.Graph, hidden: int = 8) -> None:
        super().__init__()
        self.gc1 = GraphConv(graph, graph.number_of_nodes(), hidden)
        self.gc2 = GraphConv(graph, hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gc2(torch.relu(self.gc1(x)))


def main() -> None:
    graph = nx.karate_club_graph()
    labels = torch.tensor([0 if graph.nodes[v]["club"] == "Mr. Hi" else 1 for v in graph.nodes])
    x, train = torch.eye(graph.number_of_nodes()), torch.tensor([0, 33])
    for relaxed in (False, True):
        torch.manual_seed(0)
        model = GCN(graph)
        if relaxed:
            model = xdfx.relax(model, x)
            print(model.xdfx_report)
        opt = xdfx.optimizers(model, lambda p: torch.optim.Adam(p, lr=0.02), arch_lr=1e-3)
        for _ in range(100):
            opt.zero_grad()
            F.cross_entropy(model(x)[train], labels[train]).backward()
            opt.step()
        acc = float((model(x).argmax(1) == labels).float().mean())
        print(f"{'XD (relaxed GCN)' if relaxed else 'GCN'}: accuracy {acc:.3f} on all 34 nodes")


if __name__ == "__main__":
    main()
