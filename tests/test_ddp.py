"""A relaxed model trains under DistributedDataParallel: 2 real gloo processes on CPU end with
identical architecture and model parameters."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import xdfx
from xdfx.search import optimizers


def _search_worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        from tests.test_search import SmallCNN

        torch.manual_seed(0)
        model = DistributedDataParallel(xdfx.relax(SmallCNN(), torch.randn(2, 2, 32)))
        gen = torch.Generator().manual_seed(100 + rank)
        data = [(torch.randn(4, 2, 32, generator=gen), torch.randn(4, 1, 32, generator=gen)) for _ in range(2)]
        seen = []
        trainer = sys.modules["xdfx.search"]
        real_save = trainer.save_checkpoint

        def spy(path, *args, **kwargs):  # which ranks write
            seen.append(rank)
            real_save(path, *args, **kwargs)

        trainer.save_checkpoint = spy
        xdfx.search(model, data, torch.nn.functional.mse_loss, 2, checkpoint=os.path.join(out, "ddp.pt"), progress=False)
        torch.save(seen, os.path.join(out, f"writes{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_search_checkpoint_is_written_by_rank_zero_and_loads_unwrapped(tmp_path) -> None:
    mp.spawn(_search_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    assert torch.load(tmp_path / "writes0.pt") == [0, 0] and torch.load(tmp_path / "writes1.pt") == []
    from tests.test_search import SmallCNN

    torch.manual_seed(0)
    fresh = xdfx.relax(SmallCNN(), torch.randn(2, 2, 32))  # a single process, no DDP wrapper
    state = xdfx.load_checkpoint(tmp_path / "ddp.pt", fresh)
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in fresh.state_dict())


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        from tests.test_search import SmallCNN

        torch.manual_seed(0)  # same initial model everywhere
        relaxed = xdfx.relax(SmallCNN(), torch.randn(2, 2, 32), arch="monarch")
        model = DistributedDataParallel(relaxed)
        opt = optimizers(model, lambda p: torch.optim.Adam(p, lr=1e-2), arch_lr=1e-2)
        gen = torch.Generator().manual_seed(100 + rank)  # different data on every rank
        for _ in range(4):
            x, y = torch.randn(4, 2, 32, generator=gen), torch.randn(4, 1, 32, generator=gen)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        torch.save({k: v.detach().clone() for k, v in relaxed.state_dict().items()}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_stay_in_sync(tmp_path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    from tests.test_search import SmallCNN

    torch.manual_seed(0)
    initial = xdfx.relax(SmallCNN(), torch.randn(2, 2, 32), arch="monarch")
    arch = {id(p) for p in xdfx.arch_parameters(initial)}
    arch_names = {n for n, p in initial.named_parameters() if id(p) in arch}
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # all-reduced gradients: bit-identical replicas
    start = initial.state_dict()
    moved = {k for k in a if not torch.equal(a[k], start[k])}
    assert moved & arch_names, "architecture parameters did not train"
    assert moved - arch_names, "model parameters did not train"
