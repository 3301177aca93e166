"""Steady Darcy flow on the unit square, the 2-d task of the FNO paper.

``-div(a grad u) = 1`` on ``(0, 1)^2`` with ``u = 0`` on the boundary, where the permeability ``a``
is 12 where a Gaussian random field with covariance ``(-Laplacian + 9 I)^(-2)`` is non-negative
and 3 elsewhere (Li et al. 2021, section 5.2). The map to learn is ``a -> u``.

All fields live on the ``resolution x resolution`` grid of nodes ``(x_i, y_j) = (i, j) / (resolution - 1)``,
boundary nodes included; arrays are indexed ``[i, j]`` with ``i`` along ``x``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from .cache import cached

__all__ = ["generate", "sample_grf", "solve", "threshold"]

_VERSION = 1  # bump when the generated numbers change, to invalidate cached files
A_HIGH, A_LOW = 12.0, 3.0


def _cosine_basis(resolution: int) -> np.ndarray:
    """``B[i, k] = c_k cos(pi k x_i)`` on the nodes, ``c_0 = 1``, ``c_k = sqrt(2)``: orthonormal in L^2(0, 1)."""
    x = np.linspace(0.0, 1.0, resolution)
    k = np.arange(resolution)
    basis = np.cos(math.pi * np.outer(x, k))
    basis[:, 1:] *= math.sqrt(2.0)
    return basis


def sample_grf(n_samples: int, resolution: int, *, seed: int = 0, tau: float = 3.0, alpha: float = 2.0) -> np.ndarray:
    """Sample a Gaussian random field with covariance ``(-Laplacian + tau^2 I)^(-alpha)`` on the nodes.

    The Laplacian carries zero Neumann boundary conditions on the unit square (as in the FNO
    reference generator). Its orthonormal eigenfunctions are
    ``phi_k(x, y) = c_k1 c_k2 cos(pi k1 x) cos(pi k2 y)`` (``c_0 = 1``, ``c_k = sqrt(2)``) with
    eigenvalues ``pi^2 (k1^2 + k2^2)``, so ``sum_k sqrt(lambda_k) xi_k phi_k`` with i.i.d.
    ``xi_k ~ N(0, 1)`` and ``lambda_k = (pi^2 |k|^2 + tau^2)^(-alpha)`` has the stated covariance.
    The series is truncated to ``0 <= k1, k2 < resolution``, and, like the FNO generator, the
    constant mode ``k = (0, 0)`` is pinned to zero (so the field has spatial mean zero and the
    thresholded coefficient is not dominated by one random offset). Each sample has its own
    random stream (``SeedSequence(seed).spawn``), so sample ``i`` does not depend on ``n_samples``.

    Returns
    -------
    numpy.ndarray
        ``(n_samples, resolution, resolution)`` float64.
    """
    if resolution < 3:
        raise ValueError(f"resolution must be >= 3, got {resolution}")
    k = np.arange(resolution)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    std = (math.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    std[0, 0] = 0.0
    basis = _cosine_basis(resolution)
    xi = np.empty((n_samples, resolution, resolution))
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_samples)):
        xi[i] = np.random.default_rng(child).standard_normal((resolution, resolution))
    return basis @ (std * xi) @ basis.T


def threshold(field: np.ndarray) -> np.ndarray:
    """Map a field to the two-phase permeability: 12 where ``field >= 0``, 3 elsewhere."""
    return np.where(field >= 0.0, A_HIGH, A_LOW)


@lru_cache(maxsize=8)
def _pattern(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparsity pattern of the 5-point matrix on the interior nodes, built once per resolution.

    Returns CSC ``indices``, ``indptr``, and ``order``, ``kind``: entry ``p`` of the CSC data
    comes from the stencil value ``kind[p]`` (0: centre, 1..4: -x, +x, -y, +y neighbour) of the
    interior node ``order[p]``.
    """
    m = resolution - 2
    node = np.arange(m * m).reshape(m, m)
    rows, cols, kinds = [node.ravel()], [node.ravel()], [np.zeros(m * m, dtype=np.int64)]
    for kind, (di, dj) in enumerate(((-1, 0), (1, 0), (0, -1), (0, 1)), start=1):
        src = node[max(0, -di) : m - max(0, di), max(0, -dj) : m - max(0, dj)]
        dst = node[max(0, di) : m + min(0, di), max(0, dj) : m + min(0, dj)]
        rows.append(src.ravel())
        cols.append(dst.ravel())
        kinds.append(np.full(src.size, kind, dtype=np.int64))
    rows, cols, kinds = (np.concatenate(v) for v in (rows, cols, kinds))
    template = scipy.sparse.csc_matrix((np.arange(1, rows.size + 1, dtype=np.float64), (rows, cols)), shape=(m * m, m * m))
    entry = template.data.astype(np.int64) - 1  # CSC position -> COO entry
    return template.indices, template.indptr, rows[entry], kinds[entry]


