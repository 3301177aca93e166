"""Search: optimizer pair, trainer on a tiny Burgers task, checkpoints, failures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import xdfx
from xdfx.search import load_checkpoint, optimizers, save_checkpoint, search
from xdfx.tasks import burgers


class SmallCNN(nn.Module):
    """An FNO-shaped CNN: lift, two 5-tap circular conv layers with a pointwise path, project."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.lift = nn.Conv1d(2, width, 1)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, 5, padding=2, padding_mode="circular") for _ in range(2))
        self.points = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(2))
        self.proj = nn.Conv1d(width, 1, 1)

    def forward(self, x):
        h = self.lift(x)
        for conv, point in zip(self.convs, self.points):
            h = torch.nn.functional.gelu(conv(h) + point(h))
        return self.proj(h)


def _burgers_loaders(tmp_path, monkeypatch, n=48, res=64):
    monkeypatch.setenv("XDFX_CACHE", str(tmp_path / "cache"))
    u0, u1 = burgers.generate(n, res, seed=0)
    grid = torch.linspace(0, 1, res).expand(n, 1, res)
    x = torch.cat([u0[:, None], grid], 1)
    y = u1[:, None] / u1.std()
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=16)
    return train, val, x[:2]


def test_optimizer_pair_keeps_architecture_apart() -> None:
    relaxed = xdfx.relax(SmallCNN(), torch.randn(2, 2, 32), arch="monarch")
    opt = optimizers(relaxed, lambda p: torch.optim.SGD(p, lr=0.1), arch_lr=1e-3, warmup_epochs=2)
    in_model = {id(p) for g in opt.model.param_groups for p in g["params"]}
    assert not in_model & {id(p) for p in xdfx.arch_parameters(relaxed)}
    assert opt.current_arch_lr == 0.0  # warm-up: architecture frozen
    opt.set_epoch(2)
    assert opt.current_arch_lr == pytest.approx(1e-3)
    for g in opt.model.param_groups:  # a schedule halves the model lr: the architecture follows
        g["lr"] = 0.05
    opt.set_epoch(3)
    assert opt.current_arch_lr == pytest.approx(5e-4)


def test_search_decreases_loss_and_moves_architecture(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    train, val, example = _burgers_loaders(tmp_path, monkeypatch)
    relaxed = xdfx.relax(SmallCNN(), example, arch="monarch",
                         exclude=[lambda n, m: m is not None and m.kernel_size == (1,)])
    before = [p.detach().clone() for p in xdfx.arch_parameters(relaxed)]
    opt = optimizers(relaxed, lambda p: torch.optim.Adam(p, lr=3e-3), arch_lr=1e-3)
    out = search(relaxed, train, nn.functional.mse_loss, 6, val_loader=val, opt=opt, progress=False,
                 metric=burgers.relative_l2, metric_name="rel L2")
    h = out.xdfx_history
    assert len(h["train_loss"]) == 6 and h["metric_name"] == "rel L2"
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0]
    assert h["val_metric"][-1] < h["val_metric"][0]
    moved = max(float((p - b).abs().max()) for p, b in zip(xdfx.arch_parameters(relaxed), before))
    assert moved > 1e-4
    assert h["arch_lr"][-1] < h["arch_lr"][0]  # cosine schedule, followed by the architecture


def test_checkpoint_round_trip_and_resume(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    train, val, example = _burgers_loaders(tmp_path, monkeypatch)
    ckpt = tmp_path / "run.pt"
    relaxed = xdfx.relax(SmallCNN(), example)
    search(relaxed, train, nn.functional.mse_loss, 2, opt=optimizers(relaxed), checkpoint=ckpt, progress=False)
    fresh = xdfx.relax(SmallCNN(), example)
    state = load_checkpoint(ckpt, fresh)
    assert state["epoch"] == 2 and len(state["history"]["train_loss"]) == 2
    assert torch.equal(fresh(example), relaxed(example))
    resumed = search(fresh, train, nn.functional.mse_loss, 3, opt=optimizers(fresh), checkpoint=ckpt, resume=True, progress=False)
    assert resumed.xdfx_history["epoch"] == [1, 2, 3]


def test_bad_checkpoints(tmp_path) -> None:
    model = xdfx.relax(SmallCNN(), torch.randn(1, 2, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(xdfx.XdfxError, match="cannot be read"):
        load_checkpoint(corrupt, model)
    other = tmp_path / "other.pt"
    save_checkpoint(other, xdfx.relax(SmallCNN(), torch.randn(1, 2, 48)))
    with pytest.raises(xdfx.XdfxError, match="does not fit this model"):
        load_checkpoint(other, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch, advice", [("monarch", "architecture learning rate"), ("fixed", "lower the learning rate")])
def test_nan_is_caught_with_a_clear_error(arch: str, advice: str) -> None:
    model = xdfx.relax(SmallCNN(), torch.randn(1, 2, 32), arch=arch)
    x = torch.randn(8, 2, 32)
    y = torch.full((8, 1, 32), math.nan)
    with pytest.raises(xdfx.XdfxError, match=f"loss became nan at epoch 1, step 1.*{advice}"):
        search(model, [(x, y)], nn.functional.mse_loss, 1, progress=False)


def test_spectral_decay_fades_high_frequencies_only() -> None:
    torch.manual_seed(0)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(2, 3, 5, padding=2, padding_mode="circular")), torch.randn(1, 2, 32))
    xd = relaxed.get_submodule("0")
    before = xd.spectral_weight.detach().clone()
    opt = optimizers(relaxed, lambda p: torch.optim.Adam(p, lr=1e-2), spectral_decay=2.0)
    for p in relaxed.parameters():
        p.grad = torch.zeros_like(p)  # Adam moves nothing: what changes is the decay alone
    opt.step()
    ratio = xd.spectral_weight.detach()[..., 0] / before[..., 0]  # real parts (DC and Nyquist have no imaginary part)
    lr = 1e-2 * 5  # the spectral kernel's rate: k = 5 taps
    assert torch.allclose(ratio[0], torch.ones_like(ratio[0]))  # the mean is never decayed
    assert torch.allclose(ratio[16], torch.full_like(ratio[16], 1 - lr * 2.0))  # Nyquist: full rate
    assert torch.allclose(ratio[8], torch.full_like(ratio[8], 1 - lr * 2.0 * 0.25))  # half-way: (1/2)^2


def test_search_sets_a_distributed_samplers_epoch() -> None:
    """Each epoch of a ``DistributedSampler`` is shuffled anew (the DDP gotcha of a fixed order)."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 2, 32), torch.randn(16, 1, 32))
    sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=4, sampler=sampler)
    model = xdfx.relax(SmallCNN(), torch.randn(1, 2, 32))
    search(model, loader, nn.functional.mse_loss, 3, progress=False)
    assert sampler.epoch == 2  # set before each of the 3 epochs (it stays 0 otherwise)
