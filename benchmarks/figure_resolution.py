"""Error against grid resolution, one panel per task, from benchmarks/sweep_resolution.py's results.

    python benchmarks/figure_resolution.py [--results sweep_burgers_e60+sweep_burgers_e60_neuralop sweep_darcy] \
        [--out docs/resolution.png]

Each point is the mean test relative L2 over seeds; the bars span the smallest and largest seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
STYLE = {"cnn": ("CNN backbone", "tab:gray", "o"), "xd": ("XD (monarch)", "tab:blue", "s"),
         "xd-fixed": ("XD (fixed, default)", "tab:cyan", "D"), "fno": ("FNO", "tab:orange", "^"),
         "fno-neuralop": ("FNO (neuraloperator)", "tab:red", "v")}


def panel(ax, rows: list[dict], title: str) -> None:
    for model, (label, color, marker) in STYLE.items():
        mine = [r for r in rows if r["model"] == model]
        resolutions = sorted({r["res"] for r in mine})
        if not resolutions:
            continue
        errs = [[r["error"] for r in mine if r["res"] == res] for res in resolutions]
        mean = [sum(e) / len(e) for e in errs]
        lo = [m - min(e) for m, e in zip(mean, errs)]
        hi = [max(e) - m for m, e in zip(mean, errs)]
        ax.errorbar(resolutions, mean, yerr=[lo, hi], label=label, color=color, marker=marker, capsize=3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("resolution (grid points per axis)")
    ax.set_ylabel("test relative L2")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", nargs="+",
                        default=["sweep_burgers_e60+sweep_burgers_e60_neuralop", "sweep_darcy"],
                        help="result names, one panel each; join names with + to share a panel")
    parser.add_argument("--out", default="docs/resolution.png")
    args = parser.parse_args()
    panels = []
    for spec in args.results:  # "a+b": one panel from several result files
        payloads = [json.loads((RESULTS / f"{n}.json").read_text()) for n in spec.split("+") if (RESULTS / f"{n}.json").exists()]
        if payloads:
            panels.append((payloads[0]["args"], [r for p in payloads for r in p["rows"]]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (a, rows) in zip(axes[0], panels):
        panel(ax, rows, f"{a['task'].capitalize()} ({a['ntrain']} train, {a['epochs']} epochs)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
