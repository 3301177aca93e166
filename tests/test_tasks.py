"""Data generators of xdfx.tasks: Burgers 1-d, Darcy 2-d, permuted digits, and the on-disk cache."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import torch

from xdfx.tasks import burgers, cache, darcy, permuted_digits


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDFX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------


def _counting_make(calls: list[int]):
    def make() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(6.0).reshape(2, 3), "y": np.array([1, 2], dtype=np.int64)}

    return make


def test_cache_hit_and_stable_key(_tmp_cache) -> None:
    calls: list[int] = []
    first = cache.cached("toy", {"a": 1, "b": [2, 3]}, _counting_make(calls))
    again = cache.cached("toy", {"b": [2, 3], "a": 1}, _counting_make(calls))  # key order is irrelevant
    assert len(calls) == 1
    assert set(again) == {"x", "y"} and np.array_equal(first["x"], again["x"]) and again["y"].dtype == np.int64
    assert cache.cache_path("toy", {"a": 1, "b": [2, 3]}).parent == _tmp_cache
    assert cache.cache_path("toy", {"a": 1}) != cache.cache_path("toy", {"a": 2})
    assert [p.name for p in _tmp_cache.iterdir()] == [cache.cache_path("toy", {"a": 1, "b": [2, 3]}).name]  # no temp files


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_key"])
def test_corrupt_cache_file_is_regenerated(damage: str) -> None:
    calls: list[int] = []
    params = {"n": 3}
    expected = cache.cached("toy", params, _counting_make(calls))
    path = cache.cache_path("toy", params)
    if damage == "garbage":
        path.write_bytes(b"this is not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        np.savez(path, x=np.zeros(1), __xdfx_cache_key__=np.array("something else"))
    with pytest.warns(RuntimeWarning, match="regenerating"):
        data = cache.cached("toy", params, _counting_make(calls))
    assert len(calls) == 2 and np.array_equal(data["x"], expected["x"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.cached("toy", params, _counting_make(calls))  # the file was rewritten and is good again
    assert len(calls) == 2


def test_generators_use_the_cache(_tmp_cache) -> None:
    a1, u1 = darcy.generate(2, 16, seed=5)
    assert len(list(_tmp_cache.glob("darcy-*.npz"))) == 1
    a2, u2 = darcy.generate(2, 16, seed=5)
    a3, u3 = darcy.generate(2, 16, seed=5, cache=False)
    assert torch.equal(a1, a2) and torch.equal(u1, u2) and torch.equal(a1, a3) and torch.equal(u1, u3)
    burgers.generate(2, 32, solver_resolution=64)
    assert len(list(_tmp_cache.glob("burgers-*.npz"))) == 1


# ---------------------------------------------------------------------------------------------
# Burgers
# ---------------------------------------------------------------------------------------------


def test_burgers_shapes_and_determinism() -> None:
    u0, u1 = burgers.generate(6, 64, solver_resolution=256, seed=0)
    assert u0.shape == u1.shape == (6, 64) and u0.dtype == u1.dtype == torch.float32
    v0, v1 = burgers.generate(6, 64, solver_resolution=256, seed=0, cache=False)
    assert torch.equal(u0, v0) and torch.equal(u1, v1)
    w0, w1 = burgers.generate(6, 64, solver_resolution=256, seed=1, cache=False)
    assert not torch.allclose(u0, w0) and not torch.allclose(u1, w1)
    # sample i depends on the seed and i only, not on how many samples are drawn
    x0, x1 = burgers.generate(3, 64, solver_resolution=256, seed=0, cache=False)
    assert torch.equal(x0, u0[:3]) and torch.equal(x1, u1[:3])
    # a coarser output grid is a strided view of the same data
    y0, y1 = burgers.generate(6, 32, solver_resolution=256, seed=0, cache=False)
    assert torch.equal(y0, u0[:, ::2]) and torch.equal(y1, u1[:, ::2])


def test_burgers_conserves_mean_and_dissipates_energy() -> None:
    u0 = burgers.sample_grf(16, 256, seed=3) + np.linspace(-1.0, 1.0, 16)[:, None]  # non-zero means
    u1 = burgers.solve(u0, 0.1, 1.0)
    np.testing.assert_allclose(u1.mean(axis=1), u0.mean(axis=1), rtol=0, atol=1e-6)
    assert np.all(np.linalg.norm(u1, axis=1) < np.linalg.norm(u0, axis=1))
    # the L2 energy decreases monotonically in time as well
    energies = [np.linalg.norm(burgers.solve(u0[:4], 0.1, t), axis=1) for t in (0.0, 0.05, 0.2, 0.5)]
    assert np.all(np.diff(np.stack(energies), axis=0) < 0)


def test_burgers_solver_is_converged_in_space() -> None:
    # measured: ~2e-12 in float64 (and in float32, whose roundings mostly coincide)
    coarse = burgers.generate(16, 128, solver_resolution=512, cache=False)
    fine = burgers.generate(16, 128, solver_resolution=1024, cache=False)
    assert burgers.relative_l2(coarse[1], fine[1]) < 1e-6  # float32 rounding bound
    u512 = burgers.solve(burgers.sample_grf(16, 512, seed=0), 0.1, 1.0)[:, ::4]
    u1024 = burgers.solve(burgers.sample_grf(16, 1024, seed=0), 0.1, 1.0)[:, ::8]
    assert burgers.relative_l2(u512, u1024) < 1e-10


def test_burgers_solver_is_converged_in_time() -> None:
    u0 = burgers.sample_grf(8, 256, seed=7)
    reference = burgers.solve(u0, 0.1, 1.0, n_steps=4000)
    graded = burgers.relative_l2(burgers.solve(u0, 0.1, 1.0), reference)
    assert graded < 1e-7  # measured ~3e-9
    # the graded first steps matter: the same number of uniform steps is far less accurate
    n_default = len(burgers.step_schedule(burgers.DEFAULT_MAX_DT, 1.0))
    assert burgers.relative_l2(burgers.solve(u0, 0.1, 1.0, n_steps=n_default), reference) > 10 * graded


@pytest.mark.parametrize("k", [1, 3])
def test_burgers_linear_regime_matches_heat_equation(k: int) -> None:
    viscosity, t_final, amplitude = 0.1, 0.25, 1e-9
    x = np.arange(256) / 256
    u0 = amplitude * np.cos(2 * math.pi * k * x + 0.3)
    u1 = burgers.solve(u0, viscosity, t_final)
    exact = u0 * math.exp(-viscosity * (2 * math.pi * k) ** 2 * t_final)
    assert np.linalg.norm(u1 - exact) / np.linalg.norm(exact) < 1e-6


def test_burgers_grf_spectrum_matches_covariance() -> None:
    n, res = 400, 64
    u = burgers.sample_grf(n, res, seed=11)
    coeffs = np.fft.rfft(u, axis=1) / res  # c_k of u(x) = sum_k c_k exp(2 pi i k x)
    k = np.arange(1, res // 2)
    lam = 625.0 * (4 * math.pi**2 * k**2 + 25.0) ** -2
    # |c_k|^2 / lambda_k ~ Exp(1): the mean of n has standard deviation 1 / sqrt(n)
    ratio = (np.abs(coeffs[:, 1 : res // 2]) ** 2).mean(axis=0) / lam
    assert np.all(np.abs(ratio - 1.0) < 5.0 / math.sqrt(n)), ratio
    # real and imaginary parts are independent with variance lambda_k / 2 each
    for part in (coeffs.real, coeffs.imag):
        var = (part[:, 1:6] ** 2).mean(axis=0) / (lam[:5] / 2)
        assert np.all(np.abs(var - 1.0) < 5.0 * math.sqrt(2.0 / n))
    np.testing.assert_allclose(coeffs[:, 0].real, 0.0, atol=1e-12)  # spatial mean pinned to zero
    # pointwise variance (Parseval): E mean_x u^2 = 2 sum_k lambda_k, std of the estimate 2 sqrt(sum lambda^2 / n)
    assert abs((u**2).mean() - 2 * lam.sum()) < 5 * 2 * math.sqrt((lam**2).sum() / n)


def test_relative_l2() -> None:
    target = torch.randn(4, 10, dtype=torch.float64)
    assert burgers.relative_l2(target, target) == 0.0
    assert burgers.relative_l2(2 * target, target) == pytest.approx(1.0)
    assert burgers.relative_l2(target.numpy() * 1.5, target.numpy()) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# Darcy
# ---------------------------------------------------------------------------------------------


def _manufactured_error(s: int, variable: bool) -> float:
    x = np.linspace(0.0, 1.0, s)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    u = np.sin(math.pi * xx) * np.sin(2 * math.pi * yy)
    ux = math.pi * np.cos(math.pi * xx) * np.sin(2 * math.pi * yy)
    uy = 2 * math.pi * np.sin(math.pi * xx) * np.cos(2 * math.pi * yy)
    if variable:
        a, ax, ay = 1 + xx**2 + np.exp(yy), 2 * xx, np.exp(yy)
    else:
        a, ax, ay = np.ones_like(xx), 0 * xx, 0 * xx
    f = a * 5 * math.pi**2 * u - ax * ux - ay * uy  # -div(a grad u)
    return float(np.abs(darcy.solve(a, f) - u).max())


@pytest.mark.parametrize("variable", [False, True])
def test_darcy_second_order(variable: bool) -> None:
    errors = [_manufactured_error(s, variable) for s in (17, 33, 65)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(3.6 < r < 4.4 for r in ratios), (errors, ratios)
    assert errors[-1] < 1e-3


def test_darcy_constant_coefficient_scales() -> None:
    ones = np.ones((21, 21))
    np.testing.assert_allclose(darcy.solve(3.0 * ones), darcy.solve(ones) / 3.0, rtol=1e-12, atol=1e-15)


def test_darcy_samples() -> None:
    a, u = darcy.generate(6, 32, seed=0)
    assert a.shape == u.shape == (6, 32, 32) and a.dtype == u.dtype == torch.float32
    assert set(torch.unique(a).tolist()) == {3.0, 12.0}
    assert all(0 < (ai == 12).float().mean() < 1 for ai in a)  # both phases in every sample
    boundary = torch.cat([u[:, 0, :], u[:, -1, :], u[:, :, 0], u[:, :, -1]], dim=1)
    assert torch.all(boundary == 0)
    assert torch.all(u[:, 1:-1, 1:-1] > 0)
    b, v = darcy.generate(6, 32, seed=0, cache=False)
    assert torch.equal(a, b) and torch.equal(u, v)
    c, w = darcy.generate(6, 32, seed=1, cache=False)
    assert not torch.equal(a, c) and not torch.equal(u, w)
    d, z = darcy.generate(2, 32, seed=0, cache=False)
    assert torch.equal(d, a[:2]) and torch.equal(z, u[:2])


def test_darcy_grf_statistics() -> None:
    field = darcy.sample_grf(200, 24, seed=2)
    basis = darcy._cosine_basis(24)
    # the nodal field is exactly the truncated cosine series: recover the coefficients by solving
    coeffs = np.linalg.solve(basis, np.linalg.solve(basis, field).transpose(0, 2, 1)).transpose(0, 2, 1)
    k = np.arange(24)
    lam = (math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + 9.0) ** -2
    assert np.abs(coeffs[:, 0, 0]).max() < 1e-10
    ratio = (coeffs**2).mean(axis=0)[:3, :3].ravel()[1:] / lam[:3, :3].ravel()[1:]
    assert np.all(np.abs(ratio - 1.0) < 5.0 * math.sqrt(2.0 / 200)), ratio


# ---------------------------------------------------------------------------------------------
# permuted digits
# ---------------------------------------------------------------------------------------------


def test_permuted_digits() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    data = permuted_digits.load(seed=0)
    x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    assert x_train.shape[1:] == x_test.shape[1:] == (1, 8, 8) and x_train.dtype == torch.float32
    assert y_train.dtype == y_test.dtype == torch.int64
    assert len(x_train) == len(y_train) and len(x_test) == len(y_test) == round(0.2 * 1797)
    assert len(x_train) + len(x_test) == 1797
    assert int(y_train.min()) == 0 and int(y_train.max()) == 9 and set(y_test.tolist()) <= set(range(10))
    assert float(x_train.min()) >= 0.0 and float(x_train.max()) <= 1.0

    perm = data["permutation"].numpy()
    assert perm.dtype == np.int64 and np.array_equal(np.sort(perm), np.arange(64))
    assert not np.array_equal(perm, np.arange(64))

    digits = datasets.load_digits()
    index = np.concatenate([data["train_index"].numpy(), data["test_index"].numpy()])
    assert np.array_equal(np.sort(index), np.arange(1797))
    x = torch.cat([x_train, x_test]).numpy()[:, 0]
    restored = permuted_digits.unpermute(x, perm) * 16.0
    assert np.array_equal(restored, digits.images[index])  # exact: k / 16 is representable
    assert np.array_equal(torch.cat([y_train, y_test]).numpy(), digits.target[index])

    again = permuted_digits.load(seed=0)
    assert all(torch.equal(data[key], again[key]) for key in data)
    other = permuted_digits.load(seed=1)
    assert not torch.equal(other["permutation"], data["permutation"])
    assert not torch.equal(other["train_index"], data["train_index"])


def test_permuted_digits_missing_sklearn(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        permuted_digits.load()
