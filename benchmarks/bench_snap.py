"""Harden after a default search, with snap and fine-tune: the hardened model's error against the
searched one's, and its inference time against the original CNN's, measured interleaved in one run.

    python benchmarks/bench_snap.py [--models tcn,fno_cnn] [--seeds 0,1,2] [--out NAME]

Each model is the README's TCN (``examples.models.TCN``) or the demo's FNO-shaped CNN on Burgers
1-d (resolution 128, 400 train / 100 test). Per seed: the CNN is trained, its relaxation
(``--arch``, default the library's ``fixed``; pointwise convs kept) searched for ``--search-epochs``, hardened with
``snap="auto"`` at ``--energy``, then fine-tuned for ``--finetune-epochs``. Writes
benchmarks/results/<out>.{json,md} (default an untracked ``scratch_bench_snap``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xdfx  # noqa: E402
from benchmarks.timing import interleaved, machine, write_json  # noqa: E402
from examples.models import TCN  # noqa: E402
from xdfx.demo import BurgersCNN, _pointwise, _rel_l2  # noqa: E402
from xdfx.ops.spectral import SpectralConv  # noqa: E402
from xdfx.passes.harden_spectral import DFT_MATMUL_MAX_MODES  # noqa: E402
from xdfx.tasks import burgers  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODELS = {"tcn": lambda: TCN(channels=32, layers=4, kernel=5, in_channels=1), "fno_cnn": BurgersCNN}


def data(model: str, seed: int, resolution: int, ntrain: int, ntest: int):
    u0, u1 = burgers.generate(ntrain + ntest, resolution, seed=seed)
    if model == "tcn":  # the TCN maps a field to a field: the initial condition alone
        x = u0[:, None]
    else:
        grid = torch.linspace(0, 1, resolution + 1)[:-1].expand(len(u0), 1, resolution)
        x = torch.cat([u0[:, None], grid], 1)
    y = u1[:, None]
    train = DataLoader(TensorDataset(x[:ntrain], y[:ntrain]), batch_size=20, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    return train, x[ntrain:], y[ntrain:]


def fit(model, train, epochs: int) -> None:
    opt = xdfx.optimizers(model, lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4), arch_lr=1e-3)
    xdfx.search(model, train, _rel_l2, epochs, opt=opt, progress=False)


def truncate(searched, modes: int):
    """The searched model with every XD layer cut to its ``modes`` lowest modes (no refit, no
    fine-tuning): what a modes-only form of that size keeps of the search."""
    out = copy.deepcopy(searched)
    for name in list(xdfx.common.xd_layers(out)):
        xd = out.get_submodule(name)
        with torch.no_grad():
            layer = SpectralConv(xd.spectrum(), [modes] * xd.spatial_dims, xd.geometry, groups=xd.groups, bias=xd.bias,
                                 method="matmul" if modes <= DFT_MATMUL_MAX_MODES else "fft")
        parent, _, leaf = name.rpartition(".")
        setattr(out.get_submodule(parent), leaf, layer)
    return out


def run(model: str, seed: int, args) -> dict:
    train, test_x, test_y = data(model, seed, args.resolution, args.ntrain, args.ntest)
    err = lambda m: float(burgers.relative_l2(m(test_x), test_y))  # noqa: E731
    torch.manual_seed(seed)
    cnn = MODELS[model]()
    torch.manual_seed(seed)
    backbone = MODELS[model]()
    fit(cnn, train, args.cnn_epochs)
    searched = xdfx.relax(backbone, test_x[:2], arch=args.arch, exclude=[_pointwise])
    fit(searched, train, args.search_epochs)
    max_cost = None if args.max_cost == "none" else float(args.max_cost)
    hard = xdfx.harden(searched, tol=args.tol, example_inputs=(test_x[:20],), energy=args.energy, max_cost=max_cost,
                       fill=args.fill, original=cnn)
    with torch.no_grad():
        row = {"model": model, "seed": seed, "cnn": err(cnn), "searched": err(searched), "snapped": err(hard)}
    xdfx.finetune(hard, train, _rel_l2, epochs=args.finetune_epochs, lr=args.finetune_lr, progress=False)
    with torch.no_grad():
        row["hardened"] = err(hard)
    row["forms"] = [f"{r.name}: {r.form} {r.detail.split(',')[0]}" for r in hard.xdfx_report]
    batch = test_x[:20]

    def infer(m):
        def once():
            with torch.no_grad():
                m(batch)
        return once

    truncated = {m: truncate(searched, m) for m in map(int, filter(None, args.truncate.split(",")))}
    times = interleaved({"cnn": infer(cnn.eval()), "searched": infer(searched.eval()), "hardened": infer(hard.eval()),
                         **{f"modes{m}": infer(t.eval()) for m, t in truncated.items()}}, rounds=args.rounds)
    with torch.no_grad():
        row["truncated"] = {m: {"error": err(t), "latency_vs_cnn": times[f"modes{m}"] / times["cnn"]}
                            for m, t in truncated.items()}
    row.update({f"{k}_ms": 1e3 * t for k, t in times.items()})
    row["error_vs_searched"] = row["hardened"] / row["searched"]
    row["latency_vs_cnn"] = times["hardened"] / times["cnn"]
    print(f"{model} seed {seed}: cnn {row['cnn']:.4f}, searched {row['searched']:.4f}, snapped {row['snapped']:.4f}, "
          f"hardened {row['hardened']:.4f} ({row['error_vs_searched']:.2f}x searched); latency {row['latency_vs_cnn']:.2f}x "
          f"the CNN's; {'; '.join(row['forms'])}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tcn,fno_cnn")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arch", default="fixed", choices=["fixed", "monarch"])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--ntrain", type=int, default=400)
    parser.add_argument("--ntest", type=int, default=100)
    parser.add_argument("--cnn-epochs", type=int, default=25)
    parser.add_argument("--search-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--energy", type=float, default=0.9999)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--max-cost", default="2.0", help="harden's speed target per layer (a number, or none)")
    parser.add_argument("--fill", action="store_true", help="harden(fill=True): snapped modes forms use the target")
    parser.add_argument("--truncate", default="", help="mode counts: also time and score the searched model with every "
                        "XD layer cut to that many low modes (e.g. 8,16,24,32,48,64)")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="scratch_bench_snap")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [run(m, int(s), args) for m in args.models.split(",") for s in args.seeds.split(",")]
    lines = ["| model | CNN rel. L2 | searched | snapped | hardened + fine-tuned | hardened / searched | "
             "latency hardened / CNN |", "|---|---|---|---|---|---|---|"]
    for m in args.models.split(","):
        mine = [r for r in rows if r["model"] == m]

        def cell(key: str, fmt: str) -> str:
            vals = [r[key] for r in mine]
            spread = f" ± {statistics.stdev(vals):{fmt}}" if len(vals) > 1 else ""
            return f"{statistics.mean(vals):{fmt}}{spread}"

        lines.append(f"| {m} | {cell('cnn', '.4f')} | {cell('searched', '.4f')} | {cell('snapped', '.4f')} | "
                     f"{cell('hardened', '.4f')} | {cell('error_vs_searched', '.2f')} | {cell('latency_vs_cnn', '.2f')} |")
    head = (f"Burgers 1-d at {args.resolution}, {args.ntrain} train / {args.ntest} test; CNN {args.cnn_epochs} epochs; "
            f"search {args.search_epochs} epochs (arch {args.arch}); harden snap=auto energy={args.energy} tol={args.tol} "
            f"max_cost={args.max_cost}{' fill=True' if args.fill else ''}; "
            f"fine-tune {args.finetune_epochs} epochs at lr {args.finetune_lr}; latency: batch 20, {args.threads} "
            f"thread(s), interleaved medians of {args.rounds}; mean ± std over seeds {args.seeds}.")
    if args.truncate:
        lines += ["", "The searched model with every XD layer cut to its m lowest modes (no refit, no fine-tuning):", "",
                  "| model | modes | rel. L2 | latency vs CNN |", "|---|---|---|---|"]
        for m in args.models.split(","):
            for modes in map(int, args.truncate.split(",")):
                cut = [r["truncated"][modes] for r in rows if r["model"] == m]
                lines.append(f"| {m} | {modes} | {statistics.mean(c['error'] for c in cut):.4f} | "
                             f"{statistics.mean(c['latency_vs_cnn'] for c in cut):.2f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(head + "\n\n" + "\n".join(lines) + "\n")
    write_json(RESULTS / f"{args.out}.json", {"machine": machine(), "args": vars(args), "rows": rows})
    print(head + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
