"""Heat diffusion on a stochastic block model: a plain PyG GCN vs its XD relaxation, searched, then hardened.

    python benchmarks/bench_graph.py [--nodes 2000] [--epochs 40] [--threads 1] [--out NAME]

The task (``xdfx.tasks.graph_heat``): each sample is heat on 20 random nodes of a 4-block SBM
graph, the target the heat after time ``--time`` (``exp(-t L) x``, exact). Every model is the same
two-layer PyG GCN (GCNConv 1 -> hidden -> 1, ReLU between), trained with the same loss (relative
L2), epochs, batches and seed:

- ``gcn``: the plain PyG model;
- ``xd``: ``xdfx.relax`` of it (K, L, M learnable, 3 taps), searched with ``xdfx.search``;
- ``xd-poly``: relaxed with ``arch="fixed"`` and ``--taps`` polynomial taps: only the taps are
  searched, so the layers stay polynomials in the graph;
- ``... hardened``: ``xdfx.harden`` of each (``xd`` becomes the frozen eigenbasis product, as its
  K and M moved; ``xd-poly`` becomes message passing over the edges).

Prints the test error and latency ratios against the GCN and writes
benchmarks/results/NAME.{json,md} (default NAME: an untracked scratch file).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
from benchmarks.search_results import RESULTS, rel_l2_loss  # noqa: E402
from benchmarks.timing import interleaved, machine  # noqa: E402
from xdfx.passes.harden_context import stored_numbers  # noqa: E402
from xdfx.search import optimizers, search  # noqa: E402
from xdfx.tasks import burgers, graph_heat  # noqa: E402

from torch_geometric.nn import GCNConv  # noqa: E402  (the `graph` extra)


class GCN(nn.Module):
    """Kipf & Welling's two-layer GCN, the graph as a buffer."""

    def __init__(self, edge_index: torch.Tensor, hidden: int) -> None:
        super().__init__()
        self.register_buffer("edges", edge_index)
        self.conv1 = GCNConv(1, hidden)
        self.conv2 = GCNConv(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x, self.edges)), self.edges)


def fit(model: nn.Module, loader: DataLoader, args) -> float:
    """Train with the search loop (weights and, if any, architecture); seconds per epoch."""
    opt = optimizers(model, lambda p: torch.optim.Adam(p, lr=args.lr), arch_lr=args.arch_lr, scale_kernel_lr=False)
    start = time.perf_counter()
    search(model, loader, rel_l2_loss, args.epochs, opt=opt, progress=False)
    return (time.perf_counter() - start) / args.epochs


def test_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return burgers.relative_l2(model(x), y)


def run(args) -> dict:
    start = time.perf_counter()
    edges, x, y = graph_heat.generate(args.train + args.test, args.nodes, args.time, seed=args.seed)
    print(f"graph: {args.nodes} nodes, {edges.shape[1]} directed edges; {args.train}/{args.test} samples "
          f"({time.perf_counter() - start:.1f} s)", flush=True)
    train = DataLoader(TensorDataset(x[: args.train], y[: args.train]), batch_size=args.batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(args.seed))
    x_test, y_test = x[args.train :], y[args.train :]
    probe = x[: args.batch_size]
    rows: dict[str, dict] = {}
    models: dict[str, nn.Module] = {}

    torch.manual_seed(args.seed)
    backbone = GCN(edges, args.hidden)
    variants = {"gcn": lambda m: m,
                "xd": lambda m: xdfx.relax(m, probe, arch="monarch"),
                "xd-poly": lambda m: xdfx.relax(m, probe, arch="fixed", max_kernel_size=args.taps)}
    for name in args.models.split(","):
        began = time.perf_counter()
        torch.manual_seed(args.seed)
        model = variants[name](copy.deepcopy(backbone))  # the same initial weights for every variant
        relax_s = time.perf_counter() - began
        per_epoch = fit(model, train, args)
        err = test_error(model, x_test, y_test)
        rows[name] = {"test_rel_l2": err, "seconds_per_epoch": per_epoch, "relax_seconds": relax_s,
                      "stored_numbers": stored_numbers(model)}
        models[name] = model
        print(f"{name}: test rel L2 {err:.4f}, {per_epoch:.1f} s/epoch", flush=True)
        if name != "gcn":
            began = time.perf_counter()
            hard = xdfx.harden(model, example_inputs=(probe,))
            forms = sorted({r.form for r in hard.xdfx_report})
            err_h = test_error(hard, x_test, y_test)
            rows[f"{name} hardened"] = {"test_rel_l2": err_h, "forms": forms,
                                        "harden_seconds": time.perf_counter() - began,
                                        "end_to_end_error": hard.xdfx_report.end_to_end_error,
                                        "stored_numbers": stored_numbers(hard)}
            models[f"{name} hardened"] = hard
            print(f"{name} hardened ({', '.join(forms)}): test rel L2 {err_h:.4f}", flush=True)
    batch = x_test[: args.batch_size]
    for m in models.values():
        m.eval()
    with torch.no_grad():
        times = interleaved({k: (lambda m=m: m(batch)) for k, m in models.items()}, rounds=args.rounds, warmup=2)
    for k, t in times.items():
        rows[k]["forward_ms"] = 1e3 * t
    return rows


def markdown(rows: dict, args) -> str:
    base = rows["gcn"]
    lines = [f"Heat diffusion (t = {args.time}) on a {args.nodes}-node 4-block SBM, {args.train} train / {args.test} test "
             f"samples, {args.epochs} epochs, batch {args.batch_size}, seed {args.seed}; forward = one batch of "
             f"{args.batch_size} samples.", "",
             "| model | test rel. L2 | vs GCN | forward ms | vs GCN | stored numbers | form |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        forms = ", ".join(row.get("forms", [])) or ("PyG GCNConv" if name == "gcn" else "XD (relaxed, searched)")
        lines.append(f"| {name} | {row['test_rel_l2']:.4f} | {row['test_rel_l2'] / base['test_rel_l2']:.3f}x | "
                     f"{row['forward_ms']:.2f} | {row['forward_ms'] / base['forward_ms']:.1f}x | "
                     f"{row['stored_numbers']:,} | {forms} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gcn,xd,xd-poly")
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--time", type=float, default=5.0, help="diffusion time t")
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--taps", type=int, default=8, help="polynomial taps of xd-poly")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--arch-lr", type=float, default=1e-4)
    parser.add_argument("--rounds", type=int, default=10, help="timing rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared CPU)")
    parser.add_argument("--out", default="scratch_bench_graph", help="results name (default: untracked scratch)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run(args)
    total = time.perf_counter() - start
    table = markdown(rows, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "args": vars(args), "results": rows, "total_seconds": total}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    (RESULTS / f"{args.out}.md").write_text(table)
    print(table)
    print(f"total {total:.0f} s")


if __name__ == "__main__":
    main()
