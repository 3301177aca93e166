"""Snap and fine-tune: harden projects a layer that no cheap form reproduces within ``tol`` onto
its nearest cheap form, and ``xdfx.finetune`` retrains the weights on the user's data.

Measured here (float32): the planted conv (K, M and taps perturbed) snaps to its 5 taps, 0.1-0.16
from the searched layer and 0.35-0.5 from the teacher; 200 Adam steps (lr 1e-2) on the teacher's
data bring it within 1e-5 of the teacher (relative max error, seeds 0-2); the test allows 1e-4.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import xdfx
from xdfx.forms import FORM_BY_NAME
from xdfx.harden import MIN_SNAP_ENERGY
from xdfx.ops import LocalPlusModes, SpectralConv


def cost(form: str, flops: float) -> float:
    return flops * FORM_BY_NAME[form].efficiency


def _rel_max(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _perturbed_conv(seed: int = 0):
    """A conv relaxed with learnable K, M; then K, M, its taps and every other tap moved a little."""
    torch.manual_seed(seed)
    conv = nn.Conv1d(4, 4, 5, padding=2)
    x = torch.randn(2, 4, 64)
    relaxed = xdfx.relax(nn.Sequential(conv), x, arch="monarch")
    xd = relaxed.get_submodule("0")
    with torch.no_grad():
        for q in list(xd.M) + list(xd.K):
            q.blocks1.add_(1e-2 * torch.randn_like(q.blocks1))
        w = xd.kernel().clone()
        w[..., :5] += 0.05 * torch.randn(4, 4, 5)
        w += 1e-3 * torch.randn_like(w)
        xd.set_kernel(w)
    return conv, relaxed, x


def _teacher_data(teacher: nn.Module, batches: int, seed: int = 1, batch: int = 32, shape=(4, 64)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batches * batch, *shape, generator=gen)
    with torch.no_grad():
        y = teacher(x)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]


def test_planted_perturbed_conv_snaps_and_finetunes_back() -> None:
    conv, relaxed, x = _perturbed_conv()
    hard = xdfx.harden(relaxed, example_inputs=x)
    (rec,) = hard.xdfx_report.records
    assert rec.form == "snapped_conv" and rec.detail.startswith("k=(5,) d=(1,)"), rec
    assert rec.runner_up == "frozen" and rec.runner_up_error <= 1e-4  # only the slow form was exact
    assert rec.error > 1e-2 and 0 < rec.energy_lost < 1e-2  # what the projection changed and dropped
    layer = hard.get_submodule("0")
    assert isinstance(layer, nn.Conv1d) and layer.kernel_size == (5,) and layer.padding == (2,)
    val = _teacher_data(conv, 2, seed=2)
    with torch.no_grad():
        assert _rel_max(hard(val[0][0]), val[0][1]) > 1e-2  # the snapped taps are not the teacher's yet

    def rel_l2(p, t):
        return float((p - t).norm() / t.norm())

    xdfx.finetune(hard, _teacher_data(conv, 16), nn.functional.mse_loss, steps=200, lr=1e-2, val_loader=val,
                  metric=rel_l2, metric_name="rel L2", reference=relaxed, progress=False)
    with torch.no_grad():
        assert _rel_max(hard(val[0][0]), val[0][1]) < 1e-4
    assert torch.allclose(layer.weight, conv.weight, atol=1e-4)
    report = hard.xdfx_report
    f = report.finetune
    assert f.steps == 200 and f.epochs == 13 and f.metric_name == "rel L2"
    assert f.metric_after < 1e-4 < 1e-2 < f.metric_before
    # against the searched (perturbed) model the fine-tuned layer is as far as the teacher is
    assert f.end_to_end_error_before is not None and rec.finetuned_error > 1e-2
    assert "fine-tuned 200 steps" in str(report)
    saved = asdict(rec)  # what report.json holds per layer
    assert saved["energy_lost"] == rec.energy_lost and saved["finetuned_error"] == rec.finetuned_error


def test_planted_broadband_spectrum_snaps_to_low_modes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 128)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(16, 16, 5, padding=2, padding_mode="circular")), x, arch="fixed")
    xd = relaxed.get_submodule("0")
    spec = 0.01 * torch.randn(16, 16, 65, dtype=torch.complex64)  # a weak tail up to the Nyquist mode
    spec[..., :8] = torch.randn(16, 16, 8, dtype=torch.complex64)  # 99.9% of the energy in 8 modes
    spec[..., 0], spec[..., 64] = spec[..., 0].real, spec[..., 64].real
    xd.set_kernel(torch.fft.irfft(spec.conj(), n=128))
    exact = xdfx.harden(relaxed, example_inputs=x, snap="never")
    assert exact.xdfx_report.records[0].form == "fft"  # every mode is needed within tol
    hard = xdfx.harden(relaxed, example_inputs=x, max_cost=None)  # the fallback rule: fft is never kept
    (rec,) = hard.xdfx_report.records
    assert rec.form == "snapped_spectral" and rec.detail.startswith("modes=8 "), rec
    assert rec.runner_up == "fft" and cost(rec.form, rec.flops_after) < cost("fft", rec.runner_up_flops)
    assert 0 < rec.energy_lost < 1e-2 and 1e-4 < rec.error < 0.1
    layer = hard.get_submodule("0")
    assert isinstance(layer, SpectralConv) and layer.modes == (8,)


def test_planted_stencil_plus_low_modes_snaps_to_both_paths(tmp_path) -> None:
    """A searched layer that kept its conv's stencil and grew a global part on 3 low modes: neither
    taps nor modes alone are near it, the conv's taps plus the modes of the rest are (error within
    float32 round-off of the layer, 1e-5), and the two-path module exports to onnxruntime."""
    torch.manual_seed(0)
    x = torch.randn(20, 32, 256)  # a serving batch: the second path's fixed cost is priced per call
    conv = nn.Conv1d(32, 32, 3, padding=1, padding_mode="circular")
    relaxed = xdfx.relax(nn.Sequential(conv), x, arch="fixed")
    xd = relaxed.get_submodule("0")
    with torch.no_grad():
        w = xd.kernel().clone()
        glob = torch.zeros(32, 32, 129, dtype=torch.complex64)
        glob[..., :3] = 0.3 * torch.randn(32, 32, 3, dtype=torch.complex64)
        glob[..., 0] = glob[..., 0].real
        xd.set_kernel(w + torch.fft.irfft(glob.conj(), n=256))
    hard = xdfx.harden(relaxed, example_inputs=x, max_cost=2.0)
    (rec,) = hard.xdfx_report.records
    assert rec.form == "snapped_local_modes" and rec.detail.startswith("k=(3,) d=(1,)") and "modes=3 " in rec.detail, rec
    assert rec.error < 1e-5 and rec.energy_lost < 1e-9 and rec.cost_ratio <= 2.0
    layer = hard.get_submodule("0")
    assert isinstance(layer, LocalPlusModes) and isinstance(layer.local, nn.Conv1d) and layer.modes.modes == (3,)
    assert torch.allclose(layer.local.weight, conv.weight, atol=1e-5)  # the stencil is the conv's own
    with torch.no_grad():
        assert _rel_max(hard(x), relaxed(x)) < 1e-5
    # at batch 2 the second path's fixed cost is priced over 2 samples: beyond the target
    (small,) = xdfx.harden(relaxed, example_inputs=x[:2], max_cost=2.0).xdfx_report.records
    assert small.form != "snapped_local_modes", small
    snap = {r.form for r in xdfx.harden(relaxed, example_inputs=x, max_cost=2.0, snap="never").xdfx_report}
    assert snap == {"fft"}  # only every mode is exact
    result = xdfx.export.onnx(hard, (x[:2],), tmp_path / "two_paths.onnx", check_batches=(1, 3))
    assert {1, 3} <= set(result.errors) and max(result.errors.values()) < 1e-4


def test_always_lets_snapped_forms_beat_exact_ones() -> None:
    """A spectrum exact on 12 modes with 99.9% of its energy on 4: auto keeps the exact 12-mode
    form, always takes the cheaper snapped 4-mode one."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 512)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(16, 16, 5, padding=2, padding_mode="circular")), x, arch="fixed")
    spec = torch.zeros(16, 16, 257, dtype=torch.complex64)
    spec[..., :12] = 0.01 * torch.randn(16, 16, 12, dtype=torch.complex64)
    spec[..., :4] = torch.randn(16, 16, 4, dtype=torch.complex64)
    spec[..., 0] = spec[..., 0].real
    relaxed.get_submodule("0").set_kernel(torch.fft.irfft(spec.conj(), n=512))
    forms = {snap: xdfx.harden(relaxed, example_inputs=x, snap=snap, max_cost=None).xdfx_report.records[0]
             for snap in ("never", "auto", "always")}
    assert forms["never"].form == forms["auto"].form == "spectral" and forms["auto"].detail.startswith("modes=12 ")
    assert forms["always"].form == "snapped_spectral" and forms["always"].detail.startswith("modes=4 ")
    assert forms["always"].runner_up == "spectral"


