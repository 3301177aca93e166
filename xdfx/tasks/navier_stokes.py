"""2-d incompressible Navier-Stokes on the unit torus in vorticity form, the 2-d time-dependent task of the FNO paper.

``w_t + u . grad w = viscosity * Laplacian w + f`` on ``[0, 1)^2`` with periodic boundary conditions,
where the velocity comes from the stream function, ``-Laplacian psi = w``, ``u = (psi_y, -psi_x)``
(divergence free), the forcing is ``f = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))`` and the initial
vorticity is a Gaussian random field (Li et al. 2021, section 5.3). The task maps the vorticity at
the first ``t_in`` recorded times to the next ``t_out``.

Fields live on the grid ``(x_i, y_j) = (i, j) / N`` and arrays are indexed ``[..., i, j]`` with ``i``
along ``x``; recorded trajectories put time last, ``(batch, N, N, time)``, as the FNO data do.

Numerics: Fourier pseudo-spectral in space (real 2-d FFTs; the 2/3 rule zeroes the modes with
``|k_x| >= N / 3`` or ``|k_y| >= N / 3`` in the inputs and the output of the advection term, so the
quadratic product is alias free), and in time Crank-Nicolson for the viscous term with Heun's
predictor-corrector for the advection and forcing terms: with ``a = dt viscosity 4 pi^2 |k|^2 / 2``
and ``R(w) = -(u . grad w)^ + f^``,

    w* = [(1 - a) w^n + dt R(w^n)] / (1 + a)
    w^{n+1} = [(1 - a) w^n + dt (R(w^n) + R(w*)) / 2] / (1 + a)

which is second order in ``dt``. The FNO reference code uses the same Crank-Nicolson treatment with
a forward-Euler advection step (first order) and ``dt = 1e-4`` on a 256 x 256 grid.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.fft
import torch

from .cache import cached

__all__ = ["default_time_step", "fno_forcing", "generate", "grf_variance", "sample_grf", "solve", "velocity"]

_VERSION = 1  # bump when the generated numbers change, to invalidate cached files
_WORKERS = 1  # scipy.fft threads: the transforms are small (64 x 64), threads only add overhead
_CHUNK = 2  # samples integrated together: larger batches fall out of the CPU cache and run slower per sample

# Courant number dt * N * max(|u| + |v|) above which solve() stops: Heun-CN ran at 0.4 and blew up from 0.75.
MAX_COURANT = 0.5
DEFAULT_DT_TIMES_N = 0.32  # default dt = 0.32 / N: 5e-3 on 64 x 64


# --------------------------------------------------------------------------------------------
# Gaussian random field and forcing
# --------------------------------------------------------------------------------------------


def grf_variance(k_squared: np.ndarray, *, scale: float = 2.0 * 7.0**3, tau: float = 7.0, alpha: float = 2.5) -> np.ndarray:
    """Eigenvalues ``scale (4 pi^2 |k|^2 + tau^2)^(-alpha)`` of the covariance on ``exp(2 pi i k . x)``."""
    return scale * (4.0 * math.pi**2 * np.asarray(k_squared, dtype=np.float64) + tau**2) ** (-alpha)


@lru_cache(maxsize=8)
def _grf_modes(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Wavenumbers ``(k_x, k_y)`` of the half plane, ``1 <= max(|k_x|, |k_y|) < resolution / 2``, in draw order.

    The half plane is ``k_y > 0`` or ``k_y = 0, k_x > 0`` (the other half follows by conjugate
    symmetry). Modes are ordered by the shell ``max(|k_x|, |k_y|)``, then ``k_x``, then ``k_y``: the
    order does not depend on ``resolution``, so a finer grid draws the same numbers for its low
    modes and only appends new shells.
    """
    kmax = resolution // 2 - 1
    kx, ky = np.meshgrid(np.arange(-kmax, kmax + 1), np.arange(0, kmax + 1), indexing="ij")
    kx, ky = kx.ravel(), ky.ravel()
    keep = (ky > 0) | (kx > 0)
    kx, ky = kx[keep], ky[keep]
    order = np.lexsort((ky, kx, np.maximum(np.abs(kx), ky)))
    return kx[order], ky[order]


