"""``xdfx.report``: an HTML/Markdown folder of figures and tables showing what search did to each XD layer."""

from .build import report
from .history import HISTORY_KEYS

__all__ = ["report", "HISTORY_KEYS"]
