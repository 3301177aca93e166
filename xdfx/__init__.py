"""xdfx: turn a PyTorch CNN into a search space of XD-operations, and back."""

from .errors import XdfxError, XdfxInputError, XdfxShapeError, XdfxSlowModelWarning, XdfxTraceError, XdfxUnsupportedError
from . import export
from .budget import Budget
from .finetune import finetune
from .harden import harden
from .ops import XDConv
from .params import arch_parameters, model_parameters
from .relax import relax
from .report import report
from .search import evaluate, load_checkpoint, optimizers, save_checkpoint, search

__all__ = [
    "Budget",
    "XDConv",
    "XdfxError",
    "XdfxInputError",
    "XdfxShapeError",
    "XdfxSlowModelWarning",
    "XdfxTraceError",
    "XdfxUnsupportedError",
    "arch_parameters",
    "evaluate",
    "finetune",
    "load_checkpoint",
    "optimizers",
    "save_checkpoint",
    "search",
    "harden",
    "model_parameters",
    "relax",
    "report",
]
__version__ = "0.1.0"
