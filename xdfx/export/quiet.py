"""Silencing the exporter while it runs.

The dynamo exporter prints warnings, log records and, for every failed capture attempt, whole
graph dumps (some of it from C++). Our own errors say what matters, so all of it is captured
instead of shown, and kept for the caller to attach to an error.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Iterator


@dataclass
class CapturedOutput:
    """What the silenced code wrote; filled in when :func:`quiet` exits."""

    text: str = ""


def _mute_loggers() -> dict[str, int]:
    """Raise torch's and onnxscript's loggers to ERROR; return their previous levels."""
    saved = {}
    for name in list(logging.root.manager.loggerDict):
        if name == "torch" or name.startswith(("torch.", "onnxscript")):
            logger = logging.getLogger(name)
            saved[name] = logger.level
            logger.setLevel(logging.ERROR)
    return saved


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[CapturedOutput]:
    """Silence warnings, log records and output (at the file-descriptor level, so C++ output
    too) while the block runs; what was written ends up on the yielded object's ``text``."""
    log = CapturedOutput()
    if not enabled:
        yield log
        return
    saved_levels = _mute_loggers()
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved_fds = []
        try:
            for fd in (1, 2):
                saved_fds.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
        except OSError:  # no usable descriptors (embedded interpreters): Python-level only
            pass
        text = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                warnings.simplefilter("ignore")
                yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, saved in saved_fds:
                os.dup2(saved, fd)
                os.close(saved)
            for name, level in saved_levels.items():
                logging.getLogger(name).setLevel(level)
            sink.seek(0)
            log.text = text.getvalue() + sink.read().decode(errors="replace")