def test_default_snaps_learned_general_factors_and_never_keeps_them() -> None:
    """The planted layer of test_harden's frozen fallback: snap="never" keeps today's frozen
    form, the default snaps it onto its 3-tap conv."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(3, 3, 3, padding=1)), x, arch="monarch")
    xd = relaxed.get_submodule("0")
    with torch.no_grad():
        xd.K[0].blocks1.add_(0.05 * torch.randn_like(xd.K[0].blocks1))
    never = xdfx.harden(relaxed, snap="never").xdfx_report
    assert [r.form for r in never] == ["frozen"] and never.records[0].energy_lost is None
    assert "energy lost" not in str(never) and "snapped" not in str(never)
    report = xdfx.harden(relaxed).xdfx_report
    (rec,) = report.records
    assert report.snap == "auto" and rec.form == "snapped_conv" and rec.detail.startswith("k=(3,) d=(1,)")
    assert rec.runner_up == "frozen" and rec.error > 1e-4 and rec.flops_after < 0.2 * rec.flops_before
    assert "fine-tune them with xdfx.finetune" in str(report)


def test_permutation_close_factor_snaps_to_the_permutation() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 60)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(3, 3, 3, padding=1)), x, arch="monarch")
    xd = relaxed.get_submodule("0")
    n = xd.geometry[0].n
    with torch.no_grad():
        xd.M[0].blocks1[0].copy_(torch.eye(n)[torch.randperm(n)] + 1e-2 * torch.randn(n, n))
    hard = xdfx.harden(relaxed, example_inputs=x)
    (rec,) = hard.xdfx_report.records
    assert rec.form == "snapped_conv+permutation" and "permuted M" in rec.detail, rec
    assert rec.error < 0.2 and any(isinstance(m, nn.Conv1d) for m in hard.modules())


def test_snapped_2d_conv() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 12)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), x, arch="monarch")
    with torch.no_grad():
        for q in relaxed.get_submodule("0").M:
            q.blocks1.add_(1e-2 * torch.randn_like(q.blocks1))
    hard = xdfx.harden(relaxed, example_inputs=x)
    (rec,) = hard.xdfx_report.records
    assert rec.form == "snapped_conv" and rec.detail.startswith("k=(3, 3) d=(1, 1)"), rec
    assert isinstance(hard.get_submodule("0"), nn.Conv2d)


def test_the_users_loader_and_loss_drive_the_budget(tmp_path) -> None:
    conv, relaxed, x = _perturbed_conv()
    hard = xdfx.harden(relaxed, example_inputs=x)
    calls = []

    def loss(pred, target):
        calls.append(len(pred))
        return nn.functional.l1_loss(pred, target)

    loader = DataLoader(TensorDataset(*map(torch.cat, zip(*_teacher_data(conv, 3, batch=8)))), batch_size=8)
    ckpt = tmp_path / "ft.pt"
    xdfx.finetune(hard, loader, loss, steps=5, checkpoint=ckpt, progress=False)
    assert calls == [8] * 5 and hard.xdfx_history["steps"] == [3, 5] and hard.xdfx_history["epoch"] == [1, 2]
    assert hard.xdfx_report.finetune.steps == 5 and hard.xdfx_report.finetune.metric_before is None
    twin = xdfx.harden(relaxed, example_inputs=x)
    assert xdfx.load_checkpoint(ckpt, twin)["epoch"] == 2
    assert torch.equal(twin.get_submodule("0").weight, hard.get_submodule("0").weight)
    calls.clear()
    xdfx.finetune(hard, loader, loss, epochs=1, steps=100, progress=False)  # the first budget reached stops
    assert len(calls) == 3


def test_finetune_errors() -> None:
    conv, relaxed, x = _perturbed_conv()
    hard = xdfx.harden(relaxed, example_inputs=x)
    data = _teacher_data(conv, 1)
    empty = DataLoader(TensorDataset(torch.empty(0, 4, 64), torch.empty(0, 4, 64)), batch_size=4)
    with pytest.raises(xdfx.XdfxInputError, match="train_loader is empty"):
        xdfx.finetune(hard, empty, nn.functional.mse_loss, epochs=1, progress=False)
    with pytest.raises(xdfx.XdfxInputError, match="val_loader is empty"):
        xdfx.finetune(hard, data, nn.functional.mse_loss, epochs=1, val_loader=[], progress=False)
    with pytest.raises(xdfx.XdfxInputError, match="train_loader yielded no batch"):
        xdfx.finetune(hard, iter([]), nn.functional.mse_loss, epochs=1, progress=False)
    with pytest.raises(xdfx.XdfxError, match=r"loss became nan at epoch 1, step 1; lower the learning rate"):
        xdfx.finetune(hard, data, lambda p, t: (p - t).sum() * math.nan, epochs=1, progress=False)
    with pytest.raises(xdfx.XdfxInputError, match="budget"):
        xdfx.finetune(hard, data, nn.functional.mse_loss, progress=False)
    with pytest.raises(xdfx.XdfxInputError, match="architecture parameters"):
        xdfx.finetune(relaxed, data, nn.functional.mse_loss, epochs=1, progress=False)
    with pytest.raises(xdfx.XdfxInputError, match="snap must be one of"):
        xdfx.harden(relaxed, snap="sometimes")
    with pytest.raises(xdfx.XdfxInputError, match="energy"):
        xdfx.harden(relaxed, energy=1.5)


def test_taps_around_position_zero_become_a_left_padded_conv() -> None:
    """Taps at circular offsets n-1, 0, 1 read the input at t-2..t: a conv padded (2, 0)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(3, 3, 3, padding=1)), x, arch="monarch")
    xd = relaxed.get_submodule("0")
    with torch.no_grad():
        xd.set_kernel(torch.roll(xd.kernel(), -1, -1))
        xd.K[0].blocks1.add_(0.01 * torch.randn_like(xd.K[0].blocks1))
    hard = xdfx.harden(relaxed, example_inputs=x)
    (rec,) = hard.xdfx_report.records
    assert rec.form == "snapped_conv" and rec.detail.startswith("k=(3,) d=(1,) s=(1,) pad=[(2, 0)]"), rec
    assert rec.error < 0.1  # what K's perturbation changed; the taps themselves were kept whole


