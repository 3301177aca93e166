"""Regenerate docs/burgers_xd_layer.png: the report of the searched Burgers XD model.

    python benchmarks/search_results.py --tasks burgers --models cnn,xd-fixed,xd,fno --out search_burgers
    python benchmarks/figure_burgers.py [--layer 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import xdfx  # noqa: E402
from benchmarks.search_results import FNOShapedCNN, pointwise  # noqa: E402
from xdfx.tasks import burgers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=1, help="which of the four searched mixers to show")
    args = parser.parse_args()
    run = json.loads((ROOT / "benchmarks/results/search_burgers.json").read_text())["args"]
    res, ntrain = run["res"], run["ntrain"]
    u0, _ = burgers.generate(ntrain + run["ntest"], res, seed=0)
    grid = torch.linspace(0, 1, res + 1)[:-1].expand(len(u0), 1, res)
    x = torch.cat([u0[:, None], grid], 1)
    relaxed = xdfx.relax(FNOShapedCNN(), x[:2], arch="fixed", exclude=[pointwise]).eval()
    relaxed.load_state_dict(torch.load(ROOT / "benchmarks/results/burgers_xd-fixed.pt", weights_only=True))
    folder = xdfx.report(relaxed, ROOT / "benchmarks/results/burgers_report", example_inputs=(x[ntrain:ntrain + 20],), tol=1e-3)
    shutil.copy(folder / "layers" / f"{args.layer:02d}_mixers.{args.layer}.png", ROOT / "docs" / "burgers_xd_layer.png")
    print(f"wrote {folder} and docs/burgers_xd_layer.png")


if __name__ == "__main__":
    main()
