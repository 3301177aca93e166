"""The ``xdfx`` command line: relax, harden, export and report a model given as ``module:callable``.

    xdfx relax   examples.models:TCN --shape 2,1,256 [--save relaxed.pt]
    xdfx harden  examples.models:TCN --shape 2,1,256 [--checkpoint relaxed.pt] [--tol 1e-4] [--snap auto]
                 [--max-cost 2] [--fill]
    xdfx export  examples.models:TCN --shape 2,1,256 [--checkpoint relaxed.pt] --out tcn.onnx
    xdfx report  examples.models:TCN --shape 2,1,256 [--checkpoint relaxed.pt] --out report/
    xdfx demo
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

from .common import check_writable
from .errors import XdfxError, XdfxInputError


def load_model(spec: str):
    """Build the model named by ``package.module:callable`` (the callable takes no arguments)."""
    if ":" not in spec:
        raise XdfxInputError(f"model {spec!r} must look like 'package.module:callable'")
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise XdfxInputError(f"cannot load {spec!r}: {err}") from err
    try:
        model = factory()
    except Exception as err:  # noqa: BLE001 - the user's factory: report it, without our traceback
        raise XdfxInputError(f"calling {spec!r} with no arguments failed: {type(err).__name__}: {err}") from err
    import torch

    if not isinstance(model, torch.nn.Module):
        raise XdfxInputError(f"{spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--shape wants integers like 2,3,32,32, got {text!r}") from err


def _relaxed(args):
    import torch

    from .relax import relax
    from .search import load_checkpoint

    torch.manual_seed(args.seed)
    model = load_model(args.model).eval()
    x = torch.randn(*args.shape)
    relaxed = relax(model, x, arch=args.arch)
    if getattr(args, "checkpoint", None):
        load_checkpoint(args.checkpoint, relaxed)
    return relaxed, x


def _cmd_relax(args) -> int:
    from .search import save_checkpoint

    relaxed, _ = _relaxed(args)
    print(relaxed.xdfx_report)
    if args.save:
        save_checkpoint(args.save, relaxed)
        print(f"saved the relaxed model's state to {args.save}")
    return 0


def _cmd_harden(args) -> int:
    from .harden import harden

    relaxed, x = _relaxed(args)
    print(harden(relaxed, tol=args.tol, example_inputs=(x,), snap=args.snap, max_cost=args.max_cost,
                 fill=args.fill).xdfx_report)
    return 0


def _cmd_export(args) -> int:
    from . import export
    from .harden import harden

    relaxed, x = _relaxed(args)
    hard = harden(relaxed, tol=args.tol, example_inputs=(x,), snap=args.snap, max_cost=args.max_cost, fill=args.fill)
    result = export.onnx(hard, (x,), args.out)
    print(result)
    return 0


def _cmd_report(args) -> int:
    from .report import report

    relaxed, x = _relaxed(args)
    path = report(relaxed, args.out, example_inputs=(x,), tol=args.tol)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(arch=args.arch, seed=args.seed, epochs=args.epochs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xdfx`` console script and of ``python -m xdfx``."""
    parser = argparse.ArgumentParser(prog="xdfx", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    sub = parser.add_subparsers(dest="command", required=True)

    def model_command(name: str, help_text: str):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("model", help="package.module:callable returning an nn.Module (no arguments)")
        p.add_argument("--shape", type=_shape, required=True, help="example input shape, e.g. 2,3,32,32")
        p.add_argument("--arch", default="fixed", choices=["monarch", "fixed"], help="structured K, L, M or plain FFTs")
        p.add_argument("--seed", type=int, default=0)
        return p

    p = model_command("relax", "rewrite every conv/pool/graph conv into an XD layer and print the report")
    p.add_argument("--save", help="write the relaxed model's checkpoint here")
    for name, text in (("harden", "relax (and load a searched checkpoint), then harden and print the choices"),
                       ("export", "relax, harden and write a verified ONNX file"),
                       ("report", "write a report folder with per-layer figures")):
        p = model_command(name, text)
        p.add_argument("--checkpoint", help="a checkpoint of the relaxed model (from xdfx.save_checkpoint / search)")
        p.add_argument("--tol", type=float, default=1e-4, help="relative error accepted per layer")
        if name in ("harden", "export"):
            p.add_argument("--snap", default="auto", choices=["auto", "always", "never"],
                           help="snap layers with no cheap form within tol onto their nearest one (then fine-tune)")
            p.add_argument("--max-cost", type=float, default=2.0,
                           help="speed target: what each layer may cost relative to its original conv")
            p.add_argument("--fill", action="store_true",
                           help="snapped layers keep as many modes as --max-cost affords (not the fewest)")
        if name in ("export", "report"):
            p.add_argument("--out", required=True, help="output file (export) or folder (report)")
    p = sub.add_parser("demo", help="the end-to-end demo: relax -> search -> harden -> export on Burgers")
    p.add_argument("--arch", default="fixed", choices=["monarch", "fixed"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args(argv)
    commands = {"relax": _cmd_relax, "harden": _cmd_harden, "export": _cmd_export, "report": _cmd_report, "demo": _cmd_demo}
    try:
        if not 0.0 <= getattr(args, "tol", 0.0) < float("inf"):  # NaN fails both
            raise XdfxInputError(f"--tol is the relative error accepted per layer, a finite number >= 0; got {args.tol}")
        for flag, what in (("out", "--out"), ("save", "--save")):  # before minutes of relaxing, not after
            if getattr(args, flag, None):
                check_writable(getattr(args, flag), what)
        return commands[args.command](args)
    except XdfxError as err:
        print(f"xdfx: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. an unwritable --out or --save path
        print(f"xdfx: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
