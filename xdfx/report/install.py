"""Putting a finished report folder in place without ever leaving a half-written one.

The report is written into a temporary sibling of the target and renamed over it at the end; an
existing folder is replaced only when it is empty or holds an earlier xdfx report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from ..errors import XdfxError

# The former module's name: report folders written before the package split carry it too.
GENERATOR = "xdfx.visual"


def _is_report(folder: Path) -> bool:
    try:
        return json.loads((folder / "report.json").read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def check_target(target: Path) -> None:
    """Fail early, before any work, if ``target`` cannot become the report folder."""
    where = f"cannot write the report to {str(target)!r}"
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise XdfxError(f"{where}: it exists and is not a directory (a file or a link)")
        if any(target.iterdir()) and not _is_report(target):
            raise XdfxError(f"{where}: the folder is not empty and holds no xdfx report; choose a new path")
    ancestor = target.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise XdfxError(f"{where}: {str(ancestor)!r} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise XdfxError(f"{where}: {str(ancestor)!r} is not writable")


def make_temp(target: Path) -> Path:
    """An empty hidden folder next to ``target`` (same file system, so the final rename is atomic)."""
    try:
        target.absolute().parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.absolute().parent))
    except OSError as exc:
        raise XdfxError(f"cannot write the report to {str(target)!r}: {exc}") from exc


def install(tmp: Path, target: Path) -> None:
    """Move the finished folder into place, replacing an earlier report only once it is complete."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.absolute().parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
