"""Errors raised by xdfx. Every message names the layer or node and says what to do."""

from __future__ import annotations


class XdfxError(Exception):
    """Base class of every error xdfx raises on purpose."""


class XdfxTraceError(XdfxError):
    """The model could not be captured as a torch.fx graph."""


class XdfxUnsupportedError(XdfxError):
    """A layer or an argument that xdfx cannot rewrite."""


class XdfxShapeError(XdfxError):
    """An input whose shape the relaxed layer was not built for, or bad example inputs."""


class XdfxInputError(XdfxError):
    """An argument to an xdfx function that is not what it expects."""


class XdfxSlowModelWarning(UserWarning):
    """A model xdfx returned runs slower than the one it was made from; the message says what to change."""
