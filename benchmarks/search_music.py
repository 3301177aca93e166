"""Next-frame prediction on the Bach chorales: a causal TCN vs its XD relaxation (``fixed``, ``monarch``).

    python benchmarks/search_music.py [--max-chorales 100] [--epochs 15] [--seeds 0,1,2] [--out NAME]

Frame-level NLL (``xdfx.tasks.chorales.frame_nll``, nats per frame, padding masked) on the test
split, mean over seeds with the spread; seconds per epoch. Writes benchmarks/results/NAME.{json,md}.

Fixed length: every chorale is cut into pieces of at most ``L + 1`` frames (consecutive pieces
share their boundary frame, so every transition is predicted exactly once; the context restarts at
a cut) and zero-padded to ``L`` steps with a mask. ``L`` is the 95th percentile of the training
chorales' transitions, rounded up to a multiple of 8 (``--length`` overrides it).

Causality. XD grows each kernel from its first tap towards later positions of the transform, and a
grown kernel of a left-padded causal conv reads future frames (the target leaks). So the TCN runs
on the time-reversed roll with right-padded convs (the same function as the usual causal TCN, and
the same weights): there the first tap is the current frame and growth reaches further into the
past. For XD the right padding is ``L - 1`` frames and ``max_kernel_size=L``, so a grown kernel
spans the whole past and never wraps around into the future. ``arch="fixed"`` is then exactly
causal; ``arch="monarch"`` learns K and M (and L), which mix all positions, so it is not causal:
every trained model's ``leak`` (the largest gradient of an output frame with respect to a later
input frame, relative to the largest with respect to earlier ones) is measured and reported, and a
model with a leak above 1e-4 is marked as not a valid next-frame predictor.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
from benchmarks.search_results import RESULTS, harden_searched, harden_summary, pointwise, spread, train  # noqa: E402
from benchmarks.timing import machine  # noqa: E402
from xdfx.search import evaluate  # noqa: E402
from xdfx.tasks import chorales  # noqa: E402

KEYS = chorales.N_KEYS
LEAK_TOL = 1e-4


class CausalTCN(nn.Module):
    """Causal TCN (Bai et al. 2018): 1x1 lift, residual blocks of two dilated convs, 1x1 head to 88 logits.

    Output frame t depends on input frames <= t only. Computed on the time-reversed sequence with
    right zero-padding (see the module notes); ``horizon`` (default: the kernel span) is how many
    frames the padding lets a grown kernel reach.
    """

    def __init__(self, width: int = 64, kernel: int = 3, dilations=(1, 2, 4, 8), horizon: int | None = None) -> None:
        super().__init__()
        self.lift = nn.Conv1d(KEYS, width, 1)
        self.convs1 = nn.ModuleList(nn.Conv1d(width, width, kernel, dilation=d) for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(width, width, kernel, dilation=d) for d in dilations)
        self.head = nn.Conv1d(width, KEYS, 1)
        spans = [(kernel - 1) * d for d in dilations]
        self.pads = [max(s, (horizon or 0) - 1) for s in spans]
        self.crops = [p - s for p, s in zip(self.pads, spans)]  # extra outputs of the longer padding, cut off

    def _conv(self, conv: nn.Module, h: torch.Tensor, pad: int, crop: int) -> torch.Tensor:
        out = conv(F.pad(h, (0, pad)))
        return out[..., :-crop] if crop else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lift(x.flip(-1))
        for c1, c2, pad, crop in zip(self.convs1, self.convs2, self.pads, self.crops):
            r = F.relu(self._conv(c1, h, pad, crop))
            r = F.relu(self._conv(c2, r, pad, crop))
            h = F.relu(h + r)
        return self.head(h).flip(-1)


# ----------------------------------------------------------------------------- data
def pieces(rolls: list[torch.Tensor], length: int) -> list[torch.Tensor]:
    """Cut rolls into pieces of at most ``length + 1`` frames sharing boundary frames (each transition once)."""
    out = []
    for roll in rolls:
        for start in range(0, len(roll) - 1, length):
            out.append(roll[start : start + length + 1])
    return out


def tensors(rolls: list[torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(n, 88, L)`` and targets with the mask packed as an 89th channel ``(n, 89, L)``."""
    x, y, mask = chorales.pad_batch(pieces(rolls, length))
    extra = length - x.shape[-1]
    x, y, mask = F.pad(x, (0, extra)), F.pad(y, (0, extra)), F.pad(mask, (0, extra))
    return x, torch.cat([y, mask[:, None].to(y.dtype)], 1)


