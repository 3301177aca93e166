"""xdfx.visual.report: figures are valid PNGs, tables match harden, plotted kernels are the convs'.

The kernel check: a layer relaxed from a known conv (no search) must show that conv's weight in
its impulse-response data (report.json) at the tap positions, within float32 round-off, and zeros
everywhere else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

import xdfx
from examples.models import TCN, ResNetSmall
from xdfx.report import build as visual
from xdfx.ops import XDConv
from xdfx.ops.graph import XDGraphConv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XD_TYPES = (XDConv, XDGraphConv)


def _xd_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, XD_TYPES)]


def _load(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def _layer_rows(md: str) -> dict[str, list[str]]:
    """Rows of the 'XD layers' table of report.md, by layer name."""
    section = md.split("## XD layers", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        found = re.match(r"\[`(.+)`\]\(#layer-\d+\)", cells[1]) if len(cells) > 1 else None
        if found:
            rows[found.group(1)] = cells
    return rows


def _check_folder(folder: Path, relaxed: nn.Module, records) -> dict:
    """Every figure is a plausible PNG; md/html reference exactly them; tables match harden."""
    data = _load(folder)
    md = (folder / "report.md").read_text()
    page = (folder / "report.html").read_text()
    assert data["generator"] == "xdfx.visual"
    assert data["figures"] and "overview.png" in data["figures"]
    for rel in data["figures"]:
        png = folder / rel
        assert png.is_file(), rel
        assert png.read_bytes()[:8] == PNG_MAGIC, rel
        assert 5_000 < png.stat().st_size < 500_000, (rel, png.stat().st_size)
        image = imread(png)
        assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 500, (rel, image.shape)
    assert set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)) == set(data["figures"])
    assert set(re.findall(r'<img src="([^"]+)"', page)) == set(data["figures"])
    assert not list(folder.parent.glob(f".{folder.name}.*")), "temporary folders left behind"

    names = _xd_names(relaxed)
    forms = {r.name: r.form for r in records}
    assert [layer["name"] for layer in data["layers"]] == names
    rows = _layer_rows(md)
    assert sorted(rows) == sorted(names)
    for layer in data["layers"]:
        name = layer["name"]
        assert layer["form"] == forms[name], name
        assert rows[name][3] == f"`{forms[name]}`", rows[name]
        assert f"<code>{name}</code>" in page
        assert (folder / layer["figure"]).is_file()
    counts = {}
    for form in forms.values():
        counts[form] = counts.get(form, 0) + 1
    assert data["summary"]["forms"] == counts
    assert data["summary"]["xd_layers"] == len(names)
    assert data["summary"]["params_before"] == sum(p.numel() for p in relaxed.parameters())
    return data


def _expected_buffer(weight: torch.Tensor, layer: dict) -> np.ndarray:
    """The conv taps at buffer positions 0, d, 2d, ... (per axis) of the plotted window, zeros elsewhere."""
    positions = [np.asarray(p) for p in layer["kernel"]["positions"]]
    w = weight.detach().double().numpy()
    out = np.zeros(w.shape[:2] + tuple(len(p) for p in positions))
    grids = np.meshgrid(*positions, indexing="ij")
    on = np.ones(grids[0].shape, dtype=bool)
    taps = []
    for g, geo in zip(grids, layer["geometry"]):
        on &= (g % geo["dilation"] == 0) & (g // geo["dilation"] < geo["kernel"])
        taps.append(g // geo["dilation"])
    idx = tuple(t[on] for t in taps)
    out[(slice(None), slice(None), on)] = w[(slice(None), slice(None), *idx)]
    return out


def _check_kernel_is_conv(layer: dict, conv: nn.modules.conv._ConvNd) -> None:
    assert conv.groups == 1
    expected = _expected_buffer(conv.weight, layer)
    o, i = layer["kernel"]["pair"]
    scale = float(np.abs(expected).max())
    strongest = np.asarray(layer["kernel"]["strongest"])
    mean_abs = np.asarray(layer["kernel"]["mean_abs"])
    assert strongest.shape == expected.shape[2:]
    assert np.abs(strongest - expected[o, i]).max() <= 2e-6 * scale, layer["name"]
    assert np.abs(mean_abs - np.abs(expected).mean((0, 1))).max() <= 2e-6 * scale, layer["name"]
    energy = (expected**2).reshape(*expected.shape[:2], -1).sum(-1)
    assert energy[o, i] == pytest.approx(energy.max(), rel=1e-5)
    # the taps really are there (not a trivially zero kernel) and nothing else is
    assert np.count_nonzero(np.abs(strongest) > 1e-6 * scale) == np.count_nonzero(expected[o, i])


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tcn(tmp_path_factory):
    torch.manual_seed(0)
    model = TCN(channels=8, layers=3, kernel=3).eval()
    x = torch.randn(2, 1, 64)
    relaxed = xdfx.relax(model, x, arch="monarch")  # the report draws the learned K, M too
    folder = tmp_path_factory.mktemp("tcn") / "report"
    out = visual.report(relaxed, folder, example_inputs=x, tol=1e-4)
    records = xdfx.harden(relaxed, tol=1e-4, example_inputs=x).xdfx_report.records
    return model, relaxed, records, out


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    torch.manual_seed(0)
    model = ResNetSmall(width=4).eval()
    x = torch.randn(2, 3, 16, 16)
    relaxed = xdfx.relax(model, x)
    hard = xdfx.harden(relaxed)
    folder = tmp_path_factory.mktemp("resnet") / "report"
    out = visual.report(relaxed, folder, hardened=hard)
    return model, relaxed, hard, out


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 6, 5, padding=2), nn.ReLU(),
        nn.Conv1d(6, 6, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv1d(6, 1, 1),
    )


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    torch.manual_seed(0)
    x, y = torch.randn(8, 2, 32), torch.randn(8, 1, 32)
    relaxed = xdfx.relax(_small_cnn(), x, arch="monarch")
    opt_w = torch.optim.Adam(xdfx.model_parameters(relaxed), lr=1e-2)
    opt_a = torch.optim.Adam(xdfx.arch_parameters(relaxed), lr=1e-2)
    history = {"epoch": [], "train_loss": [], "val_metric": [], "model_lr": [], "arch_lr": [], "metric_name": "mse"}
    for epoch in range(4):
        loss = nn.functional.mse_loss(relaxed(x), y)
        opt_w.zero_grad()
        opt_a.zero_grad()
        loss.backward()
        opt_w.step()
        opt_a.step()
        with torch.no_grad():
            val = nn.functional.mse_loss(relaxed(x), y)
        for key, value in (("epoch", epoch), ("train_loss", loss.item()), ("val_metric", float(val)),
                           ("model_lr", 1e-2 * 0.5**epoch), ("arch_lr", 1e-2)):
            history[key].append(value)
    relaxed.xdfx_history = history
    folder = tmp_path_factory.mktemp("searched") / "report"
    out = visual.report(relaxed, folder, example_inputs=x)
    records = xdfx.harden(relaxed, example_inputs=x).xdfx_report.records
    return relaxed, records, out


# ------------------------------------------------------------------ reports
def test_tcn_report(tcn) -> None:
    model, relaxed, records, folder = tcn
    assert folder.is_dir()
    data = _check_folder(folder, relaxed, records)
    assert len(data["layers"]) == 5
    assert {r.form for r in records} == {"conv"}
    s = data["summary"]
    assert s["latency_before_s"] > 0 and s["latency_after_s"] > 0
    assert "latency (median of" in (folder / "report.md").read_text()
    assert data["history"] is None and "search.png" not in data["figures"]
    assert "No search history" in (folder / "report.md").read_text()
    layers = {layer["name"]: layer for layer in data["layers"]}
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv1d):
            layer = layers[name]
            _check_kernel_is_conv(layer, conv)
            assert all(f["distance"] == pytest.approx(0, abs=1e-6) for f in layer["factors"])
            assert [f["factor"] for f in layer["factors"]] == ["M", "K"]
    dilated = layers["convs.2"]  # dilation 4, 'same': taps at offsets -4, 0, 4
    nz = [o for o, v in zip(dilated["kernel"]["offsets"][0], dilated["kernel"]["strongest"]) if abs(v) > 1e-7]
    assert nz == [-4, 0, 4]


def test_resnet_2d_report(resnet) -> None:
    model, relaxed, hard, folder = resnet
    data = _check_folder(folder, relaxed, hard.xdfx_report.records)
    assert "latency: not measured (pass example_inputs)" in (folder / "report.md").read_text()
    assert data["summary"]["latency_before_s"] is None
    assert data["summary"]["params_after"] == sum(p.numel() for p in hard.parameters())
    layers = {layer["name"]: layer for layer in data["layers"]}
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            layer = layers[name]
            assert layer["spatial_dims"] == 2
            assert np.asarray(layer["spectrum"]["image"]).ndim == 2
            _check_kernel_is_conv(layer, conv)


def test_searched_report(searched) -> None:
    relaxed, records, folder = searched
    data = _check_folder(folder, relaxed, records)
    assert "search.png" in data["figures"]
    history = relaxed.xdfx_history
    for key in visual.HISTORY_KEYS:
        assert data["history"][key] == pytest.approx(history[key])
    assert data["history"]["metric_name"] == "mse"
    # search moved the factors away from the DFT, and the report says by how much
    for layer in data["layers"]:
        xd = relaxed.get_submodule(layer["name"])
        assert len(layer["factors"]) == 2
        for f in layer["factors"]:
            q = getattr(xd, f["factor"])[f["axis"]].dense().detach()
            expected = float(torch.linalg.norm(q - torch.eye(q.shape[0])) / q.shape[0] ** 0.5)
            assert f["distance"] == pytest.approx(expected, rel=1e-5) and f["distance"] > 1e-4
        # the plotted kernel is the layer's impulse response irfftn(conj(L w))
        spec = xd.spectrum().detach()
        kernel = torch.fft.irfft(spec.conj(), n=xd.geometry[0].n).double().numpy()
        o, i = layer["kernel"]["pair"]
        positions = layer["kernel"]["positions"][0]
        assert np.allclose(layer["kernel"]["strongest"], kernel[o, i, positions], atol=1e-6)
    md = (folder / "report.md").read_text()
    assert "final val mse" in md


# ------------------------------------------------------------------ bad input and file handling
def _tiny():
    x = torch.randn(2, 2, 16)
    return xdfx.relax(nn.Sequential(nn.Conv1d(2, 2, 3, padding=1)), x, arch="fixed"), x


def test_no_xd_layers(tmp_path) -> None:
    with pytest.raises(xdfx.XdfxInputError, match="no XD layers"):
        visual.report(_small_cnn(), tmp_path / "r")
    assert not list(tmp_path.iterdir())


def test_unwritable_path(tmp_path) -> None:
    relaxed, _ = _tiny()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(xdfx.XdfxError, match="cannot write the report"):
        visual.report(relaxed, blocker / "report")
    with pytest.raises(xdfx.XdfxError, match="not a directory"):
        visual.report(relaxed, blocker)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(xdfx.XdfxError, match="not empty"):
        visual.report(relaxed, tmp_path / "mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]
    assert blocker.read_text() == "not a folder" and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_failure_leaves_nothing(tmp_path, monkeypatch) -> None:
    relaxed, x = _tiny()
    first = visual.report(relaxed, tmp_path / "report", example_inputs=x)
    before = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}

    from xdfx.report import figures as plots

    def broken(path, layer):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "layer_figure", broken)
    with pytest.raises(xdfx.XdfxError, match="No space left"):
        visual.report(relaxed, tmp_path / "report", example_inputs=x)
    with pytest.raises(xdfx.XdfxError, match="No space left"):
        visual.report(relaxed, tmp_path / "other", example_inputs=x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temp folder, no "other"
    assert {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    monkeypatch.undo()
    again = visual.report(relaxed, tmp_path / "report")  # an earlier report is replaced whole
    assert _load(again)["summary"]["latency_before_s"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_bad_history_and_hardened(tmp_path) -> None:
    relaxed, x = _tiny()
    relaxed.xdfx_history = {"epoch": [0, 1], "train_loss": [1.0], "val_metric": [1, 2], "model_lr": [1, 1],
                            "arch_lr": [1, 1], "metric_name": "acc"}
    with pytest.raises(xdfx.XdfxInputError, match="equal lengths"):
        visual.report(relaxed, tmp_path / "r")
    relaxed.xdfx_history = {"epoch": [0]}
    with pytest.raises(xdfx.XdfxInputError, match="lacks the keys"):
        visual.report(relaxed, tmp_path / "r")
    del relaxed.xdfx_history
    other = xdfx.relax(TCN(channels=4, layers=1), torch.randn(1, 1, 16), arch="fixed")
    with pytest.raises(xdfx.XdfxInputError, match="harden"):
        visual.report(relaxed, tmp_path / "r", hardened=xdfx.harden(other))
    with pytest.raises(xdfx.XdfxInputError, match="harden"):
        visual.report(relaxed, tmp_path / "r", hardened=nn.Linear(2, 2))
    assert not list(tmp_path.iterdir())
