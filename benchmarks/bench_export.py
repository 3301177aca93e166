"""Inference latency of hardened models in onnxruntime (CPU) against eager PyTorch, interleaved.

    python benchmarks/bench_export.py [--suite forms|lengths] [--rounds 15] [--batch 16] [--threads N ...] [--out NAME]

Every model is relaxed, hardened, exported with ``xdfx.export.onnx`` (which checks the file in
onnxruntime on batches 1 and 3 and the example batch) and then timed at batch ``--batch``: one
onnxruntime session run against one eager ``model(x)`` under ``torch.no_grad()``, per round,
median over rounds after warm-up rounds. The session uses as many intra-op threads as torch and
does not spin while idle (``xdfx.export.ort_session``), so neither runtime steals the other's
cores. On a shared, loaded machine eager PyTorch's many small multi-threaded ops stall on
descheduled worker threads far more than onnxruntime does; ``--threads 1`` gives a comparison
that contention distorts less.

``--suite forms`` (default): the TCN of ``examples/models.py``; an FNO-style layer (a circular conv
relaxed, then planted with a spectrum on 16 modes, which ``harden`` turns into a ``SpectralConv``
on real cos/sin matmuls) at length 1024, width 32, plus the same layer forced onto the real-FFT
path with the ONNX ``DFT`` op for comparison; a frozen XD layer (learned factors) at length 128
exported with factored DFT matmuls and with the ``DFT`` op; the ``ResNetSmall`` of
``examples/models.py``.

``--suite lengths`` (issue 15's acceptance): layers with learned transforms, whose eager forms
run FFTs and whose exported forms are factored DFT matmuls: the TCN relaxed with ``monarch``, its
architecture parameters moved a little as a short search moves them, hardened with
``snap="never"`` (every layer frozen) at lengths 1024 and 4096, and one frozen XD layer (width
32) at 1024; at batch ``--batch`` (8 here) and each of ``--threads`` (default 1 and 2), torch
and onnxruntime set to the same thread count. The target: onnxruntime <= 1.5x eager.

Results go to ``--out`` (a name under ``benchmarks/results/`` or a path; default an untracked
``scratch_`` file); the tracked ones: ``bench_export.json`` (forms) and
``bench_export.lengths.json`` (``--suite lengths --out bench_export.lengths.json``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
import xdfx.export  # noqa: E402
from benchmarks.timing import interleaved, machine, write_json  # noqa: E402
from examples.models import TCN, ResNetSmall  # noqa: E402
from xdfx.ops import FrozenXD, SpectralConv  # noqa: E402

TARGET_RATIO = 1.5
RESULTS = Path(__file__).parent / "results"


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
    twin.method = twin.onnx_method = "fft"
    return twin


def frozen_cases(batch: int, width: int = 32, length: int = 128) -> list[tuple[nn.Module, torch.Tensor, str]]:
    """A circular conv relaxed with learnable factors, its K moved off the identity so that only
    the frozen form reproduces it (what the demo's searched layers become), exported with its
    DFTs as real cos/sin matmuls and with the ONNX ``DFT`` op."""
    x = torch.randn(batch, width, length)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(width, width, 5, padding=2, padding_mode="circular")), x[:2],
                         arch="monarch")
    with torch.no_grad():
        for q in relaxed.get_submodule("0").K:
            q.blocks1.add_(0.05 * torch.randn_like(q.blocks1))
    hard = xdfx.harden(relaxed, snap="never")
    (rec,) = hard.xdfx_report.records
    if rec.form != "frozen":
        raise RuntimeError(f"expected a frozen layer, harden chose {rec.form} ({rec.detail})")
    by_op = xdfx.harden(relaxed, snap="never")
    by_op.set_submodule("0", FrozenXD(relaxed.get_submodule("0"), method="fft"))
    by_op.get_submodule("0").onnx_method = "fft"
    return [
        (hard, x, f"FrozenXD n={length} factored DFT matmuls, {width} ch, (B,{width},{length})"),
        (by_op, x, f"FrozenXD n={length} DFT op, {width} ch, (B,{width},{length})"),
    ]


def hardened_resnet(batch: int) -> tuple[nn.Module, torch.Tensor, str]:
    model = ResNetSmall().eval()
    x = torch.randn(batch, 3, 32, 32)
    relaxed = xdfx.relax(model, x[:2])
    return xdfx.harden(relaxed, example_inputs=x[:2]), x, "ResNetSmall on (B,3,32,32)"


def _searched(model: nn.Module, x: torch.Tensor, seed: int = 0, scale: float = 0.01) -> nn.Module:
    """``model`` relaxed with learned K, L, M (``monarch``), every architecture parameter moved by
    ``scale`` x its mean magnitude in Gaussian noise, as a short search leaves it (K, M off the DFT)."""
    relaxed = xdfx.relax(model, x, arch="monarch")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in xdfx.arch_parameters(relaxed):
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return relaxed


def frozen_tcn(batch: int, length: int) -> tuple[nn.Module, torch.Tensor, str]:
    x = torch.randn(batch, 1, length)
    hard = xdfx.harden(_searched(TCN(), x[:2]), snap="never")
    forms = sorted({r.form for r in hard.xdfx_report.records})
    if forms != ["frozen"]:
        raise RuntimeError(f"expected frozen layers only, harden chose {forms}")
    return hard, x, f"TCN frozen (searched, snap=never), n={length}"


def frozen_layer(batch: int, length: int, width: int = 32) -> tuple[nn.Module, torch.Tensor, str]:
    x = torch.randn(batch, width, length)
    conv = nn.Sequential(nn.Conv1d(width, width, 5, padding=2, padding_mode="circular"))
    hard = xdfx.harden(_searched(conv, x[:2]), snap="never")
    (rec,) = hard.xdfx_report.records
    if rec.form != "frozen":
        raise RuntimeError(f"expected a frozen layer, harden chose {rec.form} ({rec.detail})")
    return hard, x, f"FrozenXD layer {width} ch (searched), n={length}"


def _measure(model: nn.Module, x: torch.Tensor, path: Path, threads: int, rounds: int) -> dict:
    """Export once (at the current thread count), then time eager and onnxruntime interleaved."""
    result = xdfx.export.onnx(model, x[:2], path, timing_runs=0)
    session = xdfx.export.ort_session(path, threads=threads)
    feed = {session.get_inputs()[0].name: x.numpy()}

    def eager() -> None:
        with torch.no_grad():
            model(x)

    t = interleaved({"eager": eager, "ort": lambda: session.run(None, feed)}, rounds=rounds)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    return {
        "eager_ms": 1e3 * t["eager"],
        "ort_ms": 1e3 * t["ort"],
        "ratio": t["ort"] / t["eager"],
        "max_rel_error": result.max_error,
        "opset": result.opset,
        "exported_forms": sorted(set(result.exported_forms.values())),
        "dft_nodes": ops.count("DFT"),
        "matmul_nodes": ops.count("MatMul"),
    }


def run_lengths(args) -> dict:
    """Issue 15's acceptance cases, at every thread count of ``args.threads``."""
    builders = [(frozen_tcn, 1024), (frozen_tcn, 4096), (frozen_layer, 1024)]
    rows = []
    print(f"{'case':48s} {'threads':>7s} {'eager ms':>9s} {'ort ms':>8s} {'ort/eager':>9s} {'max rel err':>11s} {'DFT':>4s}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (build, length) in enumerate(builders):
            torch.manual_seed(0)
            model, x, name = build(args.batch, length)
            model.eval()
            for threads in args.threads:
                torch.set_num_threads(threads)
                row = {"case": name, "length": length, "batch": args.batch, "threads": threads,
                       **_measure(model, x, Path(tmp) / f"case{i}_{threads}.onnx", threads, args.rounds)}
                rows.append(row)
                print(f"{name:48s} {threads:7d} {row['eager_ms']:9.2f} {row['ort_ms']:8.2f} {row['ratio']:9.2f} "
                      f"{row['max_rel_error']:11.2e} {row['dft_nodes']:4d}", flush=True)
    ok = all(r["ratio"] <= TARGET_RATIO for r in rows)
    print(f"every case within {TARGET_RATIO}x of eager in onnxruntime: {'yes' if ok else 'NO'}")
    return {"suite": "lengths", "target_ratio": TARGET_RATIO, "within_target": ok, "rows": rows}


def run_forms(args) -> dict:
    """The original cases: one row per form, at one thread count."""
    torch.set_num_threads(args.threads[0])
    torch.manual_seed(0)
    cases = [hardened_tcn(args.batch), *spectral_cases(args.batch), *frozen_cases(args.batch), hardened_resnet(args.batch)]
    rows = []
    print(f"{'case':58s} {'eager ms':>9s} {'ort ms':>8s} {'ort/eager':>9s} {'max rel err':>11s} {'opset':>5s}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, x, name) in enumerate(cases):
            model.eval()
            row = {"case": name, "batch": args.batch, "threads": args.threads[0],
                   **_measure(model, x, Path(tmp) / f"case{i}.onnx", args.threads[0], args.rounds),
                   "forms": sorted({r.form for r in getattr(model, "xdfx_report", [])}) or ["spectral (fft)"]}
            rows.append(row)
            print(f"{name:58s} {row['eager_ms']:9.2f} {row['ort_ms']:8.2f} {row['ratio']:9.2f} "
                  f"{row['max_rel_error']:11.2e} {row['opset']:5d}")
    spectral = [r for r in rows if r["case"].startswith("SpectralConv") and "matmul" in r["case"]]
    ok = all(r["ratio"] <= TARGET_RATIO for r in spectral)
    print(f"spectral (matmul) layers within {TARGET_RATIO}x of eager in onnxruntime: {'yes' if ok else 'NO'}")
    return {"suite": "forms", "target_spectral_ratio": TARGET_RATIO, "spectral_within_target": ok, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("forms", "lengths"), default="forms")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 16 for forms, 8 for lengths)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch and onnxruntime intra-op threads (default: torch's own for forms, 1 and 2 for lengths)")
    parser.add_argument("--out", default="scratch_bench_export.json",
                        help="results file: a name under benchmarks/results/ or a path (default: untracked scratch)")
    args = parser.parse_args()
    lengths = args.suite == "lengths"
    args.batch = args.batch or (8 if lengths else 16)
    args.threads = args.threads or ([1, 2] if lengths else [torch.get_num_threads()])
    payload = run_lengths(args) if lengths else run_forms(args)
    payload = {
        "machine": machine(),
        "metric": "inference latency (no grad), median of interleaved rounds after 3 warm-up rounds",
        "rounds": args.rounds,
        "onnxruntime": _ort_version(),
        **payload,
    }
    out = Path(args.out)
    out = out if out.parent != Path(".") else RESULTS / (out.name if out.suffix else f"{out.name}.json")
    write_json(out, payload)
    print(f"wrote {out}")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
