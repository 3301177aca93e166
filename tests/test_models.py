"""Whole models: relax(model) computes what model computes (float32, 1e-4 * max|y|), in eval and train."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import xdfx
from examples.models import CNN3d, DepthwiseSeparable, ResNetSmall, TCN

MODELS = {
    "resnet2d": (ResNetSmall, (4, 3, 32, 32)),
    "tcn1d": (TCN, (3, 1, 300)),
    "cnn3d": (CNN3d, (2, 1, 10, 9, 7)),
    "mobilenet": (DepthwiseSeparable, (3, 3, 21, 18)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_relaxed_model_matches(name: str, mode: str) -> None:
    torch.manual_seed(0)
    cls, shape = MODELS[name]
    model = cls()
    model.train(mode == "train")
    twin = copy.deepcopy(model)  # train mode updates BatchNorm statistics: compare like with like
    x = torch.randn(*shape)
    relaxed = xdfx.relax(model, (x,))
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    xds = [n for n, m in relaxed.named_modules() if isinstance(m, xdfx.XDConv)]
    assert sorted(xds) == sorted(convs)
    assert not any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in relaxed.modules())
    assert relaxed.training == model.training
    x2 = torch.randn(shape[0] + 1, *shape[1:])
    y, z = twin(x2), relaxed(x2)
    assert float((y - z).abs().max()) <= 1e-4 * float(y.abs().max())
    if mode == "train":  # the BatchNorm running statistics moved identically
        for (n1, b1), (n2, b2) in zip(twin.named_buffers(), relaxed.named_buffers()):
            assert n1 == n2
            assert torch.allclose(b1.float(), b2.float(), rtol=1e-4, atol=1e-5), n1
