"""Relaxing torchvision ResNets at ImageNet size under the default budget: relax time, numbers
stored, and one training step's time and peak memory against the original (each in a fresh
process, so that peak RSS belongs to that run alone).

    make zoo                      # once: builds .zoo/ (torchvision, timm) next to .venv
    PYTHONPATH=.zoo .venv/bin/python benchmarks/bench_scale.py [--models resnet18,resnet50] [--out bench_scale]

Writes benchmarks/results/<out>.{json,md} (default scratch_bench_scale, not tracked).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# one run: build (and relax), then two SGD steps; prints one JSON line
CHILD = r"""
import json, resource, sys, time, types
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")  # see bench_zoo.py
import torch, torchvision, xdfx
name, res, mode, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
model = getattr(torchvision.models, name)()
x, y = torch.randn(batch, 3, res, res), torch.randint(0, 1000, (batch,))
out = {"model": name, "resolution": res, "mode": mode, "batch": batch}
numbers = lambda m: sum(t.numel() for t in m.state_dict().values())
out["numbers_original"] = numbers(model)
if mode != "original":
    start = time.perf_counter()
    model = xdfx.relax(model, x[:1], arch=mode)
    out["relax_s"] = time.perf_counter() - start
    out["budget"] = model.xdfx_report.summary()
out["numbers"] = numbers(model)
out["rss_before_step_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
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


def run(name: str, res: int, mode: str, batch: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, name, str(res), mode, str(batch)], capture_output=True, text=True)
    if proc.returncode:
        return {"model": name, "mode": mode, "error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default="scratch_bench_scale")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        base = run(name, args.resolution, "original", args.batch)
        rows.append(base)
        for arch in ("monarch", "fixed"):
            row = run(name, args.resolution, arch, args.batch)
            if "error" not in row and "error" not in base:
                row["numbers_ratio"] = row["numbers"] / base["numbers"]
                row["step_ratio"] = row["step_s"] / base["step_s"]
                row["peak_ratio"] = row["peak_rss_gb"] / base["peak_rss_gb"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = ["| model | arch | relax (s) | numbers vs original | step vs original | peak RSS (GB) vs original |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("mode") in ("monarch", "fixed") and "numbers_ratio" in r:
            lines.append(f"| {r['model']} {r['resolution']}x{r['resolution']}, batch {r['batch']} | {r['mode']} | "
                         f"{r['relax_s']:.1f} | {r['numbers_ratio']:.2f}x | {r['step_ratio']:.2f}x | "
                         f"{r['peak_rss_gb']:.2f} ({r['peak_ratio']:.2f}x) |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
