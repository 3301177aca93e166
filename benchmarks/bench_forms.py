"""Time per FLOP of harden's frequency forms against the direct conv: the numbers behind the
``efficiency`` column of ``xdfx.forms`` and ``METHOD_EFFICIENCY`` of ``xdfx.passes.harden_spectral``.

    python benchmarks/bench_forms.py [--threads 1] [--out bench_forms]

Per layer shape: the direct conv, the every-mode FFT form, a 12-mode spectral form through
real FFTs and through DFT matmuls, and the frozen form of a ``monarch`` layer (learned K, M), timed interleaved (medians, warm-up first). A form's efficiency
is its time over the conv's divided by its FLOPs over the conv's (harden's own FLOP counts);
the crossover is how many times more DFT-matmul FLOPs than FFT FLOPs run in the same time; the
one-mode spectral layer's time less its FLOPs, in conv FLOPs per call, prices the fixed cost of a
form's extra branch (``xdfx.forms.PATH_OVERHEAD``).
Writes benchmarks/results/<out>.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
from benchmarks.timing import interleaved, machine, write_json  # noqa: E402
from xdfx.ops.frozen import FrozenXD  # noqa: E402
from xdfx.ops.spectral import SpectralConv  # noqa: E402
from xdfx.passes.harden_context import original_conv_flops, xd_flops  # noqa: E402
from xdfx.passes.harden_spectral import _kept, mix_flops, transform_flops  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# (channels, spatial sizes, kernel, batch)
CASES = [(6, (128,), 5, 20), (32, (128,), 5, 20), (32, (256,), 5, 20), (64, (256,), 5, 20), (32, (1024,), 3, 20),
         (32, (1024,), 5, 20), (32, (2048,), 5, 20), (16, (64, 64), 3, 8), (32, (32, 32), 5, 20)]
MODES = 12


def one(c: int, sizes: tuple[int, ...], k: int, batch: int, rounds: int) -> dict:
    conv_cls = (nn.Conv1d, nn.Conv2d)[len(sizes) - 1]
    conv = conv_cls(c, c, k, padding=k // 2, padding_mode="circular")
    x = torch.randn(batch, c, *sizes)
    xd = xdfx.relax(nn.Sequential(conv), x[:2], arch="fixed").get_submodule("0")
    ns = [g.n for g in xd.geometry]
    spec = torch.randn(c, c, *ns[:-1], ns[-1] // 2 + 1, dtype=torch.complex64)
    forms = {
        "fft": SpectralConv(spec, [max(ns)] * len(ns), xd.geometry, method="fft"),
        "spectral_fft": SpectralConv(spec, [MODES] * len(ns), xd.geometry, method="fft"),
        "spectral_matmul": SpectralConv(spec, [MODES] * len(ns), xd.geometry, method="matmul"),
        "one_mode": SpectralConv(spec, [1] * len(ns), xd.geometry, method="matmul"),  # ~ the fixed cost of a branch
    }
    monarch = xdfx.relax(nn.Sequential(conv), x[:2], arch="monarch").get_submodule("0")
    forms["frozen_monarch"] = FrozenXD(monarch, None)
    kept = _kept(ns, MODES)
    mix = mix_flops(xd, kept)
    by = transform_flops(xd, sizes, kept)
    by_fft, by_matmul = by["fft"], by["matmul"]
    flops = {"conv": original_conv_flops(xd, sizes), "fft": xd_flops(xd, with_kernel_fft=False),
             "spectral_fft": by_fft + mix, "spectral_matmul": by_matmul + mix,
             "frozen_monarch": xd_flops(monarch, with_kernel_fft=False)}

    def call(m):
        def run():
            with torch.no_grad():
                m(x)
        return run

    times = interleaved({"conv": call(conv), **{k_: call(m) for k_, m in forms.items()}}, rounds=rounds)
    row = {"case": f"C={c} n={'x'.join(map(str, sizes))} k={k} batch={batch}", "sizes": list(sizes),
           "ms": {k_: 1e3 * t for k_, t in times.items()}, "flops": flops}
    row["efficiency"] = {f: (times[f] / times["conv"]) / (flops[f] / flops["conv"]) for f in forms if f != "one_mode"}
    # the one-mode layer's time less its FLOPs (at this layer's matmul efficiency), in conv FLOPs per call
    one = transform_flops(xd, sizes, _kept(ns, 1))["matmul"] + mix_flops(xd, _kept(ns, 1))
    share = times["one_mode"] / times["conv"] - row["efficiency"]["spectral_matmul"] * one / flops["conv"]
    row["path_overhead"] = max(0.0, share) * flops["conv"] * batch
    row["crossover"] = (by_matmul / by_fft) / (times["spectral_matmul"] / times["spectral_fft"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", default="scratch_bench_forms")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [one(*case, rounds=args.rounds) for case in CASES]
    lines = [f"Time per FLOP relative to the direct conv ({args.threads} thread(s), interleaved medians of "
             f"{args.rounds}); spectral forms keep {MODES} modes per axis.", "",
             "| layer | conv ms | fft ms | fft efficiency | spectral (FFT) efficiency | spectral (matmul) efficiency "
             "| frozen monarch efficiency | matmul/FFT crossover | one-mode layer (conv MFLOPs per call) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r["efficiency"]
        lines.append(f"| {r['case']} | {r['ms']['conv']:.2f} | {r['ms']['fft']:.2f} | {e['fft']:.2f} | "
                     f"{e['spectral_fft']:.2f} | {e['spectral_matmul']:.2f} | {e['frozen_monarch']:.2f} | "
                     f"{r['crossover']:.2f} | {r['path_overhead'] / 1e6:.1f} |")
    med = {f: statistics.median(r["efficiency"][f] for r in rows) for f in rows[0]["efficiency"]}
    cross = statistics.median(r["crossover"] for r in rows)
    # where a branch's fixed cost matters: small 1-d layers (beyond, memory traffic grows with the layer)
    path = statistics.median(r["path_overhead"] for r in rows if len(r["sizes"]) == 1 and r["sizes"][0] <= 256)
    lines += ["", f"Medians: fft {med['fft']:.2f}, spectral (FFT) {med['spectral_fft']:.2f}, spectral (matmul) "
              f"{med['spectral_matmul']:.2f}, frozen monarch {med['frozen_monarch']:.2f}; crossover {cross:.2f}; "
              f"one-mode layer {path / 1e6:.1f} conv MFLOPs per call on 1-d layers up to n=256 (harden's "
              "PATH_OVERHEAD)."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    write_json(RESULTS / f"{args.out}.json", {"machine": machine(), "args": vars(args), "rows": rows,
                                               "median_efficiency": med, "median_crossover": cross,
                                               "median_path_overhead": path})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
