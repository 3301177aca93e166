"""Relaxed vs backbone: training step, inference and peak memory, for layers and whole models.

    python benchmarks/bench_suite.py [--rounds 7] [--compile] [--only tcn,fno] [--out bench_suite]

Every case is timed interleaved (backbone, XD fixed, XD monarch in turn, median of --rounds),
on CUDA when available (the device name is recorded). Peak memory is measured per variant in a
fresh process: growth of the peak resident set (CPU) or torch.cuda.max_memory_allocated (GPU)
over three training steps. ``--compile`` adds torch.compile'd training steps of all three
variants, their ratios taken against the compiled backbone. Writes
benchmarks/results/<out>.{json,md}.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
from benchmarks.search_results import FNOShapedCNN, pointwise  # noqa: E402
from benchmarks.timing import interleaved, machine, write_json  # noqa: E402
from examples.models import TCN, ResNetSmall  # noqa: E402

CASES = {
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(32, 32, 5, padding=2)), (16, 32, 1024)),
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(32, 32, 3, padding=1)), (8, 32, 64, 64)),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(16, 16, 3, padding=1)), (4, 16, 16, 16, 16)),
    "resnet32": (lambda: ResNetSmall(), (32, 3, 32, 32)),
    "resnet64": (lambda: ResNetSmall(), (16, 3, 64, 64)),
    "tcn": (lambda: TCN(channels=32, layers=4, kernel=5), (16, 1, 1024)),
    "fno": (lambda: FNOShapedCNN(width=64), (20, 2, 1024)),
    # the configuration benchmarks/search_results.py searches: 1x1 convs (the pointwise path) kept
    "fno-mixers": (lambda: FNOShapedCNN(width=64), (20, 2, 1024)),
}
RELAX_OPTIONS = {"fno-mixers": {"exclude": [pointwise]}}
VARIANTS = ("backbone", "fixed", "monarch")


def build(case: str, variant: str, device: torch.device):
    make, shape = CASES[case]
    torch.manual_seed(0)
    model = make().to(device)
    x = torch.randn(*shape, device=device)
    if variant != "backbone":
        model = xdfx.relax(model, x, arch=variant, **RELAX_OPTIONS.get(case, {}))
    return model, x


def train_step(model: nn.Module, x: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()

    return step


def inference(model: nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def _peak_worker(case: str, variant: str, device: str, queue) -> None:
    torch.set_num_threads(torch.get_num_threads())
    dev = torch.device(device)
    model, x = build(case, variant, dev)
    step = train_step(model, x)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(3):
            step()
        queue.put((torch.cuda.max_memory_allocated() - base) / 2**20)
        return
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak resident set (VmHWM)
        f.write("5")
    base = _status_kb("VmRSS")
    for _ in range(3):
        step()
    queue.put((_status_kb("VmHWM") - base) / 1024)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_memory_mb(case: str, variant: str, device: str) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_worker, args=(case, variant, device, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd training steps (ratios against the compiled backbone)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", default="scratch_bench_suite", help="results name (default: untracked scratch)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    header = f"{'case':10s} {'variant':16s} {'train ms':>9s} {'ratio':>6s} {'infer ms':>9s} {'ratio':>6s} {'peak MB':>8s} {'ratio':>6s}"
    print(header)
    for case in args.only.split(","):
        built = {v: build(case, v, device) for v in VARIANTS}
        train = interleaved({v: train_step(*built[v]) for v in VARIANTS}, rounds=args.rounds)
        infer = interleaved({v: inference(*built[v]) for v in VARIANTS}, rounds=args.rounds)
        peaks = {v: (float("nan") if args.no_memory else peak_memory_mb(case, v, device.type)) for v in VARIANTS}
        if args.compile:
            compiled = {f"{v}+compile": torch.compile(built[v][0]) for v in VARIANTS}
            ctrain = interleaved({k: train_step(m, built[k.split('+')[0]][1]) for k, m in compiled.items()}, rounds=args.rounds)
            train.update(ctrain)
        for v in list(train):
            base = "backbone+compile" if v.endswith("+compile") else "backbone"
            row = {
                "case": case, "variant": v, "train_ms": 1e3 * train[v], "train_ratio": train[v] / train[base],
                "infer_ms": 1e3 * infer.get(v, float("nan")), "infer_ratio": infer.get(v, float("nan")) / infer["backbone"],
                "peak_mb": peaks.get(v, float("nan")),
                "peak_ratio": peaks.get(v, float("nan")) / peaks["backbone"] if peaks["backbone"] else float("nan"),
            }
            rows.append(row)
            print(f"{case:10s} {v:16s} {row['train_ms']:9.2f} {row['train_ratio']:6.2f} {row['infer_ms']:9.2f} "
                  f"{row['infer_ratio']:6.2f} {row['peak_mb']:8.1f} {row['peak_ratio']:6.2f}", flush=True)
    results = Path(__file__).parent / "results"
    write_json(results / f"{args.out}.json", {"machine": machine(), "rows": rows, "rounds": args.rounds})
    lines = ["| case | variant | train step ms | ratio | inference ms | ratio | peak MB | ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['variant']} | {r['train_ms']:.2f} | {r['train_ratio']:.2f} | {r['infer_ms']:.2f} | "
                     f"{r['infer_ratio']:.2f} | {r['peak_mb']:.1f} | {r['peak_ratio']:.2f} |")
    (results / f"{args.out}.md").write_text(f"Device: {machine()['device']}\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {results / args.out}.json and .md")


if __name__ == "__main__":
    main()
