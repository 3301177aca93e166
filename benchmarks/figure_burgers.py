"""Regenerate docs/burgers_xd_layer.png: the report of the searched Burgers XD model.

    python benchmarks/search_results.py --tasks burgers --models xd-fixed --epochs 25 --ntrain 500 --ntest 100 --out search_burgers
    python benchmarks/figure_burgers.py
"""

from __future__ import annotations

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
    u0, _ = burgers.generate(600, 256, seed=0)
    grid = torch.linspace(0, 1, 257)[:-1].expand(len(u0), 1, 256)
    x = torch.cat([u0[:, None], grid], 1)
    relaxed = xdfx.relax(FNOShapedCNN(), x[:2], arch="fixed", exclude=[pointwise]).eval()
    relaxed.load_state_dict(torch.load(ROOT / "benchmarks/results/burgers_xd-fixed.pt", weights_only=True))
    folder = xdfx.report(relaxed, ROOT / "benchmarks/results/burgers_report", example_inputs=(x[500:520],), tol=1e-2)
    shutil.copy(folder / "layers" / "00_mixers.0.png", ROOT / "docs" / "burgers_xd_layer.png")
    print(f"wrote {folder} and docs/burgers_xd_layer.png")


if __name__ == "__main__":
    main()
