"""What the report reads about each XD layer beyond the layer itself.

Harden's decision comes from the hardened model's report, the relax kind from the relaxed model's
report, and the conv taps of a layer relaxed from a functional conv (``forward(x, weight, bias)``)
from the weight it is fed at run time or, failing that, from the graph's ``get_attr`` argument.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from ..common import attribute, capture_inputs, graph_nodes_calling
from ..errors import XdfxInputError
from ..ops import XDConv

#: Relax kinds under the name the report has always shown them by.
_ORIGIN_LABELS = {"avg_pool": "pool", "max_pool": "pool"}


def harden_records(hardened: nn.Module, names: list[str]) -> dict:
    """Layer name -> harden's record for each of ``names``, checking ``hardened`` is harden's output."""
    recs = getattr(getattr(hardened, "xdfx_report", None), "records", None)
    if not isinstance(recs, list) or not all(hasattr(r, "form") and hasattr(r, "name") for r in recs):
        raise XdfxInputError("hardened must be the output of xdfx.harden (a model with .xdfx_report of HardenRecords)")
    by_name = {r.name: r for r in recs}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise XdfxInputError(
            f"hardened has no harden decision for the XD layers {missing[:4]}: pass xdfx.harden's output for this same model"
        )
    return by_name


def origin_kind(model: nn.Module, name: str, layer: nn.Module) -> str:
    """What relax built the layer from: conv, conv_function, pool or graph_conv."""
    rec = next((r for r in getattr(model, "xdfx_report", ()) if r.name == name and r.status == "relaxed"), None)
    kind = rec.kind if rec else ("conv" if isinstance(layer, XDConv) else "graph_conv")
    if kind == "conv" and getattr(layer, "external_weight", False):
        return "conv_function"  # its taps arrive as a forward argument
    return _ORIGIN_LABELS.get(kind, kind)


def runtime_weights(model: nn.Module, layers: dict[str, nn.Module], inputs: tuple | None) -> dict[str, torch.Tensor]:
    """Conv taps of the XD layers relaxed from functional convs, by layer name (where found)."""
    need = [n for n, m in layers.items() if isinstance(m, XDConv) and m.external_weight]
    found: dict[str, torch.Tensor] = {}
    if need and inputs is not None:
        for name, args in capture_inputs(model, need, inputs).items():
            if len(args) > 1 and isinstance(args[1], torch.Tensor):
                found[name] = args[1]
    for name in [n for n in need if n not in found]:
        for node in graph_nodes_calling(model, name):
            arg = node.args[1] if len(node.args) > 1 else None
            if isinstance(arg, fx.Node) and arg.op == "get_attr":
                found[name] = attribute(model, arg.target).detach()
                break
    return found
