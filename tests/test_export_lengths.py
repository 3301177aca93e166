"""ONNX at every length: frozen and spectral layers export without the ONNX ``DFT`` op.

Long transforms run as real FFTs in eager PyTorch and export as factored (Cooley-Tukey) DFTs,
two batched matmuls per axis (``xdfx.ops.dft.factored_rdft``). The factored DFTs must equal
``torch.fft`` to round-off (float64: 1e-12, float32: 2e-6, relative to the largest output), the
layers built on them their FFT forms within 1e-5, and every exported file onnxruntime's run of it
within 1e-4 * max|y| (real sessions). No timing is asserted: the slow-export warning is forced.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import xdfx
import xdfx.export
from xdfx.export import XdfxSlowExportWarning
from xdfx.export.slow import LayerTiming, warn_if_slow
from xdfx.ops import FrozenXD, SpectralConv
from xdfx.ops.dft import factored_axes, factored_irdft, factored_matrices, factored_rdft

TOL = 1e-4
LENGTHS = (256, 512, 1024, 2048, 4096)


def _divisor_split(n: int, pick: int) -> tuple[int, int]:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    n1 = divisors[pick % len(divisors)]
    return n1, n // n1


def _slot_reference(spectrum: torch.Tensor, axes) -> tuple[torch.Tensor, torch.Tensor]:
    """``spectrum`` ``(*freq, R)`` read at every slot of ``axes``, and which slots are not redundant."""
    grid = torch.meshgrid(*[a.frequencies() for a in axes], indexing="ij")
    valid = torch.stack([g >= 0 for g in grid]).all(0).reshape(-1)
    return spectrum[tuple(g.clamp(min=0).reshape(-1) for g in grid)], valid


def _check_factored(ns, splits, dtype, tol, rows: int = 3) -> None:
    gen = torch.Generator().manual_seed(sum(ns) + len(ns))
    axes = factored_axes(ns, splits=splits)
    mats = [factored_matrices(a, dtype=dtype) for a in axes]
    dims = tuple(range(len(ns)))
    x = torch.randn(*ns, rows, generator=gen, dtype=dtype)
    z = factored_rdft(x, axes, mats)
    ref, valid = _slot_reference(torch.fft.rfftn(x, dim=dims), axes)
    got = torch.complex(z[:, 0], z[:, 1])
    assert float((got - ref)[valid].abs().max()) <= tol * float(ref.abs().max())
    half = torch.randn(*ns[:-1], ns[-1] // 2 + 1, rows, generator=gen, dtype=torch.complex128).to(got.dtype)
    at, _ = _slot_reference(half, axes)
    y = factored_irdft(torch.stack([at.real, at.imag], 1), axes, mats)
    y_ref = torch.fft.irfftn(half, s=ns, dim=dims)
    assert float((y - y_ref).abs().max()) <= tol * float(y_ref.abs().max())


@settings(max_examples=60, deadline=None)
@given(
    ns=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    picks=st.lists(st.integers(0, 20), min_size=3, max_size=3),
    double=st.booleans(),
)
def test_factored_dft_matches_torch_fft(ns, picks, double) -> None:
    """Any lengths, any factorisation n = n1 * n2 (n1 = 1 and n1 = n included), 1-3 axes."""
    splits = [_divisor_split(n, p) for n, p in zip(ns, picks)]
    dtype, tol = (torch.float64, 1e-12) if double else (torch.float32, 2e-6)
    _check_factored(ns, splits, dtype, tol)


@pytest.mark.parametrize("n", [*LENGTHS, 1080, 4374, 1000])
def test_factored_dft_at_long_lengths(n) -> None:
    """The splits layers use (balanced factors), at the lengths harden produces."""
    _check_factored([n], None, torch.float32, 2e-6, rows=4)


def test_factored_dft_over_three_long_axes() -> None:
    _check_factored([144, 6, 256], None, torch.float32, 2e-6, rows=1)


# ------------------------------------------------------------------------------- layers
def _perturbed(model: nn.Module, shape, arch: str = "monarch", seed: int = 0) -> nn.Module:
    """``model`` relaxed, its architecture moved a little off the DFT (as a short search leaves it)
    and its kernels given every frequency (so no conv or few-mode form reproduces them)."""
    gen = torch.Generator().manual_seed(seed)
    relaxed = xdfx.relax(model, torch.randn(*shape, generator=gen), arch=arch)
    with torch.no_grad():
        for p in xdfx.arch_parameters(relaxed):
            p.add_(0.02 * p.abs().mean() * torch.randn(p.shape, generator=gen))
        for name, p in relaxed.named_parameters():
            if name.endswith("weight") and p.dim() >= 3:
                p.add_(0.1 * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return relaxed


def _spectral(xd, method: str = "fft") -> SpectralConv:
    with torch.no_grad():
        spectrum = xd.spectrum()
    return SpectralConv(spectrum, [g.n for g in xd.geometry], xd.geometry, groups=xd.groups, bias=xd.bias,
                        method=method)


@pytest.mark.parametrize(
    "conv, shape",
    [
        (lambda: nn.Conv1d(3, 4, 5, padding=2), (2, 3, 300)),
        (lambda: nn.Conv1d(4, 4, 3, padding=1, groups=4, padding_mode="circular"), (2, 4, 256)),  # depthwise
        (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect"), (2, 4, 10, 260)),
        (lambda: nn.Conv3d(2, 3, 3, padding=1), (2, 2, 4, 6, 150)),
    ],
    ids=["1d", "1d-depthwise-circular", "2d-groups-stride-reflect", "3d"],
)
def test_factored_layers_match_their_fft_forms(conv, shape) -> None:
    relaxed = _perturbed(nn.Sequential(conv()), shape)
    xd = relaxed.get_submodule("0")
    x = torch.randn(*shape)
    with torch.no_grad():
        for layer in (FrozenXD(xd, method="fft"), _spectral(xd)):
            ref = layer(x)
            layer.method = "factored"
            got = layer(x)
            assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max()), type(layer).__name__


def test_spectral_factored_keeps_only_the_slots_of_its_modes() -> None:
    relaxed = _perturbed(nn.Sequential(nn.Conv1d(2, 2, 5, padding=2)), (2, 2, 1000), arch="fixed")
    xd = relaxed.get_submodule("0")
    with torch.no_grad():
        spectrum = xd.spectrum()
    few = SpectralConv(spectrum, [100], xd.geometry, method="fft")
    (ax,) = few.factored_axes
    assert ax.k2s * ax.n1 < ax.n // 2 and ax.k2s * ax.n1 >= 100  # slots cover modes 0..99, not the rest
    x = torch.randn(2, 2, 1000)
    with torch.no_grad():
        ref = few(x)
        few.method = "factored"
        assert float((few(x) - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


# ------------------------------------------------------------------------------- export
class AtLengths(nn.Module):
    """One input per length, each through its own learned layers: one export covers them all."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x0, x1=None, x2=None, x3=None, x4=None, x5=None, x6=None) -> tuple[torch.Tensor, ...]:
        # named arguments: torch.export takes *args as one input
        xs = (x0, x1, x2, x3, x4, x5, x6)[: len(self.blocks)]
        return tuple(block(x) for block, x in zip(self.blocks, xs))