def _face_coefficients(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic means of the nodal ``a`` on the x-faces ``(s-1, s)`` and y-faces ``(s, s-1)``."""
    ax = 2.0 * a[1:, :] * a[:-1, :] / (a[1:, :] + a[:-1, :])
    ay = 2.0 * a[:, 1:] * a[:, :-1] / (a[:, 1:] + a[:, :-1])
    return ax, ay


def _matrix(a: np.ndarray) -> scipy.sparse.csc_matrix:
    """The symmetric matrix ``h^2 A`` of the 5-point scheme on the interior nodes."""
    s = a.shape[0]
    ax, ay = _face_coefficients(a)
    west, east = ax[:-1, 1:-1], ax[1:, 1:-1]  # faces (i-1/2, j), (i+1/2, j) of interior node (i, j)
    south, north = ay[1:-1, :-1], ay[1:-1, 1:]
    stencil = np.stack([west + east + south + north, -west, -east, -south, -north]).reshape(5, -1)
    indices, indptr, order, kind = _pattern(s)
    m = (s - 2) ** 2
    return scipy.sparse.csc_matrix((stencil[kind, order], indices, indptr), shape=(m, m))


def solve(a: np.ndarray, f: np.ndarray | float = 1.0) -> np.ndarray:
    """Solve ``-div(a grad u) = f`` on the unit square with ``u = 0`` on the boundary.

    Cell-centred finite volumes around each interior node of the uniform node grid
    (``h = 1 / (s - 1)``) give the 5-point scheme
    ``sum_faces a_face (u_P - u_neighbour) / h^2 = f_P``, where ``a_face`` is the harmonic mean of
    ``a`` at the two nodes the face separates (this keeps the flux continuous across jumps of
    ``a``). The matrix is symmetric positive definite (an M-matrix); it is solved with
    :func:`scipy.sparse.linalg.spsolve`. Second-order accurate for smooth ``a`` and ``u``.

    Parameters
    ----------
    a : numpy.ndarray
        Positive coefficient at the nodes, shape ``(s, s)``, ``s >= 3``.
    f : numpy.ndarray or float
        Right-hand side at the nodes (``(s, s)``; boundary values unused) or a constant.

    Returns
    -------
    numpy.ndarray
        ``u`` at all nodes, shape ``(s, s)``, float64, zero on the boundary.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 3:
        raise ValueError(f"a must be a square (s, s) array with s >= 3, got shape {a.shape}")
    if not np.all(a > 0):
        raise ValueError("a must be positive")
    s = a.shape[0]
    h = 1.0 / (s - 1)
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape)[1:-1, 1:-1] * h**2
    u = np.zeros_like(a)
    u[1:-1, 1:-1] = scipy.sparse.linalg.spsolve(_matrix(a), rhs.ravel(), permc_spec="MMD_AT_PLUS_A").reshape(s - 2, s - 2)
    return u


def _make(n_samples: int, resolution: int, seed: int) -> dict[str, np.ndarray]:
    """Sample coefficients and solve; float32 arrays ``a``, ``u``."""
    a = threshold(sample_grf(n_samples, resolution, seed=seed))
    u = np.stack([solve(ai) for ai in a]) if n_samples else np.zeros_like(a)
    return {"a": a.astype(np.float32), "u": u.astype(np.float32)}


def generate(n_samples: int, resolution: int = 64, *, seed: int = 0, cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(a, u)`` of the Darcy task on the ``resolution x resolution`` node grid.

    ``a`` is :func:`threshold` of :func:`sample_grf` (Neumann GRF, covariance
    ``(-Laplacian + 9 I)^(-2)``), with values in ``{3, 12}``; ``u`` is :func:`solve` with ``f = 1``.

    Parameters
    ----------
    n_samples : int
        Number of pairs.
    resolution : int
        Nodes per side, boundary included (FNO's 421 grid corresponds to 421).
    seed : int
        Random seed; sample ``i`` does not depend on ``n_samples``.
    cache : bool
        Read and write the on-disk cache (:func:`xdfx.tasks.cache.cached`).

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``a`` and ``u``, float32, shape ``(n_samples, resolution, resolution)``.
    """
    if n_samples < 0 or resolution < 3:
        raise ValueError(f"need n_samples >= 0 and resolution >= 3, got {n_samples}, {resolution}")
    args = dict(n_samples=int(n_samples), resolution=int(resolution), seed=int(seed))
    make = lambda: _make(**args)  # noqa: E731
    data = cached("darcy", {**args, "version": _VERSION}, make) if cache else make()
    return torch.from_numpy(np.ascontiguousarray(data["a"], np.float32)), torch.from_numpy(np.ascontiguousarray(data["u"], np.float32))
