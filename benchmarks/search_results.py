"""Backbone vs its XD relaxation vs a reference, same budget and seeds, on the project's tasks.

    python benchmarks/search_results.py --tasks burgers,darcy,digits [--epochs 100] [--ntrain 1000]

Writes benchmarks/results/search_results.{json,md} (one row per task) and, for Burgers, the
searched model's harden report and a training-curve figure under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
from benchmarks.timing import machine  # noqa: E402
from xdfx.search import optimizers, search  # noqa: E402
from xdfx.tasks import burgers, darcy, permuted_digits  # noqa: E402

RESULTS = Path(__file__).parent / "results"


# ----------------------------------------------------------------------------- models
class OperatorNet(nn.Module):
    """The FNO layout: lift, layers of ``mixer(h) + pointwise(h)`` with GELU between, projection.

    The mixer is what the compared models differ in: a 5-tap conv (the CNN backbone) or a
    spectral convolution (the FNO reference).
    """

    def __init__(self, dims: int, width: int, mixers: list[nn.Module], in_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        conv = (nn.Conv1d, nn.Conv2d)[dims - 1]
        self.lift = conv(in_channels, width, 1)
        self.mixers = nn.ModuleList(mixers)
        self.points = nn.ModuleList(conv(width, width, 1) for _ in mixers)
        self.proj1 = conv(width, 128, 1)
        self.proj2 = conv(128, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lift(x)
        for i, (mixer, point) in enumerate(zip(self.mixers, self.points)):
            h = mixer(h) + point(h)
            if i < len(self.mixers) - 1:
                h = F.gelu(h)
        return self.proj2(F.gelu(self.proj1(h)))


def FNOShapedCNN(width: int = 64, layers: int = 4, kernel: int = 5, in_channels: int = 2) -> OperatorNet:
    """The 1-d backbone: the FNO layout with 5-tap circular convs for the spectral convolutions."""
    convs = [nn.Conv1d(width, width, kernel, padding=kernel // 2, padding_mode="circular") for _ in range(layers)]
    return OperatorNet(1, width, convs, in_channels)


def FNOShapedCNN2d(width: int = 32, layers: int = 4, kernel: int = 5, in_channels: int = 3, out_channels: int = 1,
                   padding_mode: str = "zeros") -> OperatorNet:
    """The 2-d backbone: 5x5 convs, zero-padded by default (Darcy has a Dirichlet boundary), ``"circular"`` on a torus."""
    convs = [nn.Conv2d(width, width, kernel, padding=kernel // 2, padding_mode=padding_mode) for _ in range(layers)]
    return OperatorNet(2, width, convs, in_channels, out_channels)


class SpectralConv1d(nn.Module):
    """FNO's spectral convolution (Li et al. 2021): a learned diagonal on the lowest modes."""

    def __init__(self, width: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (width * width)
        self.weight = nn.Parameter(scale * torch.randn(width, width, modes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = torch.fft.rfft(x)
        w = torch.view_as_complex(self.weight)
        out = torch.einsum("bim,iom->bom", xf[..., : self.modes], w)
        out = torch.cat([out, out.new_zeros(*out.shape[:2], xf.shape[-1] - self.modes)], -1)
        return torch.fft.irfft(out, n=x.shape[-1])


class SpectralConv2d(nn.Module):
    """FNO's 2-d spectral convolution: learned diagonals on the lowest modes of both axes."""

    def __init__(self, width: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (width * width)
        self.w1 = nn.Parameter(scale * torch.randn(width, width, modes, modes, 2))
        self.w2 = nn.Parameter(scale * torch.randn(width, width, modes, modes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, (h, w) = self.modes, x.shape[-2:]
        xf = torch.fft.rfft2(x)
        top = torch.einsum("bixy,ioxy->boxy", xf[:, :, :m, :m], torch.view_as_complex(self.w1))
        bottom = torch.einsum("bixy,ioxy->boxy", xf[:, :, -m:, :m], torch.view_as_complex(self.w2))
        middle = top.new_zeros(top.shape[0], top.shape[1], h - 2 * m, m)
        out = torch.cat([top, middle, bottom], dim=2)
        out = torch.cat([out, out.new_zeros(*out.shape[:3], w // 2 + 1 - m)], dim=3)
        return torch.fft.irfft2(out, s=(h, w))


def FNO1d(width: int = 64, modes: int = 16, layers: int = 4, in_channels: int = 2) -> OperatorNet:
    """The 1-d reference: FNO with 16 modes, width 64, 4 layers."""
    return OperatorNet(1, width, [SpectralConv1d(width, modes) for _ in range(layers)], in_channels)


def FNO2d(width: int = 32, modes: int = 12, layers: int = 4, in_channels: int = 3, out_channels: int = 1) -> OperatorNet:
    """The 2-d reference: FNO with 12 modes per axis, width 32, 4 layers."""
    return OperatorNet(2, width, [SpectralConv2d(width, modes) for _ in range(layers)], in_channels, out_channels)


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digits: three 3x3 convs, global average pooling, a classifier."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, width, 3, padding=1)
        self.c3 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(width), nn.BatchNorm2d(width), nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.c1(x)))
        h = F.relu(self.bn2(self.c2(h)))
        h = F.relu(self.bn3(self.c3(h)))
        return self.head(self.pool(h).flatten(1))


# ----------------------------------------------------------------------------- helpers
def rel_l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean relative L2 error per sample (FNO's training loss)."""
    diff = (pred - target).flatten(1).norm(dim=1)
    return (diff / target.flatten(1).norm(dim=1)).mean()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def pointwise(name: str, module) -> bool:
    """1x1 convs are the pointwise path of the backbone: they stay as they are."""
    return module is not None and all(k == 1 for k in module.kernel_size)


def spread(values: list[float]) -> dict:
    """Mean, sample std, min and max of per-seed results."""
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std()) if len(values) > 1 else 0.0
    return {"mean": float(t.mean()), "std": std, "min": float(t.min()), "max": float(t.max()), "n": len(values)}


def train(model, train_loader, val_loader, loss, metric, name, epochs, lr, arch_lr=None, weight_decay=1e-4,
          spectral_decay=0.0):
    opt = optimizers(model, lambda p: torch.optim.Adam(p, lr=lr, weight_decay=weight_decay), arch_lr=arch_lr or lr,
                     spectral_decay=spectral_decay)
    start = time.perf_counter()
    search(model, train_loader, loss, epochs, val_loader=val_loader, metric=metric, metric_name=name, opt=opt, progress=False)
    seconds = (time.perf_counter() - start) / epochs
    return model.xdfx_history, seconds


def harden_searched(model, train_loader, calibration: torch.Tensor, loss, *, tol: float = 1e-3, energy: float = 0.9999,
                    finetune_epochs: int = 5, finetune_lr: float = 1e-4, max_cost: float | None = 2.0):
    """``xdfx.harden`` with ``snap="auto"``, then ``xdfx.finetune`` where a layer snapped; returns the hardened model."""
    hard = xdfx.harden(model, tol=tol, example_inputs=(calibration,), energy=energy, max_cost=max_cost)
    if hard.xdfx_report.snapped() and finetune_epochs:
        xdfx.finetune(hard, train_loader, loss, epochs=finetune_epochs, lr=finetune_lr, progress=False)
    return hard.eval()


def harden_summary(hard) -> list[str]:
    """Each layer's chosen form and its first detail (taps, modes), for the results file."""
    return [f"{r.name}: {r.form} {r.detail.split(',')[0]}" for r in hard.xdfx_report]


# ----------------------------------------------------------------------------- tasks
def run_burgers(args) -> dict:
    res, ntrain, ntest = args.res, args.ntrain, args.ntest
    u0, u1 = burgers.generate(ntrain + ntest, res, seed=0)
    grid = torch.linspace(0, 1, res + 1)[:-1].expand(len(u0), 1, res)
    x, y = torch.cat([u0[:, None], grid], 1), u1[:, None]
    g = torch.Generator().manual_seed(0)
    train_loader = DataLoader(TensorDataset(x[:ntrain], y[:ntrain]), batch_size=20, shuffle=True, generator=g)
    test_loader = DataLoader(TensorDataset(x[ntrain:], y[ntrain:]), batch_size=100)
    metric = burgers.relative_l2
    rows = {}
    for label in args.models.split(","):
        torch.manual_seed(0)
        backbone = FNOShapedCNN()
        if label == "cnn":
            model, arch_lr = backbone, None
        elif label.startswith("xd"):
            arch = "fixed" if label == "xd-fixed" else "monarch"
            model = xdfx.relax(backbone, x[:2], arch=arch, exclude=[pointwise])
            arch_lr = args.arch_lr
        else:
            model, arch_lr = FNO1d(), None
        decay = args.spectral_decay if label.startswith("xd") else 0.0
        hist, sec = train(model, train_loader, test_loader, rel_l2_loss, metric, "rel L2", args.epochs, args.lr, arch_lr,
                          spectral_decay=decay)
        rows[label] = {"metric": hist["val_metric"][-1], "seconds_per_epoch": sec, "history": hist,
                       "params": sum(p.numel() for p in model.parameters())}
        print(f"burgers {label}: rel L2 {hist['val_metric'][-1]:.4f}, {sec:.1f} s/epoch", flush=True)
        if label.startswith("xd"):
            suffix = f"-decay{args.spectral_decay:g}" if decay else ""
            torch.save(model.state_dict(), RESULTS / f"burgers_{label}{suffix}.pt")
            hard = xdfx.harden(model, tol=args.harden_tol, example_inputs=(x[ntrain:ntrain + 20],))
            with torch.no_grad():
                rows[label]["hardened_metric"] = float(metric(hard(x[ntrain:]), y[ntrain:]))
            rows[label]["harden"] = [(r.name, r.form, r.detail, r.error) for r in hard.xdfx_report]
            print(hard.xdfx_report, flush=True)
    return rows


def run_darcy(args) -> dict:
    res, ntrain, ntest = args.darcy_res, args.darcy_ntrain, args.ntest
    a, u = darcy.generate(ntrain + ntest, res, seed=0)
    mean, std = a[:ntrain].mean(), a[:ntrain].std()
    coords = torch.linspace(0, 1, res)
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="ij")).expand(len(a), 2, res, res)
    x, y = torch.cat([((a - mean) / std)[:, None], grid], 1), u[:, None]
    g = torch.Generator().manual_seed(0)
    train_loader = DataLoader(TensorDataset(x[:ntrain], y[:ntrain]), batch_size=20, shuffle=True, generator=g)
    test_loader = DataLoader(TensorDataset(x[ntrain:], y[ntrain:]), batch_size=50)
    rows = {}
    for label in ("cnn", "xd", "fno"):
        torch.manual_seed(0)
        backbone = FNOShapedCNN2d()
        if label == "cnn":
            model, arch_lr = backbone, None
        elif label == "xd":
            model, arch_lr = xdfx.relax(backbone, x[:2], arch=args.darcy_arch, exclude=[pointwise]), args.arch_lr
        else:
            model, arch_lr = FNO2d(), None
        hist, sec = train(model, train_loader, test_loader, rel_l2_loss, burgers.relative_l2, "rel L2",
                          args.darcy_epochs, args.lr, arch_lr)
        rows[label] = {"metric": hist["val_metric"][-1], "seconds_per_epoch": sec, "history": hist}
        print(f"darcy {label}: rel L2 {hist['val_metric'][-1]:.4f}, {sec:.1f} s/epoch", flush=True)
    return rows


def run_digits(args) -> dict:
    data = permuted_digits.load(seed=0)
    test_loader = DataLoader(TensorDataset(data["x_test"], data["y_test"]), batch_size=256)
    rows = {}
    for label in args.digits_models.split(","):
        row = rows.setdefault(label, {"seeds": [], "accuracy": [], "seconds_per_epoch": [], "history": []})
        for seed in map(int, args.seeds.split(",")):
            g = torch.Generator().manual_seed(seed)
            train_loader = DataLoader(TensorDataset(data["x_train"], data["y_train"]), batch_size=32, shuffle=True,
                                      generator=g)
            torch.manual_seed(seed)
            model = DigitsCNN()
            if label.startswith("xd"):
                model = xdfx.relax(model, data["x_train"][:2], arch="fixed" if label == "xd-fixed" else "monarch")
            hist, sec = train(model, train_loader, test_loader, F.cross_entropy, accuracy, "accuracy",
                              args.digits_epochs, 1e-3, arch_lr=args.arch_lr)
            for key, value in (("seeds", seed), ("accuracy", hist["val_metric"][-1]), ("seconds_per_epoch", sec),
                               ("history", hist)):
                row[key].append(value)
            hard_note = ""
            if label.startswith("xd"):
                hard = harden_searched(model, train_loader, data["x_train"][:64], F.cross_entropy,
                                       tol=args.harden_tol)
                with torch.no_grad():
                    hard_acc = accuracy(hard(data["x_test"]), data["y_test"])
                row.setdefault("hardened_accuracy", []).append(hard_acc)
                row.setdefault("harden", []).append(harden_summary(hard))
                hard_note = f", hardened {hard_acc:.4f}"
            print(f"digits {label} seed {seed}: accuracy {hist['val_metric'][-1]:.4f}{hard_note}, {sec:.2f} s/epoch",
                  flush=True)
        row["spread"] = spread(row["accuracy"])
        row["metric"] = row["spread"]["mean"]
        row["seconds_per_epoch"] = sum(row["seconds_per_epoch"]) / len(row["seconds_per_epoch"])
    return rows


def markdown(results: dict) -> str:
    lines = ["| task | metric | backbone (CNN) | XD | reference | s/epoch (CNN / XD / reference) |", "|---|---|---|---|---|---|"]
    for task, rows in results.items():
        name = "accuracy" if task == "digits" else "rel. L2 (lower is better)"
        xds = [(label, rows[label]) for label in ("xd", "xd-fixed") if label in rows]
        ref = rows.get("fno", {})

        def fmt(r: dict) -> str:
            if not r:
                return "-"
            s = r.get("spread")
            return f"{s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})" if s and s["n"] > 1 else f"{r['metric']:.4f}"

        secs = lambda r: f"{r['seconds_per_epoch']:.1f}" if r else "-"  # noqa: E731
        if len(xds) > 1:
            xd_cell = ", ".join(f"{fmt(r)} ({'monarch' if label == 'xd' else 'fixed'})" for label, r in xds)
            xd_sec = " and ".join(secs(r) for _, r in xds)
        else:
            xd_cell, xd_sec = (fmt(xds[0][1]), secs(xds[0][1])) if xds else ("-", "-")
        sec = f"{secs(rows.get('cnn'))} / {xd_sec} / {secs(ref)}"
        lines.append(f"| {task} | {name} | {fmt(rows.get('cnn'))} | {xd_cell} | {fmt(ref) if ref else 'FNO n/a'} | {sec} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="burgers,digits")
    parser.add_argument("--models", default="cnn,xd,fno", help="Burgers models: cnn, xd (monarch), xd-fixed, fno")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--digits-epochs", type=int, default=40)
    parser.add_argument("--digits-models", default="cnn,xd,xd-fixed", help="cnn, xd (monarch), xd-fixed")
    parser.add_argument("--seeds", default="0", help="digits: seeds averaged (mean and spread in the JSON)")
    parser.add_argument("--ntrain", type=int, default=1000)
    parser.add_argument("--ntest", type=int, default=200)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--arch-lr", type=float, default=1e-3)
    parser.add_argument("--darcy-res", type=int, default=64)
    parser.add_argument("--darcy-ntrain", type=int, default=1000)
    parser.add_argument("--darcy-epochs", type=int, default=50)
    parser.add_argument("--darcy-arch", default="fixed", choices=["fixed", "monarch"])
    parser.add_argument("--harden-tol", type=float, default=1e-3)
    parser.add_argument("--spectral-decay", type=float, default=0.0,
                        help="per-frequency decay of the XD kernels (xdfx.optimizers(spectral_decay=...))")
    parser.add_argument("--out", default="scratch_search_results", help="results name (default: untracked scratch)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {}
    if "burgers" in args.tasks:
        results["burgers"] = run_burgers(args)
    if "darcy" in args.tasks:
        results["darcy"] = run_darcy(args)
    if "digits" in args.tasks:
        results["digits"] = run_digits(args)
    payload = {"machine": machine(), "args": vars(args), "results": results}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    table = markdown(results)
    (RESULTS / f"{args.out}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
