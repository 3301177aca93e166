"""Relaxed and hardened models save and load whole with ``torch.save`` (the user's model here is
defined in a module with ``from __future__ import annotations``, whose string annotations fx
cannot pickle), and compute the same after loading."""

from __future__ import annotations

import io

import torch

import xdfx
from xdfx.demo import BurgersCNN, _pointwise


def _roundtrip(model: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_relaxed_and_hardened_models_save_and_load_whole() -> None:
    torch.manual_seed(0)
    model, x = BurgersCNN(width=8, layers=2).eval(), torch.randn(3, 2, 32)
    relaxed = xdfx.relax(model, x, exclude=[_pointwise])
    hardened = xdfx.harden(relaxed, example_inputs=(x,))
    for m in (relaxed, hardened):
        loaded = _roundtrip(m)
        with torch.no_grad():
            assert torch.equal(loaded(x), m(x))
        assert str(loaded.xdfx_report) == str(m.xdfx_report)
