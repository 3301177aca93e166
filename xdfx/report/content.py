"""The text of a report: summary tables, the per-layer table, search results and per-layer sections.

Written once as :mod:`.document` blocks, so report.md and report.html say the same thing.
"""

from __future__ import annotations

from .document import Anchor, Block, Heading, Image, Paragraph, Table
from .fmt import err, ms, num
from .history import History
from .layer import NO_FACTORS_NOTE, LayerView
from .summary import Summary

HOW_TO_READ = (
    "An XD layer computes Real(K diag(L w) M x) with M = F Q_M, K = Q_K F^-1 (F the DFT). "
    "The factor distance is ||Q - Q0||_F / ||Q0||_F from the warm start Q0 (the identity for Q_M, Q_K, "
    "so it is the distance of M and K from the DFT they started at). The spectrum is |L w| per channel "
    "pair (mean and 10-90 percentile band over pairs); the effective kernel irfftn(conj(L w)) is the "
    "layer's impulse response when K and M are the DFT pair (with other factors it is the filter "
    "between them). Kernels are drawn against the input offset they multiply: output position t*s reads "
    "input t*s + offset, and buffer position u holds offset u - pad_left (circularly), so a 'same' conv's "
    "taps sit around 0."
)


def report_document(summary: Summary, views: list[LayerView], history: History | None) -> list[Block]:
    s = summary
    doc: list[Block] = [
        Heading(1, "xdfx report"),
        Paragraph(f"{s.xd_layers} XD layers; harden tolerance {s.tol:g} (relative max error per layer). "
                  "Data behind every figure: `report.json`."),
        Heading(2, "Summary"),
    ]
    rows = [["parameters", f"{s.params_before:,}", f"{s.params_after:,}"],
            ["of which architecture (K, L, M factors)", f"{s.arch_params:,}", "0"],
            ["XD-layer FLOPs per call (estimate)", num(s.xd_flops_before), num(s.xd_flops_after)]]
    if s.latency_before_s is not None:
        rows.append(["latency (" + s.latency_note + ")", ms(s.latency_before_s), ms(s.latency_after_s)])
    doc.append(Table(["", "before (relaxed)", "after (hardened)"], rows))
    if s.latency_before_s is None:
        doc.append(Paragraph(s.latency_note))
    if s.end_to_end_error is not None:
        doc.append(Paragraph("End-to-end relative max error of the hardened model on example_inputs: "
                             f"{err(s.end_to_end_error)}."))
    doc.append(Table(["chosen form", "XD layers"], [[f"`{k}`", str(c)] for k, c in s.forms.items()]))
    doc.append(Image("overview.png", "FLOPs before/after and factor distance per layer"))
    doc += [Heading(2, "XD layers"), _layer_table(views), Heading(2, "Search"), *_search(history), Heading(2, "Layers")]
    for k, v in enumerate(views):
        doc += _layer_section(k, v)
    doc += [Heading(2, "How to read the figures"), Paragraph(HOW_TO_READ)]
    return doc


def _layer_table(views: list[LayerView]) -> Table:
    header = ["#", "layer", "type", "chosen form", "detail", "error", "runner-up", "runner-up error",
              "runner-up FLOPs", "FLOPs before -> after", "max factor distance"]
    rows = []
    for k, v in enumerate(views):
        d, dist = v.decision, v.max_distance
        rows.append([str(k), f"[`{v.name}`](#layer-{k})", v.summary, f"`{d.form}`", d.detail,
                     err(d.error), d.runner_up or "-", err(d.runner_up_error), num(d.runner_up_flops),
                     f"{num(d.flops_before)} -> {num(d.flops_after)}", "-" if dist is None else f"{dist:.3g}"])
    return Table(header, rows)


def _search(history: History | None) -> list[Block]:
    if history is None:
        return [Paragraph("No search history: `model.xdfx_history` is absent.")]
    if not history.epoch:
        return [Paragraph("`model.xdfx_history` is present but holds no epochs.")]
    h = history
    header = ["epochs", "final train loss", f"final {h.val_label}", "final model lr", "final arch lr"]
    row = [str(len(h.epoch)), f"{h.train_loss[-1]:.4g}", f"{h.val_metric[-1]:.4g}", f"{h.model_lr[-1]:.3g}",
           f"{h.arch_lr[-1]:.3g}"]
    return [Image("search.png", "search curves"), Table(header, [row])]


def _layer_section(k: int, v: LayerView) -> list[Block]:
    d = v.decision
    blocks: list[Block] = [
        Anchor(f"layer-{k}"),
        Heading(3, f"{k}. `{v.name}` -> `{d.form}`"),
        Paragraph(f"{v.type} ({v.summary}), arch `{v.arch}`, relaxed from a {v.origin}. " + _geometry_text(v)),
        Table(["", "chosen", "runner-up"], [
            ["form", f"`{d.form}`", f"`{d.runner_up}`" if d.runner_up else "none"],
            ["detail", d.detail or "-", "-"],
            ["relative error", err(d.error), err(d.runner_up_error)],
            ["FLOPs (XD before: " + num(d.flops_before) + ")", num(d.flops_after), num(d.runner_up_flops)],
            ["parameters (XD before: " + f"{d.params_before:,}" + ")", f"{d.params_after:,}", "-"],
        ]),
    ]
    if v.factors:
        rows = [[f.label, "x".join(map(str, f.size)), f"{f.distance:.4g}", f.reference] for f in v.factors]
        blocks.append(Table(["factor", "size", "distance from warm start", "warm start"], rows))
    else:
        blocks.append(Paragraph(NO_FACTORS_NOTE.replace("\n", " ") + "."))
    blocks += [Paragraph("Note: " + note + ".") for note in v.notes]
    blocks += [Image(v.figure, f"{v.name}: spectrum, kernel, factors"), Paragraph(_caption(v))]
    return blocks


def _geometry_text(v: LayerView) -> str:
    if v.type == "XDGraphConv":
        return f"{v.geometry[0].nodes} nodes."
    parts = [f"axis {i}: input {g.in_size}, kernel {g.kernel}, stride {g.stride}, dilation {g.dilation}, "
             f"pad {tuple(g.pad)}, transform n={g.n}, buffer {g.kernel_buffer}"
             for i, g in enumerate(v.geometry)]
    return f"Padding mode `{v.geometry[0].mode}`; " + "; ".join(parts) + "."


def _caption(v: LayerView) -> str:
    band, ke = v.spectrum.band, v.kernel
    sampled = f"{band.band_pairs} of them" if band.band_pairs < band.pairs else "all"
    text = (f"Left: |L w| over {band.pairs} channel pairs, mean (line) and 10-90 percentile band ({sampled} pairs). "
            f"Kernel: red is the channel pair with the most energy (out {ke.pair[0]}, in {ke.pair[1]}), "
            "green the mean |kernel| over pairs.")
    if v.spatial_dims >= 2:
        text += " Images: mean |L w| (zero frequency of axis 0 centred) and the kernels around offset 0."
    if ke.cropped:
        text += " The kernel is shown in a central window of offsets (the buffer is longer)."
    return text
