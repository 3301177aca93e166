"""Searching a relaxed model: weights and architecture trained together, on every batch.

As in the XD paper: the model weights use the backbone's usual optimizer, the architecture
parameters (the structured K, L, M factors) their own (Adam by default) with their own learning
rate; both step on every batch with the same loss; optional warm-up epochs keep the architecture
frozen; the architecture learning rate follows the model's schedule.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .common import check_finite, check_writable
from .errors import XdfxError, XdfxInputError
from .params import arch_parameters, model_parameters

OptimizerFactory = Callable[[list], torch.optim.Optimizer]


@dataclass
class SearchOptimizers:
    """The pair of optimizers of a search, stepped together.

    ``arch_lr`` is the architecture learning rate at the model's initial learning rate; it is 0
    during ``warmup_epochs`` and then scales with the model optimizer's learning rate (so a
    cosine or step schedule on the model optimizer drives both).
    """

    model: torch.optim.Optimizer
    arch: torch.optim.Optimizer | None
    arch_lr: float
    warmup_epochs: int = 0
    spectral_decay: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    _base_lr: float = field(init=False)

    def __post_init__(self) -> None:
        self._base_lr = self.model.param_groups[0]["lr"]
        self.set_epoch(0)

    def zero_grad(self) -> None:
        self.model.zero_grad(set_to_none=True)
        if self.arch is not None:
            self.arch.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.model.step()
        if self.arch is not None and self.current_arch_lr > 0:
            self.arch.step()
        if self.spectral_decay:
            self._decay_spectra()

    @torch.no_grad()
    def _decay_spectra(self) -> None:
        """Decoupled per-frequency weight decay ``v <- v (1 - lr rate(k))`` on spectral kernels."""
        lrs = {id(p): g["lr"] for g in self.model.param_groups for p in g["params"]}
        for p, rate in self.spectral_decay:
            p.mul_(1.0 - lrs[id(p)] * rate)

    @property
    def current_arch_lr(self) -> float:
        return 0.0 if self.arch is None else self.arch.param_groups[0]["lr"]

    def set_epoch(self, epoch: int) -> None:
        """Set the architecture learning rate for ``epoch`` (call after the model's scheduler)."""
        if self.arch is None:
            return
        ratio = self.model.param_groups[0]["lr"] / self._base_lr if self._base_lr else 1.0
        lr = 0.0 if epoch < self.warmup_epochs else self.arch_lr * ratio
        for group in self.arch.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "arch": None if self.arch is None else self.arch.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.arch is not None and state.get("arch") is not None:
            self.arch.load_state_dict(state["arch"])


def kernel_lr_scales(model: nn.Module) -> dict[int, float]:
    """``id(kernel parameter) -> learning-rate scale`` for every XD layer.

    An adaptive optimizer moves every coordinate by about its learning rate. A kernel grown from
    k to n spatial taps would then change the operator n/k times faster per step than the conv it
    came from (and diverge at the conv's learning rate), so spatial kernels get ``k / n``: the
    per-step change of the operator stays where it was, while the new taps still grow. A
    spectral kernel (the stored diagonal ``L w``) moves each frequency's gain by about its
    rate, where the conv's k taps could move it by k rates: it gets ``k``.
    """
    from .ops import XDConv

    scales = {}
    for m in model.modules():
        if isinstance(m, XDConv):
            k = math.prod(g.kernel for g in m.geometry)
            if m.spectral:
                scales[id(m.spectral_weight)] = float(k)
                continue
            buf = math.prod(g.kernel_buffer for g in m.geometry)
            p = m.growth if m.external_weight else m.weight
            scales[id(p)] = k / buf
    return scales


def optimizers(
    model: nn.Module,
    model_optimizer: OptimizerFactory | None = None,
    *,
    arch_optimizer: OptimizerFactory | None = None,
    arch_lr: float = 1e-3,
    warmup_epochs: int = 0,
    scale_kernel_lr: bool = True,
    spectral_decay: float = 0.0,
    decay_power: float = 2.0,
) -> SearchOptimizers:
    """Build the optimizer pair. Architecture parameters are never given to the model optimizer.

    ``model_optimizer`` / ``arch_optimizer`` map parameters (a list, or a list of parameter-group
    dicts) to an optimizer, e.g. ``lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)``;
    defaults: Adam(lr=1e-3) for the weights and Adam(lr=arch_lr) for the architecture. With
    ``scale_kernel_lr`` each XD kernel gets its own group at ``lr * k / n``
    (see :func:`kernel_lr_scales`).

    ``spectral_decay`` (0 = off) is a decoupled weight decay on the stored diagonals ``L w`` of
    spectral XD layers, at rate ``spectral_decay * (|f| / |f|_max) ** decay_power`` for
    frequency ``f``: high frequencies fade unless the loss keeps them, so the search prefers
    low-pass (FNO-like) operators that :func:`xdfx.harden` can truncate to few modes.
    """
    if not 0.0 <= arch_lr < math.inf:  # NaN fails both
        raise XdfxInputError(f"arch_lr must be a finite number >= 0, got {arch_lr}")
    weights, arch = model_parameters(model), arch_parameters(model)
    make_model = model_optimizer or (lambda p: torch.optim.Adam(p, lr=1e-3))
    make_arch = arch_optimizer or (lambda p: torch.optim.Adam(p, lr=arch_lr))
    scales = kernel_lr_scales(model) if scale_kernel_lr else {}
    plain = [p for p in weights if id(p) not in scales]
    groups = ([{"params": plain}] if plain else []) + [
        {"params": [p], "lr_scale": scales[id(p)]} for p in weights if id(p) in scales
    ]
    model_opt = make_model(groups)
    for group in model_opt.param_groups:
        group["lr"] *= group.get("lr_scale", 1.0)
    decay = []
    if spectral_decay:
        from .ops import XDConv

        ids = {id(p) for g in model_opt.param_groups for p in g["params"]}
        for m in model.modules():
            if isinstance(m, XDConv) and m.spectral and id(m.spectral_weight) in ids:
                decay.append((m.spectral_weight, spectral_decay * m.frequency_weights(decay_power)))
    return SearchOptimizers(model_opt, make_arch(arch) if arch else None, arch_lr, warmup_epochs, decay)


# ------------------------------------------------------------------------------------ checkpoints
def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a (Distributed)DataParallel wrapper: checkpoints load into a plain model."""
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, parallel) else model


def _writes_checkpoints() -> bool:
    """Rank 0 writes (the replicas are identical); every process outside torch.distributed does."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def save_checkpoint(path: str | os.PathLike, model: nn.Module, opt: SearchOptimizers | None = None,
                    *, epoch: int = 0, history: dict | None = None) -> None:
    """Write model, optimizers, epoch and history atomically (a crash never leaves half a file)."""
    path = Path(path)
    payload = {"format": "xdfx-checkpoint-1", "model": model.state_dict(), "epoch": epoch,
               "optimizers": None if opt is None else opt.state_dict(), "history": history or {}}
    check_writable(path, "the checkpoint")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise XdfxError(f"cannot write the checkpoint {str(path)!r}: {err.strerror or err}; pass a path in a "
                        "writable folder") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | os.PathLike, model: nn.Module, opt: SearchOptimizers | None = None) -> dict:
    """Load a checkpoint into a freshly relaxed ``model`` (``weights_only=True``); returns
    ``{"epoch", "history"}``. A corrupt or foreign file raises an ``XdfxError`` and changes nothing."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's own message can run to 20 lines: its first line is enough
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise XdfxError(f"checkpoint {str(path)!r} cannot be read ({type(err).__name__}: {first}); it is "
                        "corrupt, truncated or not an xdfx checkpoint: write it again with xdfx.save_checkpoint") from err
    if not isinstance(payload, dict) or payload.get("format") != "xdfx-checkpoint-1":
        raise XdfxError(f"{str(path)!r} is not an xdfx checkpoint (no 'format' marker)")
    state = payload.get("model")
    if not isinstance(state, dict):
        raise XdfxError(f"checkpoint {str(path)!r} holds no model state (its 'model' entry is "
                        f"{type(state).__name__}); write it with xdfx.save_checkpoint(path, model)")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        raise XdfxError(
            f"checkpoint {str(path)!r} does not fit this model: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, shape mismatch {bad[:3]}. Relax the same model with example inputs "
            "of the same size as when it was saved."
        )
    model.load_state_dict(state)
    if opt is not None and payload.get("optimizers") is not None:
        opt.load_state_dict(payload["optimizers"])
    return {"epoch": int(payload.get("epoch", 0)), "history": payload.get("history", {})}


# ------------------------------------------------------------------------------------ trainer
def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def evaluate(model: nn.Module, loader: Iterable, metric: Callable[[torch.Tensor, torch.Tensor], float],
             device: torch.device | None = None) -> float:
    """Mean of ``metric(model(x), y)`` over ``loader`` (weighted by batch size), in eval mode."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = _to(x, device), _to(y, device)
            n = len(y)
            total += float(metric(model(x), y)) * n
            count += n
    model.train(was_training)
    if count == 0:
        raise XdfxInputError("the validation loader (val_loader) yielded no batch: pass a loader over a non-empty "
                             "dataset, or val_loader=None")
    return total / count