def _learned_block(n: int, channels: int = 3) -> nn.Sequential:
    """A frozen XD layer with learned K, M (perturbed), a GELU, and an FFT spectral layer whose
    diagonal has every mode: the forms harden keeps for a searched layer (``snap="never"``)."""
    relaxed = _perturbed(nn.Sequential(nn.Conv1d(channels, channels, 5, padding=2),
                                       nn.Conv1d(channels, channels, 3, padding=2, dilation=2)), (2, channels, n), seed=n)
    return nn.Sequential(FrozenXD(relaxed.get_submodule("0")), nn.GELU(), _spectral(relaxed.get_submodule("1")))


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _multi_axis_blocks() -> tuple[list[nn.Module], list[tuple[int, ...]]]:
    """A 2-d frozen layer and a 3-d spectral layer, each with one long (factored) axis."""
    shapes = [(2, 2, 6, 300), (2, 2, 4, 5, 260)]
    r2 = _perturbed(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1)), shapes[0])
    r3 = _perturbed(nn.Sequential(nn.Conv3d(2, 2, 3, padding=1, padding_mode="circular")), shapes[1])
    return [FrozenXD(r2.get_submodule("0")), _spectral(r3.get_submodule("0"))], shapes


@pytest.fixture(scope="module")
def exported_at_lengths(tmp_path_factory):
    """One file holding the learned layers at every length and the 2-d / 3-d ones (one export
    instead of seven keeps the test fast)."""
    torch.manual_seed(0)
    nd_blocks, nd_shapes = _multi_axis_blocks()
    model = AtLengths([_learned_block(n) for n in LENGTHS] + nd_blocks).eval()
    shapes = [(2, 3, n) for n in LENGTHS] + nd_shapes
    path = tmp_path_factory.mktemp("lengths") / "lengths.onnx"
    result = xdfx.export.onnx(model, tuple(torch.randn(*s) for s in shapes), path, tol=TOL, timing_runs=0,
                              check_batches=(1,))
    return model, result, xdfx.export.ort_session(result.path), shapes


def test_no_dft_op_at_any_length(exported_at_lengths) -> None:
    model, result, _, _ = exported_at_lengths
    assert not _op_types(result.path) & {"DFT", "STFT"}
    assert result.max_error <= TOL
    assert set(result.exported_forms.values()) == {"factored"}, result.exported_forms
    # eager keeps its FFTs: the export switched the layers only while it traced them
    assert {m.method for _, m in xdfx.export.forms.layer_forms(model)} == {"fft"}


