"""A small on-disk cache of generated data sets, one ``.npz`` file per (name, parameters).

The directory is ``$XDFX_CACHE`` if set, else ``~/.cache/xdfx``. Files are written atomically
(a temporary file in the same directory, then :func:`os.replace`), so a reader never sees a
half-written file. A file that cannot be read, or that was written for other parameters, is
regenerated with a warning rather than raising.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

_KEY_FIELD = "__xdfx_cache_key__"


def cache_dir() -> Path:
    """Return the cache directory (``$XDFX_CACHE`` or ``~/.cache/xdfx``); it is not created here."""
    return Path(os.environ.get("XDFX_CACHE", Path.home() / ".cache" / "xdfx")).expanduser()


def cache_key(name: str, params: dict) -> str:
    """Return the canonical JSON text that identifies ``name`` with ``params`` (sorted keys)."""
    return json.dumps({"name": name, "params": params}, sort_keys=True, separators=(",", ":"))


def cache_path(name: str, params: dict) -> Path:
    """Return the ``.npz`` path for ``name`` and ``params``.

    The file name is ``{name}-{h}.npz`` where ``h`` is the first 20 hex digits of the SHA-256 of
    :func:`cache_key`, which is stable across processes and Python versions.
    """
    digest = hashlib.sha256(cache_key(name, params).encode("utf-8")).hexdigest()[:20]
    return cache_dir() / f"{name}-{digest}.npz"


def cached(name: str, params: dict, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Return the arrays stored for ``(name, params)``, calling ``make()`` and storing them on a miss.

    Parameters
    ----------
    name : str
        Data-set name; used as the file-name prefix, so keep it to ``[A-Za-z0-9_.-]``.
    params : dict
        JSON-serialisable parameters that fully determine the data (include a version number
        for the generating code so that changing the algorithm invalidates old files).
    make : callable
        Builds the data as a dict of numpy arrays (string keys, no object arrays).

    Returns
    -------
    dict[str, numpy.ndarray]
        The arrays, loaded into memory.

    Notes
    -----
    A file that is corrupt, unreadable, or holds another key is regenerated and a
    ``RuntimeWarning`` is issued; a failure to write the cache only warns as well.
    """
    path = cache_path(name, params)
    key = cache_key(name, params)
    if path.exists():
        loaded = _load(path, key)
        if loaded is not None:
            return loaded
    data = {k: np.asarray(v) for k, v in make().items()}
    if _KEY_FIELD in data:
        raise ValueError(f"array name {_KEY_FIELD!r} is reserved")
    _store(path, key, data)
    return data


def _load(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """Read ``path`` fully; return ``None`` (after a warning) when it is unusable."""
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:  # own handle: closed on errors too
            data = {k: npz[k] for k in npz.files}
        stored_key = str(data.pop(_KEY_FIELD))
    except Exception as exc:  # noqa: BLE001 - any failure to read means "regenerate"
        warnings.warn(f"xdfx cache file {path} is unreadable ({exc!r}); regenerating", RuntimeWarning, stacklevel=3)
        return None
    if stored_key != key:
        warnings.warn(f"xdfx cache file {path} holds other parameters; regenerating", RuntimeWarning, stacklevel=3)
        return None
    return data


def _store(path: Path, key: str, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` to ``path`` atomically; warn (do not raise) if that is impossible."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache is ordinary readable data
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **data, **{_KEY_FIELD: np.array(key)})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        warnings.warn(f"could not write xdfx cache file {path} ({exc!r})", RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
