"""What modes-only forms keep of a search: error and latency of the searched model cut to m modes.

    python benchmarks/figure_truncation.py [--results bench_snap_fixed] [--out docs/truncation.png]

From ``benchmarks/bench_snap.py --truncate``'s results: per backbone, the mean over seeds of the
searched model's test error with every XD layer cut to its m lowest modes (no refit), against its
latency relative to the CNN; the searched model's own error and the snapped-and-fine-tuned
model (harden's choice) are marked.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TITLES = {"fno_cnn": "the demo's FNO-shaped CNN", "tcn": "the README's TCN"}


def panel(ax, rows: list[dict], model: str) -> None:
    mine = [r for r in rows if r["model"] == model]
    modes = sorted(int(m) for m in mine[0]["truncated"])
    err = [statistics.mean(r["truncated"][str(m)]["error"] for r in mine) for m in modes]
    lat = [statistics.mean(r["truncated"][str(m)]["latency_vs_cnn"] for r in mine) for m in modes]
    ax.plot(lat, err, marker="o", color="tab:cyan", label="searched, cut to m low modes")
    for m, x, y in zip(modes, lat, err):
        ax.annotate(str(m), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    mean = lambda key: statistics.mean(r[key] for r in mine)  # noqa: E731
    ax.axhline(mean("searched"), color="tab:blue", linestyle="--", label="searched (relaxed)")
    ax.axhline(mean("cnn"), color="tab:gray", linestyle=":", label="CNN")
    ax.plot([mean("latency_vs_cnn")], [mean("hardened")], marker="*", markersize=14, color="tab:red",
            linestyle="none", label="harden + fine-tune (max_cost 1.2)")
    ax.axvline(1.0, color="black", linewidth=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("latency / CNN latency")
    ax.set_ylabel("test relative L2")
    ax.set_title(f"{TITLES.get(model, model)} ({len(mine)} seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="bench_snap_fixed")
    parser.add_argument("--out", default=str(Path(__file__).parent.parent / "docs" / "truncation.png"))
    args = parser.parse_args()
    data = json.loads((RESULTS / f"{args.results}.json").read_text())
    rows = [r for r in data["rows"] if r.get("truncated")]
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        panel(ax, rows, model)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
