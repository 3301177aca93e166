"""Relaxing torchvision ResNets at ImageNet size under the default budget: relax time, numbers
stored, and one training step's time and peak memory against the original (the step runs in a
fresh process that loads the saved model, so that its peak RSS belongs to the step alone).

    make zoo                      # once: builds .zoo/ (torchvision, timm) next to .venv
    PYTHONPATH=.zoo .venv/bin/python benchmarks/bench_scale.py [--models resnet18,resnet50] [--out bench_scale]

Writes benchmarks/results/<out>.{json,md} (default scratch_bench_scale, not tracked).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# two processes per model: one builds (and relaxes) and saves it, one loads it and takes two SGD
# steps, so that the step's peak RSS is the step's alone (relax's own peak is reported apart)
BUILD = r"""
import json, resource, sys, time, types
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")  # see bench_zoo.py
import torch, torchvision, xdfx
name, res, mode, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
model = getattr(torchvision.models, name)()
out = {"model": name, "resolution": res, "mode": mode}
numbers = lambda m: sum(t.numel() for t in m.state_dict().values())
out["numbers_original"] = numbers(model)
if mode != "original":
    x = torch.randn(1, 3, res, res)
    start = time.perf_counter()
    arch, _, store = mode.partition(":")  # "monarch:store": the budget's recompute off
    model = xdfx.relax(model, x, arch=arch, budget=xdfx.Budget(recompute=False) if store else xdfx.Budget())
    out["relax_s"] = time.perf_counter() - start
    out["budget"] = model.xdfx_report.summary()
    out["relax_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
out["numbers"] = numbers(model)
torch.save(model, path)
print(json.dumps(out))
"""

STEP = r"""
import json, resource, sys, time, types
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
import torch, torchvision, xdfx
path, res, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = torch.load(path, weights_only=False)
x, y = torch.randn(batch, 3, res, res), torch.randint(0, 1000, (batch,))
out = {"batch": batch, "rss_before_step_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
times = []
for _ in range(2):
    start = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    times.append(time.perf_counter() - start)
out["step_s"] = min(times)
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
print(json.dumps(out))
"""


def _child(code: str, *args) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        return {"error": lines[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(name: str, res: int, mode: str, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        row = {"model": name, "mode": mode, **_child(BUILD, name, res, mode, path)}
        if "error" not in row:
            row.update(_child(STEP, path, res, batch))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--archs", default="monarch,fixed,monarch:store",
                        help="relaxed variants; ':store' turns the budget's recompute off")
    parser.add_argument("--out", default="scratch_bench_scale")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        base = run(name, args.resolution, "original", args.batch)
        rows.append(base)
        for arch in args.archs.split(","):
            row = run(name, args.resolution, arch, args.batch)
            if "error" not in row and "error" not in base:
                row["numbers_ratio"] = row["numbers"] / base["numbers"]
                row["step_ratio"] = row["step_s"] / base["step_s"]
                row["peak_ratio"] = row["peak_rss_gb"] / base["peak_rss_gb"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = ["| model | arch | relax (s) | relax peak RSS (GB) | numbers vs original | step vs original "
             "| step peak RSS (GB) vs original |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "numbers_ratio" in r:
            lines.append(f"| {r['model']} {r['resolution']}x{r['resolution']}, batch {r['batch']} | {r['mode']} | "
                         f"{r['relax_s']:.1f} | {r['relax_peak_rss_gb']:.2f} | {r['numbers_ratio']:.2f}x | "
                         f"{r['step_ratio']:.2f}x | {r['peak_rss_gb']:.2f} ({r['peak_ratio']:.2f}x) |")
        elif "error" in r:
            lines.append(f"| {r['model']} | {r['mode']} | failed: {r['error']} | | | | |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
