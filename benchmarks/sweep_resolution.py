"""Error against grid resolution: the CNN backbone, XD from it (``monarch``, ``fixed``) and FNO, over seeds.

    python benchmarks/sweep_resolution.py --task burgers --res 256,512,1024,2048 --budget full --epochs 60 \
        --out sweep_burgers_e60
    python benchmarks/sweep_resolution.py --task darcy --res 64,128 --out sweep_darcy

Every (resolution, model, seed) trains for the same epochs on the same samples. Burgers solves
every sample once on a ``--solver-res`` grid and subsamples it, so each resolution sees the same
functions (the FNO setup); Darcy solves each resolution on its own grid. The seed sets the
weights' initialisation and the batch order; the data are fixed. XD models are relaxed with the
default budget (its choice is recorded), searched, hardened (``snap="auto"``) and, where a layer
snapped, fine-tuned for ``--finetune-epochs``. One JSON row is written per run as it finishes
(a rerun skips the rows already there), and benchmarks/results/NAME.md holds the table.
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
from benchmarks.search_results import (FNO1d, FNO2d, FNOShapedCNN, FNOShapedCNN2d, RESULTS, harden_searched,  # noqa: E402
                                       harden_summary, pointwise, rel_l2_loss, spread, train)
from benchmarks.timing import machine  # noqa: E402
from xdfx.tasks import burgers, darcy  # noqa: E402

LABELS = {"cnn": "CNN backbone", "xd": "XD `monarch`", "xd-fixed": "XD `fixed` (default)", "fno": "FNO",
          "fno-neuralop": "FNO (neuraloperator 2.0)",
          # a merged run of xd-fixed under the default budget where it caps kernels (the others grow fully)
          "xd-fixed-capped": "XD `fixed`, default budget (kernels capped)"}


def burgers_data(res: int, args) -> tuple[torch.Tensor, torch.Tensor]:
    u0, u1 = burgers.generate(args.ntrain + args.ntest, res, seed=0, solver_resolution=args.solver_res)
    grid = torch.linspace(0, 1, res + 1)[:-1].expand(len(u0), 1, res)
    return torch.cat([u0[:, None], grid], 1).contiguous(), u1[:, None].contiguous()


def darcy_data(res: int, args) -> tuple[torch.Tensor, torch.Tensor]:
    a, u = darcy.generate(args.ntrain + args.ntest, res, seed=0)
    mean, std = a[: args.ntrain].mean(), a[: args.ntrain].std()
    coords = torch.linspace(0, 1, res)
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="ij")).expand(len(a), 2, res, res)
    return torch.cat([((a - mean) / std)[:, None], grid], 1).contiguous(), u[:, None].contiguous()


def neuralop_fno(dims: int, width: int, in_channels: int) -> torch.nn.Module:
    """neuraloperator's FNO (``make fno-reference`` installs it): 16 Fourier modes per axis as in the
    project's FNO (neuraloperator counts both signs: ``n_modes=32``), ``width`` hidden channels, 4
    layers, its defaults otherwise (channel MLP, soft-gating skips); the inputs already hold the
    grid, so no positional embedding is added."""
    try:
        from neuralop.models import FNO
    except ImportError as err:
        raise SystemExit(f"fno-neuralop needs neuraloperator: run `make fno-reference` ({err})") from None
    return FNO(n_modes=(32,) * dims if dims == 1 else (24,) * dims, hidden_channels=width, in_channels=in_channels,
               out_channels=1, n_layers=4, positional_embedding=None)


TASKS = {
    "burgers": {"data": burgers_data, "cnn": lambda w: FNOShapedCNN(width=w), "fno": lambda w: FNO1d(width=w),
                "fno-neuralop": lambda w: neuralop_fno(1, w, 2)},
    "darcy": {"data": darcy_data, "cnn": lambda w: FNOShapedCNN2d(width=w), "fno": lambda w: FNO2d(width=w),
              "fno-neuralop": lambda w: neuralop_fno(2, w, 3)},
}


def run(task: str, res: int, label: str, seed: int, x: torch.Tensor, y: torch.Tensor, args) -> dict:
    ntrain = args.ntrain
    g = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(TensorDataset(x[:ntrain], y[:ntrain]), batch_size=args.batch, shuffle=True, generator=g)
    test_loader = DataLoader(TensorDataset(x[ntrain:], y[ntrain:]), batch_size=50)
    torch.manual_seed(seed)
    spec = TASKS[task]
    row: dict = {"task": task, "res": res, "model": label, "seed": seed}
    if label.startswith("fno"):
        model, arch_lr = spec[label](args.width), None
    else:
        model, arch_lr = spec["cnn"](args.width), None
        if label.startswith("xd"):
            budget = None if args.budget == "full" else xdfx.Budget()
            model = xdfx.relax(model, x[:2], arch="fixed" if label == "xd-fixed" else "monarch", exclude=[pointwise],
                               budget=budget)
            arch_lr = args.arch_lr
            row["budget"] = model.xdfx_report.summary().splitlines()[-1]
    hist, sec = train(model, train_loader, test_loader, rel_l2_loss, burgers.relative_l2, "rel L2", args.epochs,
                      args.lr, arch_lr)
    row.update(error=hist["val_metric"][-1], seconds_per_epoch=sec, params=sum(p.numel() for p in model.parameters()),
               curve=hist["val_metric"])
    if label.startswith("xd"):
        start = time.perf_counter()
        hard = harden_searched(model, train_loader, x[ntrain:ntrain + 20], rel_l2_loss, tol=args.harden_tol,
                               energy=args.energy, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr)
        with torch.no_grad():
            row["hardened_error"] = float(sum(burgers.relative_l2(hard(a), b) * len(a) for a, b in test_loader)
                                          / (len(x) - ntrain))
        row["harden_seconds"] = time.perf_counter() - start
        row["forms"] = harden_summary(hard)
        row["snapped_layers"] = len(hard.xdfx_report.snapped())
    return row


def markdown(rows: list[dict], args) -> str:
    resolutions = sorted({r["res"] for r in rows})
    models = [m for m in LABELS if any(r["model"] == m for r in rows)]
    seeds = sorted({r["seed"] for r in rows})
    head = (f"{args.task}: width {args.width}, {args.ntrain} train / {args.ntest} test samples, {args.epochs} epochs, "
            f"batch {args.batch}, relax budget {args.budget}, "
            f"Adam lr {args.lr} (arch lr {args.arch_lr}); seeds {','.join(map(str, seeds))}; test relative L2, "
            "mean ± std over seeds. XD hardened with snap='auto' "
            f"(tol {args.harden_tol}, energy {args.energy}), fine-tuned {args.finetune_epochs} epochs where a layer snapped.")
    lines = [head, "", "| model | " + " | ".join(str(r) for r in resolutions) + " | max/min over resolutions |",
             "|---|" + "---|" * (len(resolutions) + 1)]

    def cell(values: list[float]) -> str:
        if not values:
            return "-"
        s = spread(values)
        return f"{s['mean']:.4f} ± {s['std']:.4f}" + ("" if s["n"] == len(seeds) else f" (n={s['n']})")

    for m in models:
        for key, suffix in (("error", ""), ("hardened_error", ", hardened")):
            per_res = [[r[key] for r in rows if r["model"] == m and r["res"] == res and key in r] for res in resolutions]
            if not any(per_res):
                continue
            means = [spread(v)["mean"] for v in per_res if v]
            flat = f"{max(means) / min(means):.2f}x" if len(means) > 1 else "-"
            lines.append(f"| {LABELS[m]}{suffix} | " + " | ".join(cell(v) for v in per_res) + f" | {flat} |")
    lines += ["", "Seconds per epoch (mean over seeds; the machine also ran other jobs):", "",
              "| model | " + " | ".join(str(r) for r in resolutions) + " |", "|---|" + "---|" * len(resolutions)]
    for m in models:
        per_res = [[r["seconds_per_epoch"] for r in rows if r["model"] == m and r["res"] == res] for res in resolutions]
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{spread(v)['mean']:.1f}" if v else "-" for v in per_res) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="burgers", choices=sorted(TASKS))
    parser.add_argument("--res", default="256,512,1024,2048")
    parser.add_argument("--models", default="cnn,xd,xd-fixed,fno")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ntrain", type=int, default=200)
    parser.add_argument("--ntest", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--width", type=int, default=32, help="channels of every model (FNO's paper: 64 in 1-d)")
    parser.add_argument("--budget", default="default", choices=["default", "full"],
                        help="relax's budget: xdfx.Budget() or None (every kernel grows to the full length)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--arch-lr", type=float, default=1e-3)
    parser.add_argument("--solver-res", type=int, default=2048, help="Burgers: the grid every sample is solved on")
    parser.add_argument("--harden-tol", type=float, default=1e-3)
    parser.add_argument("--energy", type=float, default=0.9999)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="scratch_sweep")
    parser.add_argument("--merge", default="", help="comma-separated result names whose rows join --out's (runs of "
                        "other seeds in parallel processes); nothing is trained")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = RESULTS / f"{args.out}.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    rows = saved["rows"] if saved else []
    if args.merge:
        have = {(r["res"], r["model"], r["seed"]) for r in rows}
        sources = [f"{args.out} (budget {saved['args']['budget']})"]
        for name in args.merge.split(","):
            merged = json.loads((RESULTS / f"{name}.json").read_text())
            rows += [r for r in merged["rows"] if (r["res"], r["model"], r["seed"]) not in have]
            sources.append(f"{name} (budget {merged['args']['budget']}, models {merged['args']['models']}, "
                           f"seeds {merged['args']['seeds']}, resolutions {merged['args']['res']})")
        saved["rows"] = rows
        saved["args"]["seeds"] = ",".join(str(s) for s in sorted({r["seed"] for r in rows}))
        saved["merged_from"] = sources
        path.write_text(json.dumps(saved, indent=1) + "\n")
        text = markdown(rows, argparse.Namespace(**saved["args"])) + "\nRows merged from: " + "; ".join(sources) + ".\n"
        (RESULTS / f"{args.out}.md").write_text(text)
        print(text)
        return
    done = {(r["res"], r["model"], r["seed"]) for r in rows}
    data = {res: TASKS[args.task]["data"](res, args) for res in map(int, args.res.split(","))}
    for seed in map(int, args.seeds.split(",")):  # seed-major: a cut-short run still covers every resolution
        for res, (x, y) in data.items():
            for label in args.models.split(","):
                if (res, label, seed) in done:
                    continue
                row = run(args.task, res, label, seed, x, y, args)
                rows.append(row)
                hard = f", hardened {row['hardened_error']:.4f}" if "hardened_error" in row else ""
                print(f"{args.task} {res} {label} seed {seed}: {row['error']:.4f}{hard}, "
                      f"{row['seconds_per_epoch']:.1f} s/epoch", flush=True)
                path.write_text(json.dumps({"machine": machine(), "args": vars(args), "rows": rows}, indent=1) + "\n")
                (RESULTS / f"{args.out}.md").write_text(markdown(rows, args))
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