def test_refit_is_the_nearest_circular_convolution() -> None:
    """With K, M snapped to the DFT, L w is refit so that each channel pair's operator is the
    circulant nearest the layer's: the mean of the layer matrix's wrapped diagonals."""
    from xdfx.passes.harden_context import without_factors
    from xdfx.passes.harden_snap import refit_spectrum

    torch.manual_seed(0)
    n = 16
    x = torch.randn(2, 2, n, dtype=torch.float64)
    conv = nn.Conv1d(2, 2, 3, padding=1, padding_mode="circular", bias=False).double()
    xd = xdfx.relax(nn.Sequential(conv), x, arch="monarch").get_submodule("0")
    with torch.no_grad():
        for q in list(xd.M) + list(xd.K):
            q.blocks1.add_(0.2 * torch.randn_like(q.blocks1))
        identity = [("identity", None)]
        twin = without_factors(xd)
        twin.set_kernel(torch.fft.irfft(refit_spectrum(xd, xd.spectrum(), identity, identity).conj(), n=n))
        impulses = torch.eye(n, dtype=torch.float64)[:, None].expand(n, 2, n).clone()
        for i in range(2):  # the matrices of the layer and of its twin, from unit impulses into channel i
            only = impulses * (torch.arange(2) == i).double()[None, :, None]
            layer, refit = xd(only).permute(1, 2, 0), twin(only).permute(1, 2, 0)  # (o, out, in)
            rows = torch.arange(n)[:, None]
            shifts = (rows + torch.arange(n)[None]) % n  # [d, b] = (b + d) mod n
            diagonals = layer[:, shifts, torch.arange(n)[None].expand(n, n)].mean(-1)  # (o, d)
            nearest = diagonals[:, (rows - torch.arange(n)[None]) % n]  # C[a, b] = c[a - b]
            assert torch.allclose(refit, nearest, atol=1e-12)


