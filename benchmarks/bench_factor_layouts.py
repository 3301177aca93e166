"""Where a learnable factor could act, and what each place costs: forward+backward of one factor
against the conv it would sit in, interleaved in one run.

    python benchmarks/bench_factor_layouts.py [--rounds 21] [--out benchmarks/results/bench_factor_layouts.json]

* ``spatial``: xdfx's ``Q_M`` (a Monarch on the positions, ``M = F Q_M``) on a batch-major
  ``(B, C, n)`` activation: two batched matmuls and one layout transpose each way.
* ``frequency``: the same block structure on the frequency-major spectrum ``(P, 2 B C)`` (real
  blocks on the real and imaginary parts, ``M = Q F``), the layout the channel mix already
  needs: the two batched matmuls only. It mixes frequencies, not positions, so it is a different
  search space; this script only measures its cost. ``P`` is padded to a length with a
  balanced factorisation (here ``n / 2 + 1 = 541`` is prime).
* ``conv``: the ``Conv1d(32, 32, 5, padding=2)`` on ``(16, 32, 1024)`` both would relax.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.timing import interleaved, machine, write_json  # noqa: E402
from xdfx.ops.geometry import smooth_size  # noqa: E402
from xdfx.ops.monarch import Monarch, balanced_factors  # noqa: E402


class FrequencyMonarch(torch.autograd.Function):
    """``P^T B2 P B1`` along the leading axis of a contiguous ``(P, m)`` tensor; the result is
    left block-major ``(n2, n1, m)`` (its frequency order is the diagonal's to follow)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
        n1, n2 = b1.shape[0], b1.shape[1]
        xv = x.view(n1, n2, -1)
        ctx.save_for_backward(x, b1, b2)
        return torch.bmm(b2, torch.bmm(b1, xv).transpose(0, 1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, b1, b2 = ctx.saved_tensors
        n1, n2 = b1.shape[0], b1.shape[1]
        xv = x.view(n1, n2, -1)
        y = torch.bmm(b1, xv)
        gb2 = torch.bmm(grad, y.transpose(0, 1).transpose(1, 2))
        gy = torch.bmm(b2.transpose(1, 2), grad).transpose(0, 1)
        gb1 = torch.bmm(gy, xv.transpose(1, 2))
        gx = torch.bmm(b1.transpose(1, 2), gy).reshape(x.shape)
        return gx, gb1, gb2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scratch_bench_factor_layouts.json",
                        help="results file (default: untracked scratch)")
    args = parser.parse_args()
    torch.manual_seed(0)
    b, c, length = 16, 32, 1024
    n = smooth_size(length + 2)  # the zero-padded conv's transform length
    freqs = n // 2 + 1
    p = freqs
    while balanced_factors(p)[0] < 8:  # a length the two-factor structure can split evenly
        p += 1
    n1, n2 = balanced_factors(p)

    conv = nn.Conv1d(c, c, 5, padding=2)
    x_conv = torch.randn(b, c, length, requires_grad=True)
    g_conv = torch.randn(b, c, length)
    spatial = Monarch(n)
    x_sp = torch.randn(b, c, n, requires_grad=True)
    g_sp = torch.randn(b, c, n)
    b1 = torch.eye(n2).expand(n1, n2, n2).clone().requires_grad_()
    b2 = torch.eye(n1).expand(n2, n1, n1).clone().requires_grad_()
    x_fr = torch.randn(p, 2 * b * c, requires_grad=True)
    g_fr = torch.randn(n2, n1, 2 * b * c)

    t = interleaved(
        {
            "conv": lambda: conv(x_conv).backward(g_conv),
            "spatial": lambda: spatial(x_sp, 2).backward(g_sp),
            "frequency": lambda: FrequencyMonarch.apply(x_fr, b1, b2).backward(g_fr),
        },
        rounds=args.rounds,
    )
    rows = [
        {"factor": "spatial", "n": n, "blocks": f"{spatial.n1}x{spatial.n2}", "ms": 1e3 * t["spatial"], "over_conv": t["spatial"] / t["conv"]},
        {"factor": "frequency", "n": p, "blocks": f"{n1}x{n2}", "ms": 1e3 * t["frequency"], "over_conv": t["frequency"] / t["conv"]},
    ]
    print(f"conv Conv1d({c},{c},5,pad=2) on ({b},{c},{length}): {1e3 * t['conv']:.2f} ms forward+backward")
    for r in rows:
        print(f"{r['factor']:10s} n={r['n']:5d} blocks {r['blocks']:>6s}: {r['ms']:6.2f} ms  {r['over_conv']:.2f}x the conv")
    write_json(args.out, {"machine": machine(), "metric": "forward+backward, median", "conv_ms": 1e3 * t["conv"],
                          "frequencies": freqs, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
