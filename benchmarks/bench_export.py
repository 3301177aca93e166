"""Inference latency of hardened models in onnxruntime (CPU) against eager PyTorch, interleaved.

    python benchmarks/bench_export.py [--rounds 15] [--batch 16] [--threads N] [--out benchmarks/results/bench_export.json]

Every model is relaxed, hardened, exported with ``xdfx.export.onnx`` (which checks the file in
onnxruntime on batches 1 and 3 and the example batch) and then timed at batch ``--batch``: one
onnxruntime session run against one eager ``model(x)`` under ``torch.no_grad()``, per round,
median over rounds. The session uses as many intra-op threads as torch and does not spin while
idle (``xdfx.export.ort_session``), so neither runtime steals the other's cores. On a shared,
loaded machine eager PyTorch's many small multi-threaded ops stall on descheduled worker threads
far more than onnxruntime does; ``--threads 1`` gives a comparison that contention distorts less.

Cases: the TCN of ``examples/models.py``; an FNO-style layer (a circular conv relaxed, then
planted with a spectrum on 16 modes, which ``harden`` turns into a ``SpectralConv`` on real
cos/sin matmuls) at length 1024, width 32, plus the same layer forced onto the real-FFT path
(``method="fft"``, ONNX ``DFT``) for comparison; a frozen XD layer (learned factors) at length 128
with its DFTs as cos/sin matmuls and with the ``DFT`` op; the ``ResNetSmall`` of
``examples/models.py``.
The acceptance target: hardened spectral layers no slower in onnxruntime than 1.5x eager.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
import xdfx.export  # noqa: E402
from benchmarks.timing import interleaved, machine, write_json  # noqa: E402
from examples.models import TCN, ResNetSmall  # noqa: E402
from xdfx.ops import FrozenXD, SpectralConv  # noqa: E402

TARGET_RATIO = 1.5


def hardened_tcn(batch: int) -> tuple[nn.Module, torch.Tensor, str]:
    x = torch.randn(batch, 1, 1024)
    relaxed = xdfx.relax(TCN(), x)
    return xdfx.harden(relaxed, example_inputs=x), x, "TCN(32 ch, 4 dilated k=5 convs) on (B,1,1024)"


def hardened_spectral(modes: int = 16, width: int = 32, length: int = 1024) -> nn.Module:
    """A circular conv relaxed, its spectrum replaced by random values on ``modes`` modes (as an
    FNO layer has), hardened: a ``SpectralConv`` with ``method="matmul"``."""
    x = torch.randn(2, width, length)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(width, width, 5, padding=2, padding_mode="circular")), x, arch="fixed")
    xd = relaxed.get_submodule("0")
    spec = torch.zeros(width, width, length // 2 + 1, dtype=torch.complex64)
    spec[..., :modes] = torch.randn(width, width, modes, dtype=torch.complex64) / width
    spec[..., 0] = spec[..., 0].real
    with torch.no_grad():
        xd.set_kernel(torch.fft.irfft(spec.conj(), n=length))
    hard = xdfx.harden(relaxed)
    (rec,) = hard.xdfx_report.records
    if rec.form != "spectral":
        raise RuntimeError(f"expected a spectral layer, harden chose {rec.form} ({rec.detail})")
    return hard


def spectral_cases(batch: int) -> list[tuple[nn.Module, torch.Tensor, str]]:
    hard = hardened_spectral()
    sc = hard.get_submodule("0")
    fft = _as_fft(sc)  # the same kept modes, evaluated with rfft / irfft (ONNX DFT)
    x = torch.randn(batch, 32, 1024)
    return [
        (hard, x, f"SpectralConv modes={sc.modes[0]} matmul, 32 ch, (B,32,1024)"),
        (nn.Sequential(fft), x, f"SpectralConv modes={sc.modes[0]} fft (DFT), 32 ch, (B,32,1024)"),
    ]


def _as_fft(sc: SpectralConv) -> SpectralConv:
    """``sc`` evaluated with real FFTs instead of cos/sin matmuls (same kept modes)."""
    twin = copy.deepcopy(sc)
    twin.method = "fft"
    return twin


def frozen_cases(batch: int, width: int = 32, length: int = 128) -> list[tuple[nn.Module, torch.Tensor, str]]:
    """A circular conv relaxed with learnable factors, its K moved off the identity so that only
    the frozen form reproduces it (what the demo's searched layers become), exported with its
    DFTs as real cos/sin matmuls and with the ONNX ``DFT`` op."""
    x = torch.randn(batch, width, length)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(width, width, 5, padding=2, padding_mode="circular")), x[:2])
    with torch.no_grad():
        for q in relaxed.get_submodule("0").K:
            q.blocks1.add_(0.05 * torch.randn_like(q.blocks1))
    hard = xdfx.harden(relaxed, snap="never")
    (rec,) = hard.xdfx_report.records
    if rec.form != "frozen":
        raise RuntimeError(f"expected a frozen layer, harden chose {rec.form} ({rec.detail})")
    by_op = xdfx.harden(relaxed, snap="never")
    by_op.set_submodule("0", FrozenXD(relaxed.get_submodule("0"), method="fft"))
    return [
        (hard, x, f"FrozenXD n={length} DFT matmuls, {width} ch, (B,{width},{length})"),
        (by_op, x, f"FrozenXD n={length} DFT op, {width} ch, (B,{width},{length})"),
    ]


def hardened_resnet(batch: int) -> tuple[nn.Module, torch.Tensor, str]:
    model = ResNetSmall().eval()
    x = torch.randn(batch, 3, 32, 32)
    relaxed = xdfx.relax(model, x[:2])
    return xdfx.harden(relaxed, example_inputs=x[:2]), x, "ResNetSmall on (B,3,32,32)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and onnxruntime intra-op threads (default: torch's own setting)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scratch_bench_export.json",
                        help="results file (default: untracked scratch; name benchmarks/results/bench_export.json to update the tracked one)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = [hardened_tcn(args.batch), *spectral_cases(args.batch), *frozen_cases(args.batch), hardened_resnet(args.batch)]
    rows = []
    print(f"{'case':58s} {'eager ms':>9s} {'ort ms':>8s} {'ort/eager':>9s} {'max rel err':>11s} {'opset':>5s}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, x, name) in enumerate(cases):
            model.eval()
            path = Path(tmp) / f"case{i}.onnx"
            result = xdfx.export.onnx(model, x[:2], path, timing_runs=0)
            session = xdfx.export.ort_session(path)
            feed = {session.get_inputs()[0].name: x.numpy()}

            def eager(model=model, x=x) -> None:
                with torch.no_grad():
                    model(x)

            t = interleaved({"eager": eager, "ort": lambda s=session, f=feed: s.run(None, f)}, rounds=args.rounds)
            row = {
                "case": name,
                "batch": args.batch,
                "eager_ms": 1e3 * t["eager"],
                "ort_ms": 1e3 * t["ort"],
                "ratio": t["ort"] / t["eager"],
                "max_rel_error": result.max_error,
                "opset": result.opset,
                "forms": sorted({r.form for r in getattr(model, "xdfx_report", [])}) or ["spectral (fft)"],
            }
            rows.append(row)
            print(f"{name:58s} {row['eager_ms']:9.2f} {row['ort_ms']:8.2f} {row['ratio']:9.2f} "
                  f"{row['max_rel_error']:11.2e} {row['opset']:5d}")
    spectral = [r for r in rows if r["case"].startswith("SpectralConv") and "matmul" in r["case"]]
    ok = all(r["ratio"] <= TARGET_RATIO for r in spectral)
    print(f"spectral (matmul) layers within {TARGET_RATIO}x of eager in onnxruntime: {'yes' if ok else 'NO'}")
    payload = {
        "machine": machine(),
        "metric": "inference latency (no grad), median of interleaved rounds",
        "rounds": args.rounds,
        "onnxruntime": _ort_version(),
        "target_spectral_ratio": TARGET_RATIO,
        "spectral_within_target": ok,
        "rows": rows,
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