def test_auto_keeps_less_energy_rather_than_leave_a_layer_slow() -> None:
    # a spectrum decaying as 1/(1+k): keeping 99.9999% of its energy needs every mode (no snapped
    # form at all), a few modes keep 90%
    torch.manual_seed(0)
    x = torch.randn(2, 16, 512)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(16, 16, 5, padding=2, padding_mode="circular")), x, arch="fixed")
    xd = relaxed.get_submodule("0")
    spec = torch.randn(16, 16, 257, dtype=torch.complex64) / (1.0 + torch.arange(257))
    spec[..., 0], spec[..., 256] = spec[..., 0].real, spec[..., 256].real
    xd.set_kernel(torch.fft.irfft(spec.conj(), n=512))
    always = xdfx.harden(relaxed, example_inputs=x, snap="always", energy=0.999999)
    assert always.xdfx_report.records[0].form == "fft"  # "always" keeps the energy asked for
    (rec,) = xdfx.harden(relaxed, example_inputs=x, snap="auto", energy=0.999999, max_cost=1.0).xdfx_report.records
    assert FORM_BY_NAME[rec.form].role == "snapped", rec
    kept = float(rec.detail.split("kept ")[1].split("%")[0]) / 100
    assert MIN_SNAP_ENERGY <= kept < 0.999999 and rec.energy_lost > 1e-6
