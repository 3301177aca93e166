"""Zoo: xdfx.relax on real torchvision and timm CNNs, one process, each checked for exactness.

    make zoo                      # builds .zoo/ if missing, then runs --out bench_zoo
    PYTHONPATH=.zoo python benchmarks/bench_zoo.py [--out bench_zoo] [--only resnet18,timm:dla34]

Every model is built with random weights (``weights=None`` / ``pretrained=False``: nothing is
downloaded), in eval mode, and relaxed with the default budget (``xdfx.relax(model, x)``). Per
model: relax seconds, numbers stored (state_dict numel, buffers included) before and after,
relative max error ``max|y - z| / max|y|`` of the relaxed model against the original on the
example input (batch 1; the ``'out'`` tensor of segmentation models), convs relaxed and kept (the
report's conv / conv_function rows, with the reasons for keeping), and the process's peak
resident set so far. The batch norms' running statistics are first set from one random batch
(see ``calibrate_batchnorm``: with fresh statistics some random nets output their classifier's
bias whatever the input, and the check would check nothing); a model whose output still hardly
depends on its input (``MIN_SENSITIVITY``) is reported as inconclusive. For scale, the table also
gives the original's own float32 roundoff (its output against the same net in float64), which deep
random nets amplify, and a model off in float32 is checked again in float64 (relaxed and run
in float64 against the original in float64), which tells roundoff from a wrong rewrite. The process's address space is capped at 8 GB (``--memory-limit-gb``): a
model that needs more fails with an allocation error. The models are then dropped, so memory does not pile up from one to the
next. A model that raises, or is off by more than ``TOL``, is a failure: it is recorded with its
message and the run goes on. Inputs: 224x224 for classification (299 for inception_v3), 128x128
for segmentation, 8 frames of 112x112 for video; the table says which.

Writes benchmarks/results/<out>.{md,json} (default ``scratch_bench_zoo``, git-ignored) after
every model, and prints the table at the end.

Environment. The project's .venv holds the CPU wheel of torch 2.13. The torchvision wheel built
for it cannot load its compiled operators on this machine (``torchvision::nms does not exist``),
and torch 2.14.1 with torchvision 0.29.1, which do work on CPU, would replace the project's torch
with a much larger install. The zoo instead installs ``torchvision==0.28.0`` and ``timm``
without their dependencies into a separate folder, ``.zoo/`` (git-ignored), and runs with
``PYTHONPATH=.zoo``:

    .venv/bin/python -m pip install -q --target .zoo --no-deps torchvision==0.28.0 timm==1.0.31

torchvision 0.28's compiled ops do not load against this torch either, and its
``_meta_registrations`` module (which registers meta kernels for those ops) then fails at import;
this script puts an empty stand-in module in its place before importing torchvision. The model
definitions do not need the compiled ops; the detection models, which call nms / roi_align, do,
and are out of the zoo's scope. timm's optional dependencies (huggingface_hub, safetensors,
pyyaml) serve downloading and loading pretrained weights, which the zoo never does, so they are
not installed.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import resource
import sys
import time
import traceback
import types
from collections import Counter
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402

# torchvision's meta registrations refer to its compiled ops, which this torch cannot load
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

TOL = 1e-4
MIN_SENSITIVITY = 1e-2  # max|y(x) - y(x')| / max|y(x)| below this: the output ignores the input
MEMORY_LIMIT_GB = 8.0
RESULTS = Path(__file__).resolve().parent / "results"

CLS = (1, 3, 224, 224)
SEG = (1, 3, 128, 128)
VIDEO = (1, 3, 8, 112, 112)

# (name, task, input shape, builder keyword arguments)
TORCHVISION = [
    ("resnet18", "classification", CLS, {}),
    ("resnet50", "classification", CLS, {}),
    ("resnext50_32x4d", "classification", CLS, {}),
    ("wide_resnet50_2", "classification", CLS, {}),
    ("densenet121", "classification", CLS, {}),
    ("mobilenet_v2", "classification", CLS, {}),
    ("mobilenet_v3_large", "classification", CLS, {}),
    ("efficientnet_b0", "classification", CLS, {}),
    ("convnext_tiny", "classification", CLS, {}),
    ("regnet_y_400mf", "classification", CLS, {}),
    ("shufflenet_v2_x1_0", "classification", CLS, {}),
    ("squeezenet1_1", "classification", CLS, {}),
    ("mnasnet1_0", "classification", CLS, {}),
    ("googlenet", "classification", CLS, {"aux_logits": False, "init_weights": False}),
    ("inception_v3", "classification", (1, 3, 299, 299), {"aux_logits": False, "init_weights": False}),
    ("fcn_resnet50", "segmentation", SEG, {"weights_backbone": None, "aux_loss": False}),
    ("deeplabv3_mobilenet_v3_large", "segmentation", SEG, {"weights_backbone": None, "aux_loss": False}),
    ("lraspp_mobilenet_v3_large", "segmentation", SEG, {"weights_backbone": None}),
    ("r3d_18", "video", VIDEO, {}),
    ("mc3_18", "video", VIDEO, {}),
]

# one or two of each family; tf_ models use TF 'same' padding convs, nfnet weight-standardised convs
TIMM = [
    "resnet26d",
    "resnet50d",
    "seresnext26d_32x4d",
    "legacy_seresnet18",
    "res2net50_14w_8s",
    "resnest14d",
    "efficientnet_b0",
    "tf_efficientnet_b0",
    "mobilenetv3_large_100",
    "mixnet_s",
    "ghostnet_100",
    "rexnet_100",
    "regnetx_002",
    "densenet121",
    "dla34",
    "dpn68",
    "cspresnet50",
    "hrnet_w18_small",
    "convnext_atto",
    "xception41",
    "vgg11",
    "repvgg_a0",
    "nfnet_l0",
]

CONV_KINDS = ("conv", "conv_function")


def cases() -> list[dict]:
    out = [{"label": f"tv:{n}", "source": "torchvision", "name": n, "task": t, "shape": s, "kwargs": kw}
           for n, t, s, kw in TORCHVISION]
    out += [{"label": f"timm:{n}", "source": "timm", "name": n, "task": "classification", "shape": CLS, "kwargs": {}}
            for n in TIMM]
    return out


def build(case: dict) -> nn.Module:
    if case["source"] == "torchvision":
        import torchvision

        return torchvision.models.get_model(case["name"], weights=None, **case["kwargs"])
    import timm

    return timm.create_model(case["name"], pretrained=False, **case["kwargs"])


def calibrate_batchnorm(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Set every batch norm's running statistics to those of one random batch, then eval mode.

    With random weights and fresh statistics (mean 0, variance 1) the activations of a deep net
    shrink layer after layer, until the logits are the classifier's bias whatever the input
    (inception_v3, googlenet: a relaxed model then matches "exactly" while checking nothing).
    Statistics from a batch keep every layer's output at unit scale, as trained weights would."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics
    if norms:
        model.train()
        with torch.no_grad():
            model(torch.randn(2, *shape[1:]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def numel(model: nn.Module) -> int:
    return sum(t.numel() for t in model.state_dict().values())


def main_output(y):
    return y["out"] if isinstance(y, dict) else y


def release_free_memory() -> None:
    """Hand freed heap back to the system (glibc keeps it otherwise, and it counts against the cap)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_gb() -> float:
    """The process's resident set now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_case(case: dict, arch: str = "fixed") -> dict:
    row = {k: case[k] for k in ("label", "source", "name", "task")}
    row["input"] = list(case["shape"])
    start = time.perf_counter()
    model = relaxed = y = z = y_other = y64 = None
    try:
        torch.manual_seed(0)
        model = build(case)
        calibrate_batchnorm(model, case["shape"])
        x = torch.randn(*case["shape"])
        row["convs_in_model"] = sum(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
        t0 = time.perf_counter()
        relaxed = xdfx.relax(model, x, arch=arch)
        row["relax_s"] = time.perf_counter() - t0
        report = relaxed.xdfx_report
        convs = [r for r in report.records if r.kind in CONV_KINDS]
        row["convs_relaxed"] = sum(r.status == "relaxed" for r in convs)
        row["convs_kept"] = sum(r.status != "relaxed" for r in convs)
        row["kept_reasons"] = dict(Counter(r.detail for r in convs if r.status != "relaxed"))
        row["other_rows"] = dict(Counter(f"{r.kind}:{r.status}" for r in report.records if r.kind not in CONV_KINDS))
        probes = [(r.error, r.name) for r in report.records if r.status == "relaxed" and r.error is not None]
        if probes:
            row["worst_layer_probe_error"], row["worst_layer"] = max(probes)
        row["budget"] = report.summary()
        row["numbers_original"] = numel(model)
        row["numbers_relaxed"] = numel(relaxed)
        row["numbers_ratio"] = row["numbers_relaxed"] / row["numbers_original"]
        with torch.no_grad():
            t0 = time.perf_counter()
            y = main_output(model(x))
            row["forward_original_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            z = main_output(relaxed(x))
            row["forward_relaxed_s"] = time.perf_counter() - t0
            y_other = main_output(model(torch.randn(*case["shape"])))
            y64 = main_output(model.double()(x.double()))  # the original's own float32 roundoff, for scale
        row["output_shape"] = list(y.shape)
        row["error"] = ((y - z).abs().max() / y.abs().max()).item()
        row["float32_noise"] = ((y.double() - y64).abs().max() / y64.abs().max()).item()
        row["sensitivity"] = ((y - y_other).abs().max() / y.abs().max()).item()
        row["exact"] = bool(row["error"] <= TOL)  # False for NaN too
        if not row["exact"]:
            del relaxed
            relaxed = None
            gc.collect()
            # the same check in float64 (the model is in float64 by now): a rewrite that is exact
            # there is off in float32 by roundoff alone
            row["status"] = f"inexact: relative error {row['error']:.2e} > {TOL:.0e}"
            try:
                relaxed = xdfx.relax(model, x.double(), arch=arch)
                with torch.no_grad():
                    z = main_output(relaxed(x.double()))
                row["float64_error"] = ((y64 - z).abs().max() / y64.abs().max()).item()
                row["status"] += f" (in float64: {row['float64_error']:.1e})"
            except Exception as err:  # noqa: BLE001
                row["status"] += f" (the float64 check failed: {type(err).__name__}: {str(err)[:200]})"
        elif not row["sensitivity"] >= MIN_SENSITIVITY:
            row["status"] = f"inconclusive: the output hardly depends on the input (sensitivity {row['sensitivity']:.1e})"
        else:
            row["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - every failure is recorded and the zoo goes on
        row["status"] = f"error: {type(err).__name__}: {err}"
        row["traceback"] = traceback.format_exc()[-4000:]
        inside = [f for f in traceback.extract_tb(err.__traceback__) if "/xdfx/" in f.filename]
        if inside:
            row["where"] = f"{Path(inside[-1].filename).name}:{inside[-1].lineno} ({inside[-1].name})"
    finally:
        del model, relaxed, y, z, y_other, y64
        gc.collect()
        release_free_memory()
    row["rss_after_gb"] = rss_gb()
    row["total_s"] = time.perf_counter() - start
    row["peak_rss_gb"] = peak_rss_gb()
    return row


def fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def millions(n) -> str:
    return "" if n is None else f"{n / 1e6:.2f}M"


def table(rows: list[dict]) -> str:
    lines = [
        "| model | task | input | relax s | numbers orig | numbers relaxed | ratio | rel. error | fp32 noise | sensitivity | convs relaxed / kept | peak RSS GB | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = r["status"] == "ok"
        lines.append(
            f"| {r['label']} | {r['task']} | {'x'.join(map(str, r['input'][1:]))} | {fmt(r.get('relax_s'), '.1f')} "
            f"| {millions(r.get('numbers_original'))} | {millions(r.get('numbers_relaxed'))} "
            f"| {fmt(r.get('numbers_ratio'), '.2f')} | {fmt(r.get('error'), '.1e')} | {fmt(r.get('float32_noise'), '.1e')} | {fmt(r.get('sensitivity'), '.2g')} "
            f"| {r.get('convs_relaxed', '')} / {r.get('convs_kept', '')} | {r['peak_rss_gb']:.2f} "
            f"| {'ok' if ok else '**inconclusive**' if r['status'].startswith('inconclusive') else '**FAIL**'} |"
        )
    return "\n".join(lines)


def render(meta: dict, rows: list[dict]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    bad = [r for r in rows if r["status"] != "ok"]
    by_source = Counter(r["source"] for r in ok)
    peak = max((r["peak_rss_gb"] for r in rows), default=0.0)
    out = [
        "# Zoo: xdfx.relax on torchvision and timm CNNs",
        "",
        f"torch {meta['torch']}, torchvision {meta['torchvision']}, timm {meta['timm']}; {meta['machine']}, "
        f"{meta['threads']} threads; one process, models one after another, random weights, default budget, "
        f"arch {meta.get('arch', 'monarch (the default then)')}.",
        f"Exact within {TOL:.0e} relative: {len(ok)} of {len(rows)} models "
        f"({by_source['torchvision']} torchvision, {by_source['timm']} timm). "
        f"Peak resident set {peak:.2f} GB (address space capped at {meta['memory_limit_gb']:g} GB). Total {meta.get('total_s', 0) / 60:.1f} min.",
        "",
        "Numbers: every number the state_dict stores, buffers included. Rel. error: max|y - z| / max|y| of the "
        "relaxed model against the original on the example input (batch 1). fp32 noise: the same measure "
        "of the original in float32 against itself in float64, the roundoff the net amplifies anyway. Sensitivity: max|y(x) - y(x')| / "
        "max|y(x)| for a second random input x' (how much the check can see). Convs: the report's conv and "
        "conv_function rows, relaxed or kept. Peak RSS: the process's peak so far (ru_maxrss).",
        "",
        table(rows),
        "",
        "## Convs kept, and why",
        "",
    ]
    reasons: dict[str, list[str]] = {}
    for r in rows:
        for why, n in r.get("kept_reasons", {}).items():
            reasons.setdefault(why, []).append(f"{r['label']} ({n})")
    for why, where in reasons.items():
        out.append(f"- {why}: {', '.join(where)}")
    out += ["", "## Failures", ""]
    if not bad:
        out.append("None.")
    for r in bad:
        line = f"- {r['label']}: {r['status']}"
        if "where" in r:
            line += f" [raised in xdfx at {r['where']}]"
        if "worst_layer" in r:
            line += f" (worst layer probe: {r['worst_layer']} at {r['worst_layer_probe_error']:.1e})"
        out.append(line)
    return "\n".join(out) + "\n"


def limit_memory(gb: float) -> None:
    """Cap the process's address space (so its resident set too) at ``gb``: a model that needs
    more fails with an allocation error, recorded like any other, instead of taking the machine."""
    if gb > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (int(gb * 2**30), hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="scratch_bench_zoo", help="results/<out>.{md,json}")
    parser.add_argument("--arch", default="fixed", choices=["fixed", "monarch"], help="xdfx.relax's arch")
    parser.add_argument("--only", default="", help="comma-separated names or labels (tv:resnet18, timm:dla34)")
    parser.add_argument("--memory-limit-gb", type=float, default=MEMORY_LIMIT_GB,
                        help="address-space cap of the process (0: none)")
    args = parser.parse_args()

    import timm
    import torchvision

    todo = cases()
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        todo = [c for c in todo if c["label"] in wanted or c["name"] in wanted]
    missing = [n for n in TIMM if n not in set(timm.list_models())]
    if missing:
        raise SystemExit(f"timm {timm.__version__} has no models named {missing}")
    meta = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "tolerance": TOL,
        "arch": args.arch,
    }
    meta["memory_limit_gb"] = args.memory_limit_gb
    meta["xdfx"] = str(Path(xdfx.__file__).parent)
    limit_memory(args.memory_limit_gb)
    RESULTS.mkdir(parents=True, exist_ok=True)
    md_path, json_path = RESULTS / f"{args.out}.md", RESULTS / f"{args.out}.json"
    rows: list[dict] = []
    start = time.perf_counter()
    for i, case in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {case['label']} {tuple(case['shape'])} ...", flush=True)
        row = run_case(case, args.arch)
        rows.append(row)
        print(f"    {row['status']}  relax {fmt(row.get('relax_s'), '.1f')} s, error {fmt(row.get('error'), '.1e')}, "
              f"numbers x{fmt(row.get('numbers_ratio'), '.2f')}, convs {row.get('convs_relaxed')}/{row.get('convs_kept')}, "
              f"peak {row['peak_rss_gb']:.2f} GB, now {row['rss_after_gb']:.2f} GB, {row['total_s']:.0f} s", flush=True)
        meta["total_s"] = time.perf_counter() - start
        json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        md_path.write_text(render(meta, rows))
    print()
    print(render(meta, rows))
    print(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    main()