def sample_grf(
    n_samples: int,
    resolution: int,
    *,
    seed: int = 0,
    scale: float = 2.0 * 7.0**3,
    tau: float = 7.0,
    alpha: float = 2.5,
) -> np.ndarray:
    """Sample a periodic Gaussian random field on the grid ``(i, j) / resolution`` of the unit torus.

    The field is ``w(x) = sum_k c_k exp(2 pi i k . x)`` with independent complex Gaussian ``c_k``
    (``c_{-k} = conj(c_k)``, real and imaginary parts each ``N(0, lambda_k / 2)``) and
    ``lambda_k = scale (4 pi^2 |k|^2 + tau^2)^(-alpha)`` (:func:`grf_variance`), i.e. covariance
    ``scale (-Laplacian + tau^2 I)^(-alpha)``.

    The default ``scale = 2 * 7^3`` reproduces the field of the FNO reference generator
    (``GaussianRF(2, s, alpha=2.5, tau=7)``: the square roots of the eigenvalues are multiplied by
    ``sqrt(2) sigma`` with ``sigma = 7^(3/2)`` and the real part of a complex white-noise series is
    kept, which gives ``E|c_k|^2 = 2 sigma^2 (...)^(-2.5)``). The paper prints the covariance as
    ``7^(3/2) (-Laplacian + 49 I)^(-2.5)``, i.e. ``sigma`` where ``2 sigma^2`` is meant: that field is
    ``sqrt(2 * 7^(3/2)) ~ 6.1`` times smaller (pass ``scale=7**1.5`` to get it).

    The series is truncated to ``max(|k_x|, |k_y|) < resolution / 2`` (Nyquist modes left out) and,
    as in the reference generator, the mean ``k = 0`` is pinned to zero. Each sample has its own
    random stream (``SeedSequence(seed).spawn``) and draws its modes shell by shell
    (:func:`_grf_modes`): sample ``i`` does not depend on ``n_samples``, and a finer grid keeps the
    coarse grid's modes and adds higher ones.

    Parameters
    ----------
    n_samples, resolution : int
        Number of fields and grid points per side (``resolution`` even, >= 4).
    seed : int
        Seed of the random streams.
    scale, tau, alpha : float
        Covariance parameters.

    Returns
    -------
    numpy.ndarray
        ``(n_samples, resolution, resolution)`` float64, indexed ``[sample, i, j]``.
    """
    if resolution < 4 or resolution % 2:
        raise ValueError(f"resolution must be even and >= 4, got {resolution}")
    kx, ky = _grf_modes(resolution)
    std = np.sqrt(grf_variance(kx**2 + ky**2, scale=scale, tau=tau, alpha=alpha) / 2.0)
    xi = np.empty((n_samples, kx.size, 2))
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_samples)):
        xi[i] = np.random.default_rng(child).standard_normal((kx.size, 2))  # mode-major: prefix-stable
    c = resolution**2 * std * (xi[..., 0] + 1j * xi[..., 1])  # numpy's unnormalised DFT convention
    coeffs = np.zeros((n_samples, resolution, resolution // 2 + 1), dtype=np.complex128)
    coeffs[:, kx % resolution, ky] = c
    axis = ky == 0
    coeffs[:, -kx[axis] % resolution, 0] = np.conj(c[:, axis])  # the k_y = 0 column must be Hermitian itself
    return scipy.fft.irfft2(coeffs, s=(resolution, resolution), axes=(-2, -1), workers=_WORKERS)


def fno_forcing(resolution: int) -> np.ndarray:
    """The FNO forcing ``0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))`` on the grid, ``(resolution, resolution)``."""
    x = np.arange(resolution) / resolution
    phase = 2.0 * math.pi * (x[:, None] + x[None, :])
    return 0.1 * (np.sin(phase) + np.cos(phase))


# --------------------------------------------------------------------------------------------
# Pseudo-spectral Crank-Nicolson / Heun solver
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _operators(n: int) -> dict[str, np.ndarray]:
    """Spectral multipliers on the ``rfft2`` layout ``(n, n // 2 + 1)``."""
    kx = np.fft.fftfreq(n, 1.0 / n)[:, None]
    ky = np.arange(n // 2 + 1, dtype=np.float64)[None, :]
    lap = 4.0 * math.pi**2 * (kx**2 + ky**2)  # symbol of -Laplacian
    mask = ((np.abs(kx) < n / 3.0) & (ky < n / 3.0)).astype(np.float64)  # 2/3 rule
    inv_lap = np.divide(1.0, lap, out=np.zeros_like(lap), where=lap > 0)  # psi = w / |2 pi k|^2, mean of psi 0
    dx, dy = 2j * math.pi * kx, 2j * math.pi * ky
    # rows: u = psi_y, v = -psi_x, w_x, w_y, each restricted to the kept modes
    grad = np.stack([dy * inv_lap, -dx * inv_lap, dx + 0 * ky, dy + 0 * kx]) * mask
    return {"lap": lap, "mask": mask, "grad": grad, "inv_lap": inv_lap, "dx": dx + 0 * ky, "dy": dy + 0 * kx}


def _advection(wh: np.ndarray, ops: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Fourier coefficients of ``-(u . grad w)``, alias free (2/3 rule on inputs and output)."""
    u, v, wx, wy = scipy.fft.irfft2(ops["grad"][:, None] * wh, s=(n, n), axes=(-2, -1), workers=_WORKERS)
    return -ops["mask"] * scipy.fft.rfft2(u * wx + v * wy, axes=(-2, -1), workers=_WORKERS)


def velocity(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Velocity ``(u, v) = (psi_y, -psi_x)`` with ``-Laplacian psi = w`` (mean-free stream function), spectrally."""
    w = np.asarray(w, dtype=np.float64)
    n = w.shape[-1]
    ops = _operators(n)
    psih = scipy.fft.rfft2(w, axes=(-2, -1), workers=_WORKERS) * ops["inv_lap"]
    u = scipy.fft.irfft2(ops["dy"] * psih, s=(n, n), axes=(-2, -1), workers=_WORKERS)
    v = scipy.fft.irfft2(-ops["dx"] * psih, s=(n, n), axes=(-2, -1), workers=_WORKERS)
    return u, v


def default_time_step(resolution: int) -> float:
    """The default inner step ``0.32 / resolution`` (``5e-3`` on 64 x 64, ``1.25e-3`` on 256 x 256).

    The step is limited by the explicit advection term (a Courant condition, ``dt ~ dx / |u|``).
    Measured on 64 x 64 over the FNO horizons (``viscosity = 1e-3 / 1e-4 / 1e-5``,
    ``T = 50 / 30 / 20``): the scheme is stable at ``dt = 1e-2`` (Courant number
    ``dt N max(|u| + |v|)`` up to 0.4) and blows up at ``dt = 2e-2`` for ``1e-4`` and ``1e-5``
    (Courant number ~0.75); the default keeps a factor of four. Against ``dt = 2.5e-3`` the relative
    L2 difference of the default step at the horizon is ``3e-6`` / ``3e-4`` / ``2e-3``.
    """
    return DEFAULT_DT_TIMES_N / resolution


def solve(
    w0: np.ndarray,
    viscosity: float,
    record_dt: float,
    n_records: int = 1,
    *,
    dt: float | None = None,
    forcing: np.ndarray | float | None = None,
) -> np.ndarray:
    """Integrate the vorticity equation from ``w0`` and record ``w`` at ``t = record_dt, 2 record_dt, ...``.

    Parameters
    ----------
    w0 : numpy.ndarray
        Initial vorticity on the grid ``(i, j) / N``, shape ``(N, N)`` or ``(batch, N, N)``, ``N`` even.
    viscosity : float
        Kinematic viscosity (>= 0).
    record_dt : float
        Time between records (> 0).
    n_records : int
        Number of records; the last one is at ``n_records * record_dt``.
    dt : float, optional
        Inner time step, rounded down so that ``record_dt`` is a whole number of steps; default
        :func:`default_time_step` of ``N``. One fixed step for every sample, so a sample's result
        does not depend on the rest of the batch.
    forcing : numpy.ndarray or float, optional
        Time-independent forcing ``f`` on the grid (``(N, N)``) or a constant; default none. Pass
        :func:`fno_forcing` for the FNO task.

    Returns
    -------
    numpy.ndarray
        ``(N, N, n_records)`` or ``(batch, N, N, n_records)`` float64.

    Raises
    ------
    RuntimeError
        If the Courant number ``dt N max(|u| + |v|)`` at a record exceeds :data:`MAX_COURANT`, or the
        solution stops being finite: the step is then too large for the flow.
    """
    w0 = np.asarray(w0, dtype=np.float64)
    squeeze = w0.ndim == 2
    if squeeze:
        w0 = w0[None]
    if w0.ndim != 3 or w0.shape[-1] != w0.shape[-2] or w0.shape[-1] % 2 or w0.shape[-1] < 4:
        raise ValueError(f"w0 must have shape (N, N) or (batch, N, N) with N even >= 4, got {w0.shape}")
    if viscosity < 0 or not record_dt > 0 or n_records < 0:
        raise ValueError("need viscosity >= 0, record_dt > 0 and n_records >= 0")
    n = w0.shape[-1]
    dt = default_time_step(n) if dt is None else float(dt)
    steps = max(1, math.ceil(record_dt / dt - 1e-9))
    dt = record_dt / steps
    fh = scipy.fft.rfft2(np.broadcast_to(np.asarray(0.0 if forcing is None else forcing, dtype=np.float64), (n, n)), workers=_WORKERS)
    out = np.empty((*w0.shape, n_records))
    for start in range(0, len(w0), _CHUNK):
        out[start : start + _CHUNK] = _integrate(w0[start : start + _CHUNK], viscosity, fh, dt, steps, n_records)
    return out[0] if squeeze else out


def _integrate(w0: np.ndarray, viscosity: float, fh: np.ndarray, dt: float, steps: int, n_records: int) -> np.ndarray:
    """Heun-CN steps for a batch ``(b, N, N)``; records every ``steps`` steps, ``(b, N, N, n_records)``."""
    n = w0.shape[-1]
    ops = _operators(n)
    half = 0.5 * dt * viscosity * ops["lap"]
    decay, gain = (1.0 - half) / (1.0 + half), dt / (1.0 + half)
    out = np.empty((*w0.shape, n_records))
    wh = scipy.fft.rfft2(w0, axes=(-2, -1), workers=_WORKERS)
    for record in range(n_records):
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported below as an error
            for _ in range(steps):
                r0 = _advection(wh, ops, n) + fh
                kept = decay * wh
                r1 = _advection(kept + gain * r0, ops, n) + fh  # Heun predictor
                wh = kept + (0.5 * gain) * (r0 + r1)
            w = scipy.fft.irfft2(wh, s=(n, n), axes=(-2, -1), workers=_WORKERS)
            u, v = velocity(w)
            courant = dt * n * float(np.max(np.abs(u) + np.abs(v), initial=0.0))
        if not (np.all(np.isfinite(w)) and courant <= MAX_COURANT):
            raise RuntimeError(
                f"time step {dt:.3g} is unstable on the {n} x {n} grid (Courant number {courant:.3g} at "
                f"t = {(record + 1) * steps * dt:g}); pass a smaller dt"
            )
        out[..., record] = w
    return out


# --------------------------------------------------------------------------------------------
# Public task API
# --------------------------------------------------------------------------------------------


def _make(
    n_samples: int,
    resolution: int,
    viscosity: float,
    t_in: int,
    t_out: int,
    record_dt: float,
    seed: int,
    solver_resolution: int,
    dt: float,
) -> dict[str, np.ndarray]:
    """Sample, solve on the fine grid, subsample; float32 arrays ``x`` (first ``t_in`` records), ``y`` (next ``t_out``)."""
    stride = solver_resolution // resolution
    w0 = sample_grf(n_samples, solver_resolution, seed=seed)
    w = solve(w0, viscosity, record_dt, t_in + t_out, dt=dt, forcing=fno_forcing(solver_resolution))
    w = w[:, ::stride, ::stride].astype(np.float32)
    return {"x": w[..., :t_in], "y": w[..., t_in:]}


def generate(
    n_samples: int,
    resolution: int = 64,
    *,
    viscosity: float = 1e-3,
    t_in: int = 10,
    t_out: int = 10,
    record_dt: float = 1.0,
    seed: int = 0,
    solver_resolution: int | None = None,
    dt: float | None = None,
    cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(x, y)`` of the Navier-Stokes task: the vorticity at ``t_in`` recorded times and at the next ``t_out``.

    The initial vorticity is :func:`sample_grf` (the FNO generator's field, covariance
    ``2 * 7^3 (-Laplacian + 49 I)^(-2.5)``, mean zero) on ``solver_resolution`` points per side; it is
    solved there by :func:`solve` with :func:`fno_forcing` and recorded at
    ``t = record_dt, 2 record_dt, ..., (t_in + t_out) record_dt`` (``t = 0`` itself is not recorded,
    as in the FNO data); the records are subsampled by striding to ``resolution`` points per side.

    The FNO setups are ``viscosity = 1e-3 / 1e-4 / 1e-5`` with ``t_in = 10`` and
    ``t_out = 40 / 20 / 10`` (horizons ``T = 50 / 30 / 20``), solved on 256 x 256 with
    ``dt = 1e-4`` and stored on 64 x 64 (``resolution=64, solver_resolution=256``). The defaults are
    cheaper for a CPU: the horizon is ``T = 20`` (``t_out = 10``), the solver runs on the output
    grid, 64 x 64, and its step is ``dt = 5e-3`` (second-order Heun-CN, where FNO used first-order
    Euler-CN). The 64 x 64 solve is well resolved at ``viscosity = 1e-3``; at ``1e-4`` and ``1e-5``
    a finer ``solver_resolution`` is closer to the FNO data.

    Parameters
    ----------
    n_samples : int
        Number of trajectories.
    resolution : int
        Output grid points per side; must divide ``solver_resolution``.
    viscosity : float
        Kinematic viscosity ``nu``.
    t_in, t_out : int
        Number of recorded input and output times.
    record_dt : float
        Time between records (FNO: 1).
    seed : int
        Random seed; sample ``i`` does not depend on ``n_samples``.
    solver_resolution : int, optional
        Grid of the solver, default ``resolution``.
    dt : float, optional
        Inner time step, default :func:`default_time_step` of ``solver_resolution``.
    cache : bool
        Read and write the on-disk cache (:func:`xdfx.tasks.cache.cached`).

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``x`` of shape ``(n_samples, resolution, resolution, t_in)`` and ``y`` of shape
        ``(n_samples, resolution, resolution, t_out)``, float32, indexed ``[sample, i, j, time]``.
    """
    if solver_resolution is None:
        solver_resolution = resolution
    if n_samples < 0 or resolution < 2 or solver_resolution % resolution or solver_resolution % 2 or solver_resolution < 4:
        raise ValueError(
            f"need n_samples >= 0 and an even solver_resolution >= 4 that is a multiple of resolution; "
            f"got n_samples={n_samples}, resolution={resolution}, solver_resolution={solver_resolution}"
        )
    if t_in < 0 or t_out < 0:
        raise ValueError(f"t_in and t_out must be >= 0, got {t_in}, {t_out}")
    args = dict(
        n_samples=int(n_samples),
        resolution=int(resolution),
        viscosity=float(viscosity),
        t_in=int(t_in),
        t_out=int(t_out),
        record_dt=float(record_dt),
        seed=int(seed),
        solver_resolution=int(solver_resolution),
        dt=float(default_time_step(solver_resolution) if dt is None else dt),
    )
    make = lambda: _make(**args)  # noqa: E731
    data = cached("navier_stokes", {**args, "version": _VERSION}, make) if cache else make()
    return torch.from_numpy(np.ascontiguousarray(data["x"], np.float32)), torch.from_numpy(np.ascontiguousarray(data["y"], np.float32))
