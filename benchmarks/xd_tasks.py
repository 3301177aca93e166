"""One table of every task's results: CNN backbone, XD (``monarch`` and ``fixed``), reference,
hardened XD and the time per epoch, from the JSON files the task benchmarks wrote.

    python benchmarks/xd_tasks.py [--out xd_tasks]

Reads benchmarks/results/{sweep_burgers_e60, sweep_darcy, search_ns_nu*, search_music, search_digits}.json
(whichever exist) and writes benchmarks/results/<out>.md. Cells are mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("cnn", "xd", "xd-fixed", "ref")


def cell(values: list[float], digits: int = 4) -> str:
    """Mean ± std; the seed count where it is not 3."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    text = f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    return text if len(values) == 3 else f"{text} (n={len(values)})"


def seconds(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f}" if values else "-"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def sweep_rows(name: str, task: str) -> list[dict]:
    """One row per resolution; ``name_neuralop`` (``make fno-reference``) adds neuraloperator's FNO."""
    payload = load(name)
    if payload is None:
        return []
    extra = load(f"{name}_neuralop")
    everything = payload["rows"] + (extra["rows"] if extra else [])
    out = []
    for res in sorted({r["res"] for r in payload["rows"]}):
        rows = [r for r in everything if r["res"] == res]
        pick = lambda m, k="error": [r[k] for r in rows if r["model"] == m and k in r]  # noqa: E731
        out.append({"task": f"{task} {res}", "metric": "rel. L2", "cnn": pick("cnn"), "xd": pick("xd"),
                    "xd-fixed": pick("xd-fixed"), "ref": pick("fno"), "ref_name": "FNO",
                    "ref2": pick("fno-neuralop"), "ref2_name": "neuraloperator FNO",
                    "hard": {m: pick(m, "hardened_error") for m in ("xd", "xd-fixed")},
                    "sec": {m: pick(m if m != "ref" else "fno", "seconds_per_epoch") for m in COLUMNS}})
    return out


def ns_rows() -> list[dict]:
    out = []
    for path in sorted(RESULTS.glob("search_ns_nu*.json")):
        payload = json.loads(path.read_text())
        res = payload["results"]
        get = lambda m, k="rel_l2": res.get(m, {}).get(k, [])  # noqa: E731
        out.append({"task": f"Navier-Stokes ν={payload['args']['viscosity']:g}", "metric": "rel. L2",
                    "cnn": get("cnn"), "xd": get("xd"), "xd-fixed": get("xd-fixed"), "ref": get("fno"),
                    "ref_name": "FNO-2d", "hard": {m: get(m, "hardened_rel_l2") for m in ("xd", "xd-fixed")},
                    "sec": {m: get(m if m != "ref" else "fno", "seconds_per_epoch") for m in COLUMNS}})
    return out


def music_rows() -> list[dict]:
    """One row per learning-rate run of benchmarks/search_music.py (the lrs are in the task cell)."""
    out = []
    for name in ("search_music", "search_music_tcn_lr3e-3", "search_music_lr1e-2"):
        payload = load(name)
        if payload is None:
            continue
        a, models = payload["args"], payload["results"]["models"]
        get = lambda m, k="test_nll": models.get(m, {}).get(k, [])  # noqa: E731
        causal = {m: models[m]["causal"] for m in models}
        xd_lr = a.get("xd_lr") or a["lr"]
        lrs = f"TCN lr {a['lr']:g}" + (f", XD lr {xd_lr:g}" if any(m.startswith("xd") for m in models) else "")
        out.append({"task": f"Bach chorales ({lrs})", "metric": "test NLL", "cnn": get("tcn"),
                    "xd": get("xd") if causal.get("xd") else [], "xd-fixed": get("xd-fixed"), "ref": [],
                    "ref_name": "-", "hard": {m: get(m, "hardened_nll") for m in ("xd", "xd-fixed") if causal.get(m)},
                    "sec": {"cnn": get("tcn", "seconds_per_epoch"), "xd": get("xd", "seconds_per_epoch"),
                            "xd-fixed": get("xd-fixed", "seconds_per_epoch"), "ref": []}})
    return out


def digits_rows() -> list[dict]:
    payload = load("search_digits")
    if payload is None:
        return []
    res = payload["results"]["digits"]
    get = lambda m, key="accuracy": res.get(m, {}).get(key, [])  # noqa: E731
    return [{"task": "permuted digits", "metric": "accuracy", "cnn": get("cnn"), "xd": get("xd"),
             "xd-fixed": get("xd-fixed"), "ref": [], "ref_name": "-",
             "hard": {m: get(m, "hardened_accuracy") for m in ("xd", "xd-fixed")},
             "sec": {m: [res[m]["seconds_per_epoch"]] if m in res else [] for m in ("cnn", "xd", "xd-fixed")} | {"ref": []}}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="xd_tasks")
    args = parser.parse_args()
    rows = (sweep_rows("sweep_burgers_e60", "Burgers") + sweep_rows("sweep_darcy", "Darcy") + ns_rows() + music_rows()
            + digits_rows())
    lines = ["| task | metric | CNN backbone | XD `monarch` | XD `fixed` (default) | reference | hardened XD (monarch / fixed) "
             "| s/epoch CNN / monarch / fixed / ref |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        digits = 3 if r["metric"] == "test NLL" else 4
        ref = f"{cell(r['ref'], digits)} ({r['ref_name']})" if r["ref"] else "-"
        if r.get("ref2"):
            ref += f"; {cell(r['ref2'], digits)} ({r['ref2_name']})"
        cnn = cell(r["cnn"], digits)
        hard = " / ".join(cell(r["hard"].get(m, []), digits) for m in ("xd", "xd-fixed"))
        secs = " / ".join(seconds(r["sec"].get(m, [])) for m in COLUMNS)
        lines.append(f"| {r['task']} | {r['metric']} | {cnn} | {cell(r['xd'], digits)} | "
                     f"{cell(r['xd-fixed'], digits)} | {ref} | {hard} | {secs} |")
        if r.get("note"):
            notes.append(f"{r['task']}: {r['note']}.")
    notes.append("Bach chorales: XD `monarch` is left out; its learned K, M mix future frames (not causal).")
    text = "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
