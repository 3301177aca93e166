"""examples/ddp_search.py under torchrun: 2 real gloo processes on CPU search together, and the
checkpoint rank 0 writes loads into a single process and gives the outputs rank 0 reported."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

import xdfx
from examples.ddp_search import build_relaxed

ROOT = Path(__file__).resolve().parent.parent
SIZES = ["--samples", "32", "--held-out", "8", "--resolution", "32", "--width", "8", "--batch-size", "8",
         "--arch", "monarch"]  # learnable K, L, M: both optimizers' gradients are all-reduced


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_gloo_processes_and_single_process_reload(tmp_path) -> None:
    ckpt, probe = tmp_path / "ddp.pt", tmp_path / "probe.pt"
    env = dict(os.environ, XDFX_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(ROOT / "examples" / "ddp_search.py"), "--epochs", "2", *SIZES,
           "--out", str(ckpt), "--probe", str(probe)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 process(es), 2 epochs" in done.stdout

    fresh = build_relaxed(width=8, resolution=32, arch="monarch")
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    opt = xdfx.optimizers(fresh, lambda p: torch.optim.Adam(p, lr=1e-3))
    state = xdfx.load_checkpoint(ckpt, fresh, opt)  # optimizer state too: a single process can resume
    assert state["epoch"] == 2 and state["history"]["epoch"] == [1, 2]
    arch = {id(p) for p in xdfx.arch_parameters(fresh)}
    moved = {n for n, p in fresh.named_parameters() if not torch.equal(p.detach(), initial[n])}
    assert any(id(fresh.get_parameter(n)) in arch for n in moved), "architecture parameters did not train"
    assert any(id(fresh.get_parameter(n)) not in arch for n in moved), "model parameters did not train"

    reported = torch.load(probe, weights_only=True)
    fresh.eval()
    with torch.no_grad():
        out = fresh(reported["x"])
    assert float((out - reported["y"]).abs().max()) <= 1e-5 * float(reported["y"].abs().max())