def masked_nll(logits: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """``chorales.frame_nll`` with the mask unpacked from the target's last channel."""
    return chorales.frame_nll(logits, packed[:, :KEYS], packed[:, KEYS])


def causality_leak(model: nn.Module, x: torch.Tensor) -> float:
    """max over a few frames t of max|d out[t] / d x[s > t]| / max|d out[t] / d x[s <= t]|."""
    model.eval()
    x = x.clone().requires_grad_(True)
    out = model(x)
    worst = 0.0
    for t in sorted({0, x.shape[-1] // 3, 2 * x.shape[-1] // 3, x.shape[-1] - 2}):
        (g,) = torch.autograd.grad(out[..., t].sum(), x, retain_graph=True)
        past, future = g[..., : t + 1].abs().max(), g[..., t + 1 :].abs().max()
        worst = max(worst, float(future / past.clamp_min(1e-30)))
    return worst


# ----------------------------------------------------------------------------- run
def run(args) -> dict:
    data = chorales.load(step=args.step, max_chorales=args.max_chorales)
    steps = np.array([len(r) - 1 for r in data["train"]])
    length = args.length or int(8 * math.ceil(np.percentile(steps, 95) / 8))
    (xtr, ytr), (xva, yva), (xte, yte) = (tensors(data[s], length) for s in chorales.SPLITS)
    print(f"chorales train/valid/test {[len(data[s]) for s in chorales.SPLITS]}, L={length} "
          f"(95th pct of train transitions {np.percentile(steps, 95):.0f}, max {steps.max()}), "
          f"pieces {len(xtr)}/{len(xva)}/{len(xte)}", flush=True)
    valid_loader = DataLoader(TensorDataset(xva, yva), batch_size=len(xva))  # one batch: exact frame-weighted mean
    test_loader = DataLoader(TensorDataset(xte, yte), batch_size=len(xte))
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict = {}
    for seed in seeds:
        for label in args.models.split(","):
            torch.manual_seed(seed)  # same initial weights for every model of a seed
            xd = label.startswith("xd")
            model = CausalTCN(args.width, args.kernel, tuple(int(d) for d in args.dilations.split(",")),
                              horizon=length if xd else None)
            if xd:
                arch = "fixed" if label == "xd-fixed" else "monarch"
                model = xdfx.relax(model, xtr[:2], arch=arch, max_kernel_size=length, exclude=[pointwise])
            g = torch.Generator().manual_seed(seed)
            train_loader = DataLoader(TensorDataset(xtr, ytr), batch_size=args.batch_size, shuffle=True, generator=g)
            lr = args.xd_lr if xd and args.xd_lr else args.lr
            hist, sec = train(model, train_loader, valid_loader, masked_nll, masked_nll, "valid NLL", args.epochs,
                              lr, args.arch_lr if xd else None)
            test = evaluate(model, test_loader, masked_nll)
            leak = causality_leak(model, xte[:1])
            row = rows.setdefault(label, {"seeds": [], "test_nll": [], "valid_nll": [], "seconds_per_epoch": [],
                                          "leak": [], "history": []})
            if xd:  # exact forms only where the target allows: a truncated spectrum is not causal
                hard = harden_searched(model, train_loader, xtr[:16], masked_nll, finetune_epochs=args.finetune_epochs,
                                       max_cost=args.harden_max_cost)
                row.setdefault("hardened_nll", []).append(evaluate(hard, test_loader, masked_nll))
                row.setdefault("hardened_leak", []).append(causality_leak(hard, xte[:1]))
                row.setdefault("forms", []).append(harden_summary(hard))
            row["params"] = sum(p.numel() for p in model.parameters())
            for key, value in (("seeds", seed), ("test_nll", test), ("valid_nll", hist["val_metric"][-1]),
                               ("seconds_per_epoch", sec), ("leak", leak), ("history", hist)):
                row[key].append(value)
            print(f"seed {seed} {label}: test NLL {test:.3f}, valid NLL {hist['val_metric'][-1]:.3f}, "
                  f"{sec:.1f} s/epoch, leak {leak:.1e}", flush=True)
    for row in rows.values():
        row["test"], row["valid"] = spread(row["test_nll"]), spread(row["valid_nll"])
        row["causal"] = max(row["leak"]) <= LEAK_TOL
        if "hardened_nll" in row:
            row["hardened"] = spread(row["hardened_nll"])
            row["hardened_causal"] = max(row["hardened_leak"]) <= LEAK_TOL
    return {"length": length, "pieces": [len(xtr), len(xva), len(xte)],
            "chorales": [len(data[s]) for s in chorales.SPLITS], "models": rows}


NAMES = {"tcn": "TCN (backbone)", "xd-fixed": "XD `fixed`", "xd": "XD `monarch`"}


def markdown(result: dict, args) -> str:
    c, p = result["chorales"], result["pieces"]
    lines = [f"Bach chorales ({args.step} steps), {c[0]}/{c[1]}/{c[2]} train/valid/test chorales cut into "
             f"{p[0]}/{p[1]}/{p[2]} pieces of L={result['length']} steps; {args.epochs} epochs, batch "
             f"{args.batch_size}, seeds {args.seeds}; TCN width {args.width}, kernel {args.kernel}, dilations "
             f"{args.dilations}.", "",
             "| model | test NLL (mean ± std, min-max) | hardened (causal) | valid NLL | s/epoch | params | causal (leak) |",
             "|---|---|---|---|---|---|---|"]
    for label, row in result["models"].items():
        t, v = row["test"], row["valid"]
        sec = sum(row["seconds_per_epoch"]) / len(row["seconds_per_epoch"])
        causal = f"yes ({max(row['leak']):.0e})" if row["causal"] else f"**no** ({max(row['leak']):.1e}): NLL not valid"
        h = row.get("hardened")
        hard = f"{h['mean']:.3f} ± {h['std']:.3f} ({'yes' if row['hardened_causal'] else '**no**'})" if h else "-"
        lines.append(f"| {NAMES.get(label, label)} | {t['mean']:.3f} ± {t['std']:.3f} ({t['min']:.3f}-{t['max']:.3f}) "
                     f"| {hard} | {v['mean']:.3f} | {sec:.1f} | {row['params']:,} | {causal} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tcn,xd-fixed,xd", help="tcn, xd-fixed, xd (monarch)")
    parser.add_argument("--max-chorales", type=int, default=None, help="first N chorales of the split permutation")
    parser.add_argument("--step", default="quarter")
    parser.add_argument("--length", type=int, default=None, help="steps per piece (default: 95th pct, multiple of 8)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--dilations", default="1,2,4,8")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--arch-lr", type=float, default=1e-3)
    parser.add_argument("--xd-lr", type=float, default=None, help="weights' learning rate of the XD models (default --lr)")
    parser.add_argument("--finetune-epochs", type=int, default=5, help="after harden, where a layer snapped")
    parser.add_argument("--harden-max-cost", type=float, default=10.0,
                        help="harden's speed target; high enough to keep the exact (causal) FFT forms")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: PyTorch's); 1 on a shared CPU, where spinning threads stall")
    parser.add_argument("--out", default="scratch_search_music", help="results name (default: untracked scratch)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args)
    result["total_seconds"] = time.perf_counter() - start
    payload = {"machine": machine(), "args": vars(args), "results": result}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    table = markdown(result, args)
    (RESULTS / f"{args.out}.md").write_text(table)
    print(table)
    print(f"total {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
