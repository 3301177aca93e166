"""Navier-Stokes 2-d (vorticity on the torus): a circular-conv CNN vs its XD relaxation vs FNO-2d.

    python benchmarks/search_ns.py [--viscosity 1e-3] [--res 64] [--ntrain 1000] [--epochs 50] [--out NAME]

The map from the first ``t_in = 10`` vorticity steps to the next ``--t-out`` steps, one shot: the
10 input steps and 2 grid coordinates are 12 input channels, the ``t_out`` steps the output
channels. This is not FNO's "FNO-2d", which is autoregressive (one step out, fed back for
``t_out`` steps), nor its "FNO-3d" (time as a third convolved axis). Metric: relative L2 over all
``t_out`` steps of a sample (FNO's full-trajectory error), mean over test samples, then mean over
seeds with the spread. Writes benchmarks/results/NAME.{json,md}.

Models (all the FNO layout, width 32, 4 layers): ``cnn`` with 5x5 circular convs as mixers (the
torus is periodic), its XD relaxation (1x1 convs kept; ``xd-fixed`` = ``arch="fixed"``, ``xd`` =
``"monarch"``), and ``fno`` with spectral convs on ``--modes`` modes per axis.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
from benchmarks.search_results import (FNO2d, FNOShapedCNN2d, RESULTS, harden_searched, harden_summary,  # noqa: E402
                                       pointwise, rel_l2_loss, spread, train)
from benchmarks.timing import machine  # noqa: E402
from xdfx.tasks import burgers, navier_stokes  # noqa: E402

T_IN = 10


def data(args) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(n, t_in + 2, res, res)`` (vorticity steps, then x and y) and targets ``(n, t_out, res, res)``."""
    w_in, w_out = navier_stokes.generate(args.ntrain + args.ntest, args.res, viscosity=args.viscosity, t_in=T_IN,
                                         t_out=args.t_out, solver_resolution=args.solver_res)
    w_in, w_out = w_in.permute(0, 3, 1, 2), w_out.permute(0, 3, 1, 2)  # time last -> channels first
    coords = torch.linspace(0, 1, args.res + 1)[:-1]  # periodic grid: 1 is 0
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="ij")).expand(len(w_in), 2, args.res, args.res)
    return torch.cat([w_in, grid], 1).contiguous(), w_out.contiguous()


def per_step_error(model, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Relative L2 of each output step, mean over samples."""
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 50]) for i in range(0, len(x), 50)])
    return [burgers.relative_l2(pred[:, t], y[:, t]) for t in range(y.shape[1])]


def run(args) -> dict:
    start = time.perf_counter()
    x, y = data(args)
    print(f"data {tuple(x.shape)} -> {tuple(y.shape)} in {time.perf_counter() - start:.0f} s", flush=True)
    n = args.ntrain
    test_loader = DataLoader(TensorDataset(x[n:], y[n:]), batch_size=50)
    rows: dict = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for label in args.models.split(","):
            torch.manual_seed(seed)  # same initial weights for the CNN and its relaxations
            if label == "fno":
                model, arch_lr = FNO2d(modes=args.modes, in_channels=T_IN + 2, out_channels=args.t_out), None
            else:
                model = FNOShapedCNN2d(in_channels=T_IN + 2, out_channels=args.t_out, padding_mode="circular")
                arch_lr = None
                if label.startswith("xd"):
                    arch = "fixed" if label == "xd-fixed" else "monarch"
                    model, arch_lr = xdfx.relax(model, x[:2], arch=arch, exclude=[pointwise]), args.arch_lr
            g = torch.Generator().manual_seed(seed)
            train_loader = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=args.batch_size, shuffle=True, generator=g)
            hist, sec = train(model, train_loader, test_loader, rel_l2_loss, burgers.relative_l2, "rel L2", args.epochs,
                              args.lr, arch_lr)
            row = rows.setdefault(label, {"seeds": [], "rel_l2": [], "seconds_per_epoch": [], "per_step": [], "history": []})
            if label.startswith("xd"):
                hard = harden_searched(model, train_loader, x[n:n + 20], rel_l2_loss,
                                       finetune_epochs=args.finetune_epochs)
                row.setdefault("hardened_rel_l2", []).append(sum(per_step_error(hard, x[n:], y[n:])) / args.t_out)
                row.setdefault("forms", []).append(harden_summary(hard))
            row["params"] = sum(p.numel() for p in model.parameters())
            for key, value in (("seeds", seed), ("rel_l2", hist["val_metric"][-1]), ("seconds_per_epoch", sec),
                               ("per_step", per_step_error(model, x[n:], y[n:])), ("history", hist)):
                row[key].append(value)
            hard = f", hardened {row['hardened_rel_l2'][-1]:.4f}" if label.startswith("xd") else ""
            print(f"seed {seed} {label}: rel L2 {hist['val_metric'][-1]:.4f}{hard}, {sec:.1f} s/epoch", flush=True)
    for row in rows.values():
        row["spread"] = spread(row["rel_l2"])
        if "hardened_rel_l2" in row:
            row["hardened_spread"] = spread(row["hardened_rel_l2"])
    return rows


NAMES = {"cnn": "CNN (5x5 circular)", "xd-fixed": "XD `fixed`", "xd": "XD `monarch`", "fno": "FNO-2d"}


def markdown(rows: dict, args) -> str:
    solver = args.solver_res or args.res
    lines = [f"Navier-Stokes, viscosity {args.viscosity:g}, {args.res}x{args.res} (solved on {solver}x{solver}), "
             f"{T_IN} steps in -> {args.t_out} out (one shot), {args.ntrain} train / {args.ntest} test, "
             f"{args.epochs} epochs, batch {args.batch_size}, seeds {args.seeds}; FNO {args.modes} modes.", "",
             "| model | rel. L2 (mean ± std, min-max) | hardened | last-step rel. L2 | s/epoch | params |",
             "|---|---|---|---|---|---|"]
    for label, row in rows.items():
        s = row["spread"]
        last = sum(p[-1] for p in row["per_step"]) / len(row["per_step"])
        sec = sum(row["seconds_per_epoch"]) / len(row["seconds_per_epoch"])
        h = row.get("hardened_spread")
        hard = f"{h['mean']:.4f} ± {h['std']:.4f}" if h else "-"
        lines.append(f"| {NAMES.get(label, label)} | {s['mean']:.4f} ± {s['std']:.4f} ({s['min']:.4f}-{s['max']:.4f}) "
                     f"| {hard} | {last:.4f} | {sec:.1f} | {row['params']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,xd-fixed,xd,fno", help="cnn, xd-fixed, xd (monarch), fno")
    parser.add_argument("--viscosity", type=float, default=1e-3, choices=[1e-3, 1e-4, 1e-5])
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--solver-res", type=int, default=None, help="solver grid (default: --res)")
    parser.add_argument("--t-out", type=int, default=10)
    parser.add_argument("--ntrain", type=int, default=1000)
    parser.add_argument("--ntest", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--modes", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--arch-lr", type=float, default=1e-3)
    parser.add_argument("--finetune-epochs", type=int, default=5, help="after harden, where a layer snapped")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: PyTorch's); 1 on a shared CPU, where spinning threads stall")
    parser.add_argument("--out", default="scratch_search_ns", help="results name (default: untracked scratch)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run(args)
    total = time.perf_counter() - start
    payload = {"machine": machine(), "args": vars(args), "results": rows, "total_seconds": total}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    table = markdown(rows, args)
    (RESULTS / f"{args.out}.md").write_text(table)
    print(table)
    print(f"total {total:.0f} s")


if __name__ == "__main__":
    main()