def _run_block(exported, i: int, batch: int = 4):
    model, result, session, shapes = exported
    gen = torch.Generator().manual_seed(i)
    xs = [torch.randn(batch, *s[1:], generator=gen) for s in shapes]
    got = session.run(None, {name: x.numpy() for name, x in zip(result.input_names, xs)})[i]
    with torch.no_grad():
        ref = model.blocks[i](xs[i])
    assert got.shape == tuple(ref.shape)
    return got, ref


@pytest.mark.parametrize("i, n", list(enumerate(LENGTHS)), ids=[str(n) for n in LENGTHS])
def test_learned_layers_match_onnxruntime_at_length(exported_at_lengths, i, n) -> None:
    got, ref = _run_block(exported_at_lengths, i)
    assert got.shape == (4, 3, n)
    assert float(np.abs(got - ref.numpy()).max()) <= TOL * float(ref.abs().max())


@pytest.mark.parametrize("i", [len(LENGTHS), len(LENGTHS) + 1], ids=["2d-frozen", "3d-spectral"])
def test_long_axes_of_2d_and_3d_layers_export(exported_at_lengths, i) -> None:
    model = exported_at_lengths[0]
    layer = model.blocks[i]
    assert layer.method == "fft" and max(a.n1 for a in layer.factored_axes) > 1  # the long axis is factored
    got, ref = _run_block(exported_at_lengths, i, batch=3)
    assert float(np.abs(got - ref.numpy()).max()) <= TOL * float(ref.abs().max())


def test_hardened_searched_model_exports_at_1024(tmp_path) -> None:
    """The pipeline itself: relax, a moved architecture, harden with ``snap="never"`` (frozen
    layers, FFTs in eager), export."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.GELU(), nn.Conv1d(4, 1, 5, padding=4, dilation=2))
    relaxed = _perturbed(model, (2, 1, 1024))
    hard = xdfx.harden(relaxed, snap="never")
    assert {r.form for r in hard.xdfx_report.records} == {"frozen"}
    x = torch.randn(3, 1, 1024)
    with warnings.catch_warnings():
        warnings.simplefilter("error", XdfxSlowExportWarning)  # slow_ratio=None: timed, never checked
        result = xdfx.export.onnx(hard, x, tmp_path / "hard.onnx", tol=TOL, timing_runs=1, slow_ratio=None)
    assert result.slow_warning is None and result.layer_timings == [] and result.ort_ms is not None
    assert result.max_error <= TOL and not _op_types(result.path) & {"DFT"}
    assert set(result.exported_forms.values()) == {"factored"}
    got = xdfx.export.ort_session(result.path).run(None, {result.input_names[0]: x.numpy()})[0]
    with torch.no_grad():
        ref = relaxed(x)  # the file computes the relaxed (searched) model
    assert float(np.abs(got - ref.numpy()).max()) <= TOL * float(ref.abs().max())


# ------------------------------------------------------------------------ slow-export warning
def test_slow_export_warns_and_names_the_dft_layer(tmp_path) -> None:
    """A layer kept on the ONNX DFT op on request; ``slow_ratio`` tiny so that the warning does not
    depend on the timing (the profile and the message do)."""
    torch.manual_seed(0)
    relaxed = _perturbed(nn.Sequential(nn.Conv1d(2, 2, 3, padding=1), nn.GELU(), nn.Conv1d(2, 2, 3, padding=1)),
                         (2, 2, 64))
    hard = xdfx.harden(relaxed, snap="never")
    dft_layer = hard.get_submodule("0")
    dft_layer.onnx_method = "fft"
    with pytest.warns(XdfxSlowExportWarning) as record:
        result = xdfx.export.onnx(hard, torch.randn(2, 2, 64), tmp_path / "slow.onnx", tol=TOL, timing_runs=3,
                                  slow_ratio=1e-9)
    message = str(record[0].message)
    assert "slower than eager" in message and "DFT node" in message, message
    assert "method 'fft': 0" in message, message
    assert result.slow_warning == message and result.exported_forms["0"] == "fft"
    timed = {t.name: t for t in result.layer_timings}
    assert {"0", "2"} <= set(timed) and timed["0"].form == "FrozenXD fft"
    assert all(t.ort_ms > 0 and t.eager_ms > 0 for t in timed.values())


def test_slow_warning_lists_layers_beyond_the_ratio() -> None:
    timings = [LayerTiming("a", "FrozenXD factored", 3.0, 1.0), LayerTiming("b", "Conv1d", 1.0, 1.0)]
    assert warn_if_slow(1.2, 1.5, 1.2, 1.0, timings, 1, 0, []) is None
    with pytest.warns(XdfxSlowExportWarning, match=r"a \(FrozenXD factored\): 3.00 ms vs 1.00 ms") as record:
        warn_if_slow(2.0, 1.5, 4.0, 2.0, timings, 2, 0, [])
    assert "b (Conv1d)" not in str(record[0].message) and "2 thread(s)" in str(record[0].message)
    assert math.isinf(LayerTiming("c", "x", 1.0, 0.0).ratio)
