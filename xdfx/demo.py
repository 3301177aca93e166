"""The end-to-end demo: relax -> search -> harden -> export on a small Burgers' equation task.

A CNN shaped like an FNO (5-tap circular convs instead of spectral ones) is relaxed into XD
layers, trained (weights and architecture together), hardened back into standard ops (each layer
snapped to its nearest cheap form, then the whole model fine-tuned) and exported to ONNX, which
onnxruntime checks. The same CNN trained with the same budget is the
baseline. Everything is generated locally by the project's own solver (seeded, cached).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .finetune import finetune
from .harden import harden
from .relax import relax
from .search import optimizers, search
from .tasks import burgers


class BurgersCNN(nn.Module):
    """FNO-shaped CNN: lift, 4 x (5-tap circular conv + pointwise conv), projection."""

    def __init__(self, width: int = 32, layers: int = 4) -> None:
        super().__init__()
        self.lift = nn.Conv1d(2, width, 1)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, 5, padding=2, padding_mode="circular") for _ in range(layers))
        self.points = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(layers))
        self.proj = nn.Sequential(nn.Conv1d(width, 64, 1), nn.GELU(), nn.Conv1d(64, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lift(x)
        for i, (conv, point) in enumerate(zip(self.convs, self.points)):
            h = conv(h) + point(h)
            h = F.gelu(h) if i < len(self.convs) - 1 else h
        return self.proj(h)


def _pointwise(name: str, module) -> bool:
    return module is not None and all(k == 1 for k in module.kernel_size)


def _rel_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)).mean()


def _latencies_ms(models: list, x: torch.Tensor, rounds: int = 41) -> list[float]:
    """Median milliseconds per call of each model, timed in interleaved rounds after warm-up (a
    machine whose speed drifts shifts every model alike)."""
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for _ in range(3):
            for model in models:
                model(x)
        for _ in range(rounds):
            for i, model in enumerate(models):
                start = time.perf_counter()
                model(x)
                times[i].append(time.perf_counter() - start)
    return [1e3 * sorted(t)[len(t) // 2] for t in times]


def run_demo(arch: str = "fixed", seed: int = 0, epochs: int = 25, ntrain: int = 400, resolution: int = 128) -> int:
    """Run the pipeline and print one table; returns a process exit code."""
    console = Console(width=120)
    torch.manual_seed(seed)
    u0, u1 = burgers.generate(ntrain + 100, resolution, seed=seed)
    grid = torch.linspace(0, 1, resolution + 1)[:-1].expand(len(u0), 1, resolution)
    x, y = torch.cat([u0[:, None], grid], 1), u1[:, None]
    train = DataLoader(TensorDataset(x[:ntrain], y[:ntrain]), batch_size=20, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    test_x, test_y = x[ntrain:], y[ntrain:]
    test = DataLoader(TensorDataset(test_x, test_y), batch_size=100)
    console.print(f"[bold]Burgers' equation[/] (viscosity 0.1, t=1), {ntrain} train / 100 test samples at "
                  f"resolution {resolution}, {epochs} epochs, Adam 1e-3")

    def fit(model, label):
        start = time.perf_counter()
        opt = optimizers(model, lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4), arch_lr=1e-3)
        search(model, train, _rel_l2, epochs, val_loader=test, metric=burgers.relative_l2, metric_name="rel L2",
               opt=opt, progress=True)
        console.print(f"trained {label} in {time.perf_counter() - start:.0f} s")
        return model

    torch.manual_seed(seed)
    backbone = BurgersCNN()
    torch.manual_seed(seed)
    cnn = fit(BurgersCNN(), "the CNN backbone")
    relaxed = relax(backbone, x[:2], arch=arch, exclude=[_pointwise])
    start = time.perf_counter()
    with torch.no_grad():
        warm = float((relaxed(test_x) - backbone(test_x)).abs().max() / backbone(test_x).abs().max())
    console.print(f"relaxed {len(relaxed.xdfx_report.relaxed())} convolutions into XD layers "
                  f"(warm-start error {warm:.1e})")
    searched = fit(relaxed, "the XD model (search)")
    with torch.no_grad():
        searched_err = burgers.relative_l2(searched(test_x), test_y)
    # discretize, then retrain: each layer snaps to the most accurate cheap form within 1.2x its conv's cost
    hardened = harden(searched, tol=1e-3, example_inputs=(test_x[:20],), energy=0.9999, max_cost=1.2, fill=True,
                      timing=False)
    with torch.no_grad():
        snapped_err = burgers.relative_l2(hardened(test_x), test_y)
    start = time.perf_counter()
    finetune(hardened, train, _rel_l2, epochs=10, lr=1e-4, progress=True)
    console.print(f"fine-tuned the hardened model in {time.perf_counter() - start:.0f} s")
    chosen = Table(title="xdfx.harden: what each XD layer became")
    for col in ("layer", "form", "detail", "error", "runner-up"):
        chosen.add_column(col)
    for r in hardened.xdfx_report:
        chosen.add_row(r.name, r.form, r.detail, f"{r.error:.1e}", r.runner_up or "-")
    console.print(chosen)

    rows = []
    latency = _latencies_ms([cnn, searched, hardened], test_x[:20])

    def row(label, model, ms):
        with torch.no_grad():
            err = burgers.relative_l2(model(test_x), test_y)
        n = sum(t.numel() for t in model.state_dict().values())  # parameters and buffers: what it stores
        rows.append((label, f"{err:.4f}", f"{n:,}", f"{ms:.2f}"))
        return err

    row("CNN backbone", cnn, latency[0])
    row("XD (searched, relaxed)", searched, latency[1])
    rows.append(("XD hardened (snapped, before fine-tuning)", f"{snapped_err:.4f}", "", ""))
    hard_err = row("XD hardened + fine-tuned (10 epochs)", hardened, latency[2])
    onnx_line = _export_line(hardened, test_x, test_y, rows)
    table = Table(title="xdfx demo: Burgers 1-d, test set")
    for col in ("model", "rel. L2 error", "stored numbers", "latency (ms, batch 20)"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(onnx_line)
    console.print(f"hardened / searched error: {hard_err / searched_err:.2f}x; hardened / CNN latency: "
                  f"{float(rows[3][3]) / float(rows[0][3]):.2f}x")
    return 0


def _export_line(model, x, y, rows, batch: int = 20) -> str:
    """Export to ONNX, check it on the whole test set in onnxruntime, time it at ``batch``, add its row."""
    import numpy as np
    import onnxruntime as ort

    from . import export

    path = Path(tempfile.mkdtemp(prefix="xdfx-demo-")) / "burgers_xd.onnx"
    result = export.onnx(model, (x[:batch],), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = session.run(None, {name: x.numpy()})[0]
    feed = {name: x[:batch].numpy()}
    err = burgers.relative_l2(torch.from_numpy(out), y)
    with torch.no_grad():
        ref = model(x).numpy()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    ort_ms = 1e3 * sorted(times)[len(times) // 2]
    rows.append(("XD hardened, ONNX (onnxruntime)", f"{err:.4f}", rows[-1][2], f"{ort_ms:.2f}"))
    diff = float(np.abs(out - ref).max() / np.abs(ref).max())
    return (f"ONNX: {path} (opset {result.opset}); onnxruntime vs PyTorch: max relative difference {diff:.1e}, "
            f"latency {ort_ms:.2f} ms vs {rows[-2][3]} ms")
