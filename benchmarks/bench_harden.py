"""Harden the searched Burgers XD model; compare its error and inference time with the relaxed
model, the CNN backbone and the FNO reference, measured interleaved in one run.

    python benchmarks/search_results.py --tasks burgers ...   # trains and saves the XD model first
    python benchmarks/bench_harden.py [--label xd-fixed] [--tol 1e-2 3e-3 1e-3]

Writes benchmarks/results/<out>.json (default bench_harden.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
from benchmarks.search_results import FNO1d, FNOShapedCNN, pointwise  # noqa: E402
from benchmarks.timing import interleaved, machine, write_json  # noqa: E402
from xdfx.tasks import burgers  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="xd-fixed", help="which searched model of search_results.py")
    parser.add_argument("--results", default="search_burgers", help="the search_results.py --out name")
    parser.add_argument("--checkpoint", default=None, help="searched weights (default: results/burgers_<label>.pt)")
    parser.add_argument("--out", default="scratch_bench_harden", help="results name (default: untracked scratch)")
    parser.add_argument("--tol", type=float, nargs="+", default=[1e-2, 3e-3, 1e-3])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    setup = json.loads((RESULTS / f"{args.results}.json").read_text())
    run = setup["args"]
    res, ntrain, ntest = run["res"], run["ntrain"], run["ntest"]
    u0, u1 = burgers.generate(ntrain + ntest, res, seed=0)
    grid = torch.linspace(0, 1, res + 1)[:-1].expand(len(u0), 1, res)
    x, y = torch.cat([u0[:, None], grid], 1), u1[:, None]
    test_x, test_y = x[ntrain:], y[ntrain:]
    arch = "fixed" if args.label == "xd-fixed" else "monarch"
    relaxed = xdfx.relax(FNOShapedCNN(), x[:2], arch=arch, exclude=[pointwise]).eval()
    checkpoint = Path(args.checkpoint) if args.checkpoint else RESULTS / f"burgers_{args.label}.pt"
    relaxed.load_state_dict(torch.load(checkpoint, weights_only=True))
    with torch.no_grad():
        relaxed_err = burgers.relative_l2(relaxed(test_x), test_y)
    models = {"cnn": FNOShapedCNN().eval(), "fno": FNO1d().eval(), "relaxed": relaxed}
    rows = []
    for tol in args.tol:
        hard = xdfx.harden(relaxed, tol=tol, example_inputs=(x[:args.batch],)).eval()
        with torch.no_grad():
            err = burgers.relative_l2(hard(test_x), test_y)
        forms = [f"{r.name}: {r.form} {r.detail}" for r in hard.xdfx_report]
        rows.append({"tol": tol, "hardened_rel_l2": err, "relative_to_relaxed": err / relaxed_err, "forms": forms})
        models[f"hardened tol={tol:g}"] = hard
        print(f"tol {tol:g}: rel L2 {err:.5f} (relaxed {relaxed_err:.5f}, ratio {err / relaxed_err:.3f}); " + "; ".join(forms))
    batch = test_x[: args.batch]

    def infer(model):
        def run_once():
            with torch.no_grad():
                model(batch)

        return run_once

    times = interleaved({k: infer(m) for k, m in models.items()}, rounds=args.rounds)
    best_reference = min(times["cnn"], times["fno"])
    print(f"\n{'model':24s} {'ms (batch ' + str(args.batch) + ')':>16s} {'vs best of CNN/FNO':>20s}")
    for k, t in times.items():
        print(f"{k:24s} {1e3 * t:16.3f} {t / best_reference:20.2f}")
    for row in rows:
        row["ms"] = 1e3 * times[f"hardened tol={row['tol']:g}"]
        row["vs_best_reference"] = times[f"hardened tol={row['tol']:g}"] / best_reference
    write_json(RESULTS / f"{args.out}.json", {
        "machine": machine(), "label": args.label, "checkpoint": checkpoint.name, "relaxed_rel_l2": relaxed_err,
        "ms": {k: 1e3 * t for k, t in times.items()}, "rows": rows,
        "trained_metrics": {k: v["metric"] for k, v in setup["results"]["burgers"].items()},
    })
    print(f"wrote {RESULTS / args.out}.json")


if __name__ == "__main__":
    main()
