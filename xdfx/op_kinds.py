"""Every kind of op that :func:`xdfx.relax` rewrites or keeps, in one table.

Each row says what it matches (module classes, a module predicate, functions), the pass that rewrites it into an
XD layer (or why it is kept), and the harden form (:mod:`xdfx.forms`) that gives the original op
back. Rows are tried in order; a module or function matches at most one row. Adding an op kind is
adding a row (and its pass, a function ``(ctx, kind) -> None`` over the traced graph).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .passes.context import RelaxContext
from .passes.relax_conv import relax_conv_functions, relax_conv_modules
from .passes.relax_conv_variants import is_plain_conv_subclass
from .passes.relax_graphconv import relax_graph_convs
from .passes.relax_pool import relax_pools
from .passes.relax_pyg import is_other_pyg_layer, is_pyg_conv, relax_pyg_convs


@dataclass(frozen=True)
class OpKind:
    """One row of the table: an op kind and how relax and harden treat it."""

    name: str  # what relax reports as the record's ``kind``
    modules: tuple[type, ...] = ()  # module classes matched by exact type (subclasses may change forward)
    functions: tuple[Callable, ...] = ()  # call_function targets (and method names) matched
    relax: Callable[[RelaxContext, "OpKind"], None] | None = None  # the pass; None: kept
    restore: str | None = None  # the harden form that gives the original op back
    kept_because: str = ""  # the report's reason, for rows that are kept
    module_test: Callable[[nn.Module], bool] | None = None  # matches modules by predicate (subclasses), after ``modules``

    def matches_module(self, module: nn.Module | None) -> bool:
        if module is None:
            return False
        return type(module) in self.modules or (self.module_test is not None and self.module_test(module))

    def matches_function(self, target) -> bool:
        return any(target is f for f in self.functions)


OP_KINDS: tuple[OpKind, ...] = (
    OpKind("conv", modules=(nn.Conv1d, nn.Conv2d, nn.Conv3d), relax=relax_conv_modules, restore="conv"),
    # subclasses that compute what nn.Conv*d computes (parametrized convs: the weight's value is folded in)
    OpKind("conv_subclass", module_test=is_plain_conv_subclass, relax=relax_conv_modules, restore="conv"),
    OpKind("conv_function", functions=(F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d),
           relax=relax_conv_functions, restore="conv_function"),
    OpKind("avg_pool",
           modules=(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                    nn.AdaptiveAvgPool3d),
           functions=(F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                      F.adaptive_avg_pool3d),
           relax=relax_pools, restore="pool"),
    # PyTorch Geometric layers, kept whole by tracing and relaxed on the example call's graph
    OpKind("pyg_conv", module_test=is_pyg_conv, relax=relax_pyg_convs, restore="graph_polynomial"),
    OpKind("pyg_other", module_test=is_other_pyg_layer,
           kept_because="PyG layer that is not a fixed linear operator on the graph (attention, max or learned "
                        "aggregation) or not supported yet: kept whole"),
    OpKind("graph_conv", functions=(operator.matmul, torch.matmul, torch.mm, torch.sparse.mm, torch.spmm),
           relax=relax_graph_convs, restore="graph_polynomial"),
    OpKind("max_pool",
           modules=(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                    nn.AdaptiveMaxPool3d),
           functions=(F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                      F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d),
           kept_because="max pooling is not linear: kept"),
    OpKind("conv_transpose", modules=(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
           kept_because="transposed convolution: not supported yet, kept"),
)


def kind_named(name: str) -> OpKind:
    return next(k for k in OP_KINDS if k.name == name)


def module_kind(module: nn.Module) -> OpKind | None:
    """The row matching a module (modules inside leaves are matched this way)."""
    return next((k for k in OP_KINDS if k.matches_module(module)), None)
