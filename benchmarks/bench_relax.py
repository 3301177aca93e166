"""Forward+backward time of a relaxed conv layer over nn.Conv's, measured interleaved in one run.

The last column times one learnable factor alone (``Q_M`` of the monarch layer, on every spatial
axis of the zero-extended input): a monarch layer applies two of them (``K`` and ``M``) on top of
what the fixed layer does.

    python benchmarks/bench_relax.py [--rounds 15] [--out benchmarks/results/bench_relax.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.timing import interleaved, machine, write_json  # noqa: E402
from xdfx.ops import XDConv  # noqa: E402

CASES = [
    ("Conv1d(32,32,5) on (16,32,1024)", lambda: nn.Conv1d(32, 32, 5), (16, 32, 1024)),
    ("Conv1d(32,32,5,pad=2) on (16,32,1024)", lambda: nn.Conv1d(32, 32, 5, padding=2), (16, 32, 1024)),
    ("Conv2d(32,32,3) on (8,32,64,64)", lambda: nn.Conv2d(32, 32, 3), (8, 32, 64, 64)),
    ("Conv2d(32,32,3,pad=1) on (8,32,64,64)", lambda: nn.Conv2d(32, 32, 3, padding=1), (8, 32, 64, 64)),
]


def train_step(layer: nn.Module, x: torch.Tensor):
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).sum().backward()

    return step


class Factor(nn.Module):
    """The learnable ``Q_M`` factors of an XD layer, applied as its forward applies them."""

    def __init__(self, xd: XDConv) -> None:
        super().__init__()
        self.xd = xd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.xd.transform_in(x)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scratch_bench_relax.json",
                        help="results file (default: untracked scratch; name benchmarks/results/bench_relax.json to update the tracked one)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    print(f"{'case':40s} {'conv ms':>8s} {'fixed ms':>9s} {'ratio':>6s} {'monarch ms':>11s} {'ratio':>6s} {'factor ms':>10s} {'ratio':>6s}")
    for name, make, shape in CASES:
        conv = make()
        x = torch.randn(*shape, requires_grad=True)
        layers = {"conv": conv}
        for arch in ("fixed", "monarch"):
            layers[arch] = XDConv.from_conv(conv, shape[2:], arch=arch)
        layers["factor"] = Factor(layers["monarch"])
        t = interleaved({k: train_step(m, x) for k, m in layers.items()}, rounds=args.rounds)
        row = {
            "case": name,
            "conv_ms": 1e3 * t["conv"],
            "fixed_ms": 1e3 * t["fixed"],
            "monarch_ms": 1e3 * t["monarch"],
            "fixed_ratio": t["fixed"] / t["conv"],
            "monarch_ratio": t["monarch"] / t["conv"],
            "factor_ms": 1e3 * t["factor"],
            "factor_ratio": t["factor"] / t["conv"],
        }
        rows.append(row)
        print(
            f"{name:40s} {row['conv_ms']:8.2f} {row['fixed_ms']:9.2f} {row['fixed_ratio']:6.2f} "
            f"{row['monarch_ms']:11.2f} {row['monarch_ratio']:6.2f} {row['factor_ms']:10.2f} {row['factor_ratio']:6.2f}"
        )
    write_json(args.out, {"machine": machine(), "metric": "forward+backward, median", "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
