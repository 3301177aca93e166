"""An XD search across processes and machines with DistributedDataParallel.

    torchrun --nproc_per_node=2 examples/ddp_search.py --epochs 2 --out /tmp/ddp.pt

Every process relaxes the same Burgers CNN (pointwise convs excluded, as in the demo), wraps it
in DDP and trains its share of the data (a ``DistributedSampler``) with ``xdfx.search``: the
gradients of the weights (and, with ``--arch monarch``, of the architecture K, L, M) are
all-reduced, so the replicas stay identical. Rank 0 writes the checkpoint of the unwrapped model, which ``xdfx.load_checkpoint``
loads into a freshly relaxed model in a single process. CPU processes talk over gloo, GPUs over
NCCL (one GPU per process); several machines: ``torchrun --nnodes=N --node_rank=i
--master_addr=HOST --master_port=PORT ...`` on each. Without torchrun it runs as one process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

if __package__ in (None, ""):  # run as a script: the repository's xdfx, not only an installed one
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import xdfx  # noqa: E402
from xdfx.demo import BurgersCNN  # noqa: E402
from xdfx.tasks import burgers  # noqa: E402


def pointwise(name: str, module) -> bool:
    """1x1 convs are channel mixing only: kept as they are (as the demo does)."""
    return module is not None and all(k == 1 for k in module.kernel_size)


def build_relaxed(width: int, resolution: int, seed: int = 0, arch: str = "fixed") -> torch.fx.GraphModule:
    """The relaxed Burgers CNN, identical in every process (same seed, same example shape)."""
    torch.manual_seed(seed)
    return xdfx.relax(BurgersCNN(width=width), torch.zeros(2, 2, resolution), arch=arch, exclude=[pointwise])


def load_data(samples: int, resolution: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (field and grid, 2 channels) and targets of the Burgers task."""
    u0, u1 = burgers.generate(samples, resolution, seed=seed)
    grid = torch.linspace(0, 1, resolution + 1)[:-1].expand(len(u0), 1, resolution)
    return torch.cat([u0[:, None], grid], 1), u1[:, None]


def rel_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)).mean()


@contextlib.contextmanager
def rank_zero_first(distributed: bool, rank: int):
    """Rank 0 runs the block first (it generates and caches the data), then the others (they read the cache)."""
    if distributed and rank != 0:
        dist.barrier()
    yield
    if distributed and rank == 0:
        dist.barrier()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=128, help="training samples")
    parser.add_argument("--held-out", type=int, default=32, help="validation samples")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--arch-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default="fixed", choices=["fixed", "monarch"], help="xdfx.relax's arch")
    parser.add_argument("--out", type=Path, default=Path("ddp_search.pt"), help="checkpoint written by rank 0")
    parser.add_argument("--probe", type=Path, default=None, help="rank 0 also saves the trained model's outputs on a fixed probe here")
    args = parser.parse_args(argv)

    distributed = "WORLD_SIZE" in os.environ  # set by torchrun
    cuda = torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        with rank_zero_first(distributed, rank):
            x, y = load_data(args.samples + args.held_out, args.resolution, args.seed)
        train = TensorDataset(x[: args.samples], y[: args.samples])
        held_out = DataLoader(TensorDataset(x[args.samples:], y[args.samples:]), batch_size=args.held_out)
        sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler)  # search calls sampler.set_epoch

        relaxed = build_relaxed(args.width, args.resolution, args.seed, args.arch).to(device)
        model = DistributedDataParallel(relaxed, device_ids=[local_rank] if cuda else None) if distributed else relaxed
        # built on the wrapper: the same parameters, architecture ones in their own optimizer
        opt = xdfx.optimizers(model, lambda p: torch.optim.Adam(p, lr=args.lr), arch_lr=args.arch_lr)
        xdfx.search(model, loader, rel_l2, args.epochs, val_loader=held_out, metric=burgers.relative_l2,
                    metric_name="rel L2", opt=opt, progress=rank == 0)
        history = model.xdfx_history

        if distributed:  # all-reduced gradients: every replica holds the same numbers
            total = torch.stack([p.detach().double().sum() for p in relaxed.parameters()]).sum().reshape(1)
            low, high = total.clone(), total.clone()
            dist.all_reduce(low, dist.ReduceOp.MIN)
            dist.all_reduce(high, dist.ReduceOp.MAX)
            if rank == 0 and not torch.equal(low, high):
                print(f"replicas differ: parameter sums from {float(low)} to {float(high)}", file=sys.stderr)
                return 1
        if rank == 0:
            xdfx.save_checkpoint(args.out, relaxed, opt, epoch=args.epochs, history=history)
            if args.probe is not None:
                probe = x[args.samples:][:8]
                relaxed.eval()
                with torch.no_grad():
                    out = relaxed(probe.to(device)).cpu()
                torch.save({"x": probe, "y": out}, args.probe)
            print(f"{world} process(es), {args.epochs} epochs: train loss {history['train_loss'][-1]:.4f} (rank 0), "
                  f"held-out rel L2 {history['val_metric'][-1]:.4f}; checkpoint {args.out}")
        if distributed:
            dist.barrier()  # no process exits while rank 0 still writes
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