def search(
    model: nn.Module,
    train_loader: Iterable,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    epochs: int,
    *,
    val_loader: Iterable | None = None,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    metric_name: str = "val loss",
    opt: SearchOptimizers | None = None,
    schedule: str | None = "cosine",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    grad_clip: float | None = None,
    max_steps: int | None = None,
) -> nn.Module:
    """Train weights and architecture together; returns ``model`` with ``xdfx_history`` attached.

    ``schedule``: ``"cosine"`` (per epoch, on the model optimizer; the architecture follows) or
    None. ``checkpoint``: written after every epoch (under torch.distributed by rank 0 only, the
    model unwrapped from DDP so that it loads into a single process); with ``resume=True``
    training continues from it. ``max_steps``: stop after this many optimizer steps in all (the epoch in progress
    then ends early). A non-finite loss or architecture parameter stops training with an
    ``XdfxError`` naming the epoch, the step and what to change; a loader that yields no batch,
    with an ``XdfxInputError``.
    """
    if not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise XdfxInputError(f"epochs must be an int >= 1, got {epochs!r}")
    if max_steps is not None and max_steps < 1:
        raise XdfxInputError(f"max_steps must be >= 1, got {max_steps}")
    device = next(model.parameters()).device
    opt = opt or optimizers(model)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt.model, T_max=epochs) if schedule == "cosine" else None
    metric = metric or (lambda p, t: loss_fn(p, t))
    history: dict = {"epoch": [], "train_loss": [], "val_metric": [], "model_lr": [], "arch_lr": [],
                     "seconds": [], "steps": [], "metric_name": metric_name}
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, _unwrapped(model), opt)
        start, history = state["epoch"], state["history"] or history
        history.setdefault("steps", [])
        if scheduler is not None:
            for _ in range(start):
                scheduler.step()
    flush = device.type == "cpu"
    previous_flush = torch.get_flush_denormal() if hasattr(torch, "get_flush_denormal") else False
    if flush:  # late in training, denormal spectra make CPU steps crawl
        torch.set_flush_denormal(True)
    done = history["steps"][-1] if history["steps"] else 0
    flags = [(m, m.training) for m in model.modules()]
    try:
        for epoch in range(start, epochs):
            if max_steps is not None and done >= max_steps:
                break
            opt.set_epoch(epoch)
            sampler = getattr(train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # a DistributedSampler shuffles anew each epoch, alike on every rank
                sampler.set_epoch(epoch)
            began = time.perf_counter()
            model.train()
            total, count = 0.0, 0
            batches = train_loader
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
            for step, (x, y) in enumerate(batches):
                if max_steps is not None and done >= max_steps:
                    break
                x, y = _to(x, device), _to(y, device)
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                if not torch.isfinite(loss):
                    advice = (f"lower the architecture learning rate (now {opt.current_arch_lr:g}) or the model's, or "
                              "add warm-up epochs (warmup_epochs=...)" if opt.arch is not None else
                              f"lower the learning rate (now {opt.model.param_groups[0]['lr']:g}) or check the loss "
                              "function and the data")
                    raise XdfxError(f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; "
                                    f"{advice}")
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
                done += 1
            if count == 0:
                raise XdfxInputError(f"train_loader yielded no batch in epoch {epoch + 1}: pass a loader over a "
                                     "non-empty dataset (an iterator is used up after one epoch: pass a list or a "
                                     "DataLoader)")
            check_finite(model, arch_parameters(model), f"it became so in epoch {epoch + 1}: lower the architecture "
                         "learning rate or add warm-up epochs")
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(total / max(count, 1))
            history["val_metric"].append(evaluate(model, val_loader, metric, device) if val_loader is not None else math.nan)
            history["model_lr"].append(opt.model.param_groups[0]["lr"])
            history["arch_lr"].append(opt.current_arch_lr)
            history["seconds"].append(time.perf_counter() - began)
            history["steps"].append(done)
            if progress:
                from tqdm.auto import tqdm

                val = f", {metric_name} {history['val_metric'][-1]:.4g}" if val_loader is not None else ""
                tqdm.write(f"epoch {epoch + 1}: train {history['train_loss'][-1]:.4g}{val}, "
                           f"{history['seconds'][-1]:.1f} s")
            if scheduler is not None:
                scheduler.step()
            if checkpoint is not None and _writes_checkpoints():
                save_checkpoint(checkpoint, _unwrapped(model), opt, epoch=epoch + 1, history=history)
    except BaseException:  # a refused loader or a diverged loss leaves the train/eval flags as they were
        for m, flag in flags:
            m.training = flag
        raise
    finally:
        if flush:
            torch.set_flush_denormal(previous_flush)
    model.xdfx_history = history
    return model
