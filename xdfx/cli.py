"""The ``xdfx`` command line."""

from __future__ import annotations

import argparse
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xdfx`` console script and of ``python -m xdfx``."""
    parser = argparse.ArgumentParser(prog="xdfx", description="XD-operations over torch.fx.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="relax reference CNNs and print the warm-start error per layer")
    demo.add_argument("--arch", default="monarch", choices=["monarch", "fixed"])
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(arch=args.arch, seed=args.seed)
    return 2
