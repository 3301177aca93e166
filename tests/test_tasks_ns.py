"""The Navier-Stokes data generator of xdfx.tasks: exact solutions, invariants, convergence, caching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xdfx.tasks import navier_stokes as ns


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDFX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n) / n
    return np.meshgrid(x, x, indexing="ij")


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("viscosity", [1e-3, 1e-2])
def test_modes_of_one_wavenumber_decay_exactly(viscosity: float) -> None:
    # modes with the same |k| are steady for the Euler part (psi = w / |2 pi k|^2, so u . grad w = 0)
    # and each decays as exp(-viscosity 4 pi^2 |k|^2 t); |k|^2 = 25 here
    x, y = _grid(32)
    w0 = np.sin(2 * math.pi * (3 * x + 4 * y)) + 0.5 * np.cos(2 * math.pi * 5 * x) + 0.3 * np.sin(2 * math.pi * (4 * x - 3 * y) + 1.0)
    rate = viscosity * 4 * math.pi**2 * 25
    dt, t_final = 5e-3, 1.0
    w = ns.solve(w0, viscosity, 0.5, 2, dt=dt)
    exact = w0[..., None] * np.exp(-rate * np.array([0.5, 1.0]))
    # Crank-Nicolson's factor (1 - a) / (1 + a), a = rate dt / 2, is reproduced to rounding ...
    a = rate * dt / 2
    np.testing.assert_allclose(w[..., -1], w0 * ((1 - a) / (1 + a)) ** round(t_final / dt), rtol=0, atol=1e-12)
    # ... and differs from the exponential by t rate^3 dt^2 / 12 (relative), 2e-6 / 2e-3 here
    bound = t_final * rate**3 * dt**2 / 12
    assert _relative(w, exact) < 1.1 * bound, (_relative(w, exact), bound)


def test_forced_mode_approaches_its_steady_state() -> None:
    # the FNO forcing is one wavenumber, |k|^2 = 2: from w0 = 0, w = f (1 - exp(-nu lam t)) / (nu lam) exactly
    viscosity, n = 1e-3, 32
    f = ns.fno_forcing(n)
    lam = 8 * math.pi**2
    dt = 5e-3
    w = ns.solve(np.zeros((n, n)), viscosity, 1.0, 3, dt=dt, forcing=f)
    steady = f[..., None] / (viscosity * lam)
    times = np.arange(1.0, 4.0)
    # Crank-Nicolson with Heun (exact for a constant right-hand side): w_n = steady (1 - r^n), r = (1 - a) / (1 + a)
    a = viscosity * lam * dt / 2
    np.testing.assert_allclose(w, steady * (1 - ((1 - a) / (1 + a)) ** np.round(times / dt)), rtol=0, atol=1e-12)
    # against the exponential: relative error ~ t (nu lam)^3 dt^2 / 12 * exp(-nu lam t) / (1 - exp(-nu lam t)) ~ 1e-8
    exact = steady * (1 - np.exp(-viscosity * lam * times))
    assert _relative(w, exact) < 1e-7  # measured 5e-8


def test_mean_vorticity_is_conserved() -> None:
    w0 = ns.sample_grf(2, 32, seed=4)
    np.testing.assert_allclose(w0.mean(axis=(1, 2)), 0.0, atol=1e-14)
    shifted = w0 + np.array([0.0, 0.7])[:, None, None]  # a non-zero mean stays what it is
    w = ns.solve(shifted, 1e-4, 1.0, 4, dt=1e-2, forcing=ns.fno_forcing(32))
    np.testing.assert_allclose(w.mean(axis=(1, 2)), np.array([0.0, 0.7])[:, None] + np.zeros(4), rtol=0, atol=1e-12)
    # and the velocity is divergence free: u = psi_y, v = -psi_x
    u, v = ns.velocity(w[..., -1])
    k = np.fft.fftfreq(32, 1 / 32)
    div = np.fft.ifft2(2j * math.pi * (k[:, None] * np.fft.fft2(u) + k[None, :] * np.fft.fft2(v))).real
    assert np.abs(div).max() < 1e-12


def test_second_order_in_time() -> None:
    # a nonlinear flow from a random field, FNO forcing; the error of dt, dt/2 against dt/8 shrinks ~4x
    w0 = 3.0 * ns.sample_grf(2, 32, seed=2)  # stronger than the default field: advection matters
    f = ns.fno_forcing(32)
    solutions = [ns.solve(w0, 1e-3, 2.0, 1, dt=dt, forcing=f) for dt in (0.04, 0.02, 0.005)]
    errors = [_relative(s, solutions[-1]) for s in solutions[:-1]]
    assert errors[0] < 1e-3 and 3.0 < errors[0] / errors[1] < 5.5, errors  # measured 3.7e-4, ratio 4.2
    # the advection term matters: without it (heat equation with forcing, solved exactly) the result is far off
    k = np.fft.fftfreq(32, 1 / 32)
    lam = 4 * math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
    decay = np.exp(-1e-3 * lam * 2.0)
    heat_h = decay * np.fft.fft2(w0) + np.fft.fft2(f) * np.divide(1 - decay, 1e-3 * lam, out=np.zeros_like(lam), where=lam > 0)
    assert _relative(np.fft.ifft2(heat_h).real, solutions[-1][..., 0]) > 100 * errors[0]  # measured 0.47 vs 3.7e-4


def test_grf_spectrum_matches_covariance() -> None:
    n, res = 200, 16
    w = ns.sample_grf(n, res, seed=11)
    coeffs = np.fft.fft2(w) / res**2  # c_k of w(x) = sum_k c_k exp(2 pi i k . x)
    k = np.fft.fftfreq(res, 1 / res)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    lam = ns.grf_variance(k2)
    kept = (np.abs(k[:, None]) < res / 2) & (np.abs(k[None, :]) < res / 2) & (k2 > 0)
    ratio = (np.abs(coeffs) ** 2).mean(axis=0)[kept] / lam[kept]
    # |c_k|^2 / lambda_k ~ Exp(1), averaged over n samples: std 1 / sqrt(n)
    assert np.all(np.abs(ratio - 1.0) < 5.0 / math.sqrt(n)), ratio
    np.testing.assert_allclose(coeffs[:, 0, 0], 0.0, atol=1e-14)
    assert np.abs(coeffs[:, ~kept & (k2 > 0)]).max() < 1e-14  # Nyquist modes left out
    # a finer grid keeps the coarse grid's modes and adds new ones
    fine = np.fft.fft2(ns.sample_grf(3, 2 * res, seed=11)) / (2 * res) ** 2
    k_low = np.r_[0 : res // 2, -res // 2 + 1 : 0]
    np.testing.assert_allclose(fine[np.ix_(range(3), k_low, k_low)], coeffs[np.ix_(range(3), k_low, k_low)], rtol=0, atol=1e-15)


def test_generate_shapes_determinism_and_cache(_tmp_cache) -> None:
    kwargs = dict(t_in=2, t_out=3, record_dt=0.25, solver_resolution=32)
    x, y = ns.generate(3, 16, **kwargs, seed=0)
    assert x.shape == (3, 16, 16, 2) and y.shape == (3, 16, 16, 3) and x.dtype == y.dtype == torch.float32
    assert len(list(_tmp_cache.glob("navier_stokes-*.npz"))) == 1
    x2, y2 = ns.generate(3, 16, **kwargs, seed=0)  # cache hit
    x3, y3 = ns.generate(3, 16, **kwargs, seed=0, cache=False)  # recomputed
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(x, x3) and torch.equal(y, y3)
    assert len(list(_tmp_cache.glob("navier_stokes-*.npz"))) == 1
    # sample i depends on the seed and i only
    x1, y1 = ns.generate(1, 16, **kwargs, seed=0, cache=False)
    assert torch.equal(x1, x[:1]) and torch.equal(y1, y[:1])
    xs, ys = ns.generate(3, 16, **kwargs, seed=1, cache=False)
    assert not torch.allclose(xs, x) and not torch.allclose(ys, y)
    # the output is the solver grid strided, and the records continue one another
    xf, yf = ns.generate(3, 32, **kwargs, seed=0, cache=False)
    assert torch.equal(xf[:, ::2, ::2], x) and torch.equal(yf[:, ::2, ::2], y)
    w = ns.solve(ns.sample_grf(3, 32, seed=0), 1e-3, 0.25, 5, forcing=ns.fno_forcing(32))
    np.testing.assert_array_equal(w[:, ::2, ::2].astype(np.float32), torch.cat([x, y], dim=-1).numpy())


def test_unstable_step_is_refused() -> None:
    w0 = 20.0 * ns.sample_grf(1, 32, seed=0)
    with pytest.raises(RuntimeError, match="unstable"):
        ns.solve(w0, 1e-5, 1.0, 2, dt=0.1)
