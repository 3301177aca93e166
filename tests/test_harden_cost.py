"""The speed target of harden: ``max_cost`` against the conv each layer was relaxed from, priced by
the FLOP estimate or by timing, and the latency report of the whole model."""

from __future__ import annotations

import re
import time
import warnings

import pytest
import torch
from torch import nn

import xdfx
from xdfx.forms import FORM_BY_NAME
from xdfx.harden import _time_models
from xdfx.records import HardenReport


def _decaying_layer():
    """A fixed-arch layer whose spectrum decays as 1/(1+k): exact only with every mode (the FFT
    form, about 2x the conv's estimated cost), while a few modes keep 90% of its energy."""
    torch.manual_seed(0)
    x = torch.randn(4, 16, 512)
    conv = nn.Sequential(nn.Conv1d(16, 16, 5, padding=2, padding_mode="circular"))
    relaxed = xdfx.relax(conv, x, arch="fixed")
    spec = torch.randn(16, 16, 257, dtype=torch.complex64) / (1.0 + torch.arange(257))
    spec[..., 0], spec[..., 256] = spec[..., 0].real, spec[..., 256].real
    relaxed.get_submodule("0").set_kernel(torch.fft.irfft(spec.conj(), n=512))
    return conv, relaxed, x


def test_an_exact_form_within_the_target_is_kept() -> None:
    _, relaxed, x = _decaying_layer()
    (rec,) = xdfx.harden(relaxed, example_inputs=x, max_cost=2.5, timing=False).xdfx_report.records
    assert rec.form == "fft" and rec.error <= 1e-4
    assert 1.0 < rec.cost_ratio <= 2.5


def test_a_tighter_target_snaps_onto_a_form_that_meets_it() -> None:
    _, relaxed, x = _decaying_layer()
    hard = xdfx.harden(relaxed, example_inputs=x, max_cost=1.6, timing=False)
    (rec,) = hard.xdfx_report.records
    assert FORM_BY_NAME[rec.form].role == "snapped" and rec.cost_ratio <= 1.6, rec
    assert rec.energy_lost > 0 and "cost more than max_cost" not in hard.xdfx_report.summary()


def test_without_a_target_every_fallback_is_snapped() -> None:
    _, relaxed, x = _decaying_layer()
    (rec,) = xdfx.harden(relaxed, example_inputs=x, max_cost=None, timing=False).xdfx_report.records
    assert FORM_BY_NAME[rec.form].role == "snapped", rec


def test_a_layer_that_cannot_meet_the_target_is_named_in_the_summary() -> None:
    # 99.9999% of the energy needs every mode; no form reaches 1/100 of the conv's cost
    _, relaxed, x = _decaying_layer()
    hard = xdfx.harden(relaxed, example_inputs=x, max_cost=0.01, energy=0.999999, timing=False)
    (rec,) = hard.xdfx_report.records
    assert rec.cost_ratio > 0.01
    assert "1 layers cost more than max_cost=0.01x their conv even snapped (0)" in hard.xdfx_report.summary()


def test_measured_pricing_meets_the_target_or_says_so() -> None:
    _, relaxed, x = _decaying_layer()
    hard = xdfx.harden(relaxed, example_inputs=x, max_cost=1.5, cost="measure", timing=False)
    (rec,) = hard.xdfx_report.records
    assert hard.xdfx_report.cost == "measure" and rec.cost_ratio > 0
    over = "cost more than max_cost" in hard.xdfx_report.summary()
    assert rec.cost_ratio <= 1.5 or over
    with torch.no_grad():
        assert torch.isfinite(hard(x)).all()


def test_latency_of_original_relaxed_and_hardened_is_reported() -> None:
    conv, relaxed, x = _decaying_layer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xdfx.XdfxSlowModelWarning)  # timing noise may order the two either way
        report = xdfx.harden(relaxed, example_inputs=x, original=conv).xdfx_report
    assert set(report.latency_ms) == {"original", "relaxed", "hardened"}
    assert all(v > 0 for v in report.latency_ms.values()) and report.threads == torch.get_num_threads()
    assert "hardened / original" in report.summary()


class _Slow(nn.Module):
    """Genuinely slower than the identity: it sleeps 5 ms per call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.005)
        return x


def test_a_hardened_model_slower_than_the_relaxed_one_is_said() -> None:
    report = HardenReport("xdfx.harden", [])
    with pytest.warns(xdfx.XdfxSlowModelWarning, match="slower than the relaxed one"):
        _time_models(report, {"original": None, "relaxed": nn.Identity(), "hardened": _Slow()}, (torch.ones(2, 3),))
    assert report.latency_ms["hardened"] > report.latency_ms["relaxed"]
    assert "SLOWER than the relaxed one" in report.summary()


@pytest.mark.parametrize("kwargs, match", [
    ({"max_cost": 0}, "max_cost"), ({"max_cost": float("nan")}, "max_cost"), ({"max_cost": "fast"}, "max_cost"),
    ({"cost": "guess"}, "cost must be one of"),
])
def test_bad_targets_are_refused(kwargs, match) -> None:
    _, relaxed, x = _decaying_layer()
    with pytest.raises(xdfx.XdfxInputError, match=match):
        xdfx.harden(relaxed, example_inputs=x, **kwargs)


def test_a_snapped_form_fills_the_target_with_modes() -> None:
    # 90% of the energy needs few modes; with fill=True the form keeps as many as the target affords
    _, relaxed, x = _decaying_layer()
    free = xdfx.harden(relaxed, example_inputs=x, max_cost=None, energy=0.9, timing=False).xdfx_report.records[0]
    recs = {c: xdfx.harden(relaxed, example_inputs=x, max_cost=c, energy=0.9, fill=True,
                           timing=False).xdfx_report.records[0] for c in (1.2, 1.6)}
    # without fill: the fewest modes keeping the energy, whatever the target
    unfilled = xdfx.harden(relaxed, example_inputs=x, max_cost=1.6, energy=0.9, timing=False).xdfx_report.records[0]
    assert unfilled.detail.split(",")[0] == free.detail.split(",")[0], (unfilled, free)
    modes = {c: int(re.search(r"modes=(\d+)", r.detail).group(1)) for c, r in [(None, free), *recs.items()]}
    for c, rec in recs.items():
        assert rec.form == "snapped_spectral" and rec.cost_ratio <= c, rec
    assert modes[None] < modes[1.2] < modes[1.6], modes
    assert free.energy_lost > recs[1.2].energy_lost > recs[1.6].energy_lost
    # one mode more would not have fitted: the price per mode is what the two targets' forms differ by
    per_mode = (recs[1.6].cost_ratio - recs[1.2].cost_ratio) / (modes[1.6] - modes[1.2])
    assert recs[1.6].cost_ratio + per_mode > 1.6 * 0.98


def test_fill_without_a_target_is_refused() -> None:
    _, relaxed, x = _decaying_layer()
    with pytest.raises(xdfx.XdfxInputError, match="pass a max_cost"):
        xdfx.harden(relaxed, example_inputs=x, max_cost=None, fill=True, timing=False)
