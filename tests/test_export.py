"""xdfx.export: hardened models exported with the dynamo ONNX exporter and run in onnxruntime.

Every test writes a real ONNX file and runs it in a real onnxruntime session; outputs must
match the eager model within 1e-4 * max|y| on the example batch and on batches 1 and 3.

The zoo is subsampled (set XDFX_EXPORT_FULL_ZOO=1 for all 17 entries): the entries below hold
every operator type a hardened zoo model contains (Conv1d/2d/3d, functional conv, AvgPool1d/2d/
3d, adaptive and max pools, GraphPolynomial), plus the non-batch graph input, baked non-tensor
arguments and the data-dependent branch; the hardened forms the zoo never produces (spectral,
fft, frozen, zero, identity, permutations, asymmetric padding, frozen graph conv) are planted.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import xdfx
import xdfx.export
from tests.zoo import ZOO
from xdfx.export import XdfxExportError, XdfxExportWarning, check_outputs
from xdfx.ops.graph import XDGraphConv
from xdfx.ops import FrozenGraphConv, FrozenXD, Gather, Monarch, Pad, PadTo, SpectralConv, XDConv, Zero

TOL = 1e-4
COVERING = ["cnn3d", "data_dependent", "functional_conv", "gcn", "nontensor_args", "pools", "shared_conv", "tcn_causal"]
ZOO_NAMES = sorted(ZOO) if os.environ.get("XDFX_EXPORT_FULL_ZOO") else COVERING


def _export(model: nn.Module, inputs, tmp_path, name: str = "model", **kw) -> xdfx.export.ExportResult:
    kw.setdefault("timing_runs", 0)
    return xdfx.export.onnx(model, inputs, tmp_path / f"{name}.onnx", tol=TOL, **kw)


def _op_types(path) -> set[str]:
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    for f in model.functions:
        ops |= {n.op_type for n in f.node}
    return ops


def _assert_checked(result: xdfx.export.ExportResult, example_batch: int) -> None:
    assert result.dynamic_batch
    assert set(result.errors) == {1, 3, example_batch}, result.errors
    assert result.max_error <= TOL, result
    assert result.path.exists() and result.opset >= 18


# ---------------------------------------------------------------------------------------- zoo
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_hardened_exports(name: str, tmp_path) -> None:
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.make().eval()
    inputs = entry.example_inputs()
    hard = xdfx.harden(xdfx.relax(model, inputs))
    if name == "data_dependent":
        # `if x.mean() > 0` in Gate: torch.export records one branch, so there is no graph to
        # write; the error names the module and the line instead of exporting a wrong model.
        with pytest.raises(XdfxExportError) as info:
            _export(hard, inputs, tmp_path, name)
        msg = str(info.value)
        assert "module 'gate' (Gate) has data-dependent control flow" in msg, msg
        assert "if x.mean() > 0:" in msg and "torch.where" in msg, msg
        return
    if name == "gcn":
        # the input's first axis is the 34 nodes of the graph, not a batch
        with pytest.warns(XdfxExportWarning, match="fixes dimension 0 of input"):
            result = _export(hard, inputs, tmp_path, name)
        assert not result.dynamic_batch and set(result.errors) == {34} and result.max_error <= TOL
        return
    result = _export(hard, inputs, tmp_path, name)
    _assert_checked(result, inputs[0].shape[0])
    with torch.no_grad():  # the file computes the original model too (harden is exact here)
        ref = model(*inputs)
    session = xdfx.export.ort_session(result.path)
    got = session.run(None, {result.input_names[0]: inputs[0].numpy()})[0]
    assert float(np.abs(got - ref.numpy()).max()) <= TOL * float(ref.abs().max())


# ---------------------------------------------------------------------------- planted layers
def _relaxed(conv: nn.Module, shape, arch: str = "fixed"):
    relaxed = xdfx.relax(nn.Sequential(conv), torch.randn(*shape), arch=arch)
    return relaxed, relaxed.get_submodule("0")


def _plant_spectrum(xd: XDConv, modes: int) -> None:
    """A random filter on frequencies ``|k| < modes`` of every axis (an FNO layer's spectrum)."""
    ns = [g.n for g in xd.geometry]
    keep = [torch.tensor([*range(modes), *range(n - modes + 1, n)]) for n in ns[:-1]] + [torch.arange(modes)]
    spec = torch.zeros(xd.out_channels, xd.in_channels // xd.groups, *ns[:-1], ns[-1] // 2 + 1, dtype=torch.complex64)
    block = torch.randn(*spec.shape[:2], *(len(k) for k in keep), dtype=torch.complex64)
    spec[(slice(None), slice(None), *torch.meshgrid(*keep, indexing="ij"))] = block
    xd.set_kernel(torch.fft.irfftn(spec.conj(), s=ns, dim=tuple(range(2, 2 + len(ns)))))


@pytest.mark.parametrize(
    "conv, shape, modes",
    [
        (lambda: nn.Conv1d(6, 6, 5, padding=2, padding_mode="circular"), (2, 6, 128), 4),
        (lambda: nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), (2, 4, 24, 20), 2),
    ],
    ids=["1d-modes4", "2d-modes2"],
)
def test_spectral_matmul_layer_exports_without_dft(conv, shape, modes, tmp_path) -> None:
    torch.manual_seed(0)
    relaxed, xd = _relaxed(conv(), shape)
    _plant_spectrum(xd, modes)
    hard = xdfx.harden(relaxed)
    (rec,) = hard.xdfx_report.records
    # (harden may keep a few more modes than planted: its energy test runs in float32)
    assert rec.form == "spectral" and rec.detail.startswith("modes="), rec
    layer = hard.get_submodule("0")
    assert isinstance(layer, SpectralConv) and layer.method == "matmul"
    result = _export(hard, torch.randn(*shape), tmp_path)
    _assert_checked(result, shape[0])
    assert not _op_types(result.path) & {"DFT", "STFT"}, "the matmul path must not use ONNX DFT"
    x = torch.randn(*shape)  # the file reproduces the relaxed layer, not only the hardened one
    got = xdfx.export.ort_session(result.path).run(None, {result.input_names[0]: x.numpy()})[0]
    with torch.no_grad():
        ref = relaxed(x)
    assert float(np.abs(got - ref.numpy()).max()) <= TOL * float(ref.abs().max())


def test_tracing_leaves_the_eager_spectral_layer_intact() -> None:
    """torch.export runs forward on fake tensors: nothing computed then may stay in the layer,
    or the next eager call would compute with fake tensors."""
    torch.manual_seed(0)
    relaxed, xd = _relaxed(nn.Conv1d(4, 4, 5, padding=2, padding_mode="circular"), (2, 4, 64))
    _plant_spectrum(xd, 5)
    hard = xdfx.harden(relaxed)
    layer = hard.get_submodule("0")
    x = torch.randn(2, 4, 64)
    with torch.no_grad():
        ref = hard(x)
    torch.export.export(hard, (x,), strict=False)
    with torch.no_grad():
        assert torch.equal(hard(x), ref)


@pytest.mark.parametrize("all_modes", [True, False], ids=["all-modes", "truncated"])
@pytest.mark.parametrize(
    "conv, shape",
    [
        (lambda: nn.Conv1d(4, 6, 5, padding=2), (2, 4, 40)),
        (lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, padding_mode="reflect"), (2, 4, 18, 16)),
    ],
    ids=["1d-zeros", "2d-reflect-stride"],
)
def test_spectral_fft_layer_exports(conv, shape, all_modes: bool, tmp_path) -> None:
    """The real-FFT form (what harden picks for a dense spectrum) runs FFTs in eager PyTorch and
    exports as factored DFT matmuls (onnxruntime's DFT op is slow and less accurate)."""
    torch.manual_seed(0)
    relaxed, xd = _relaxed(conv(), shape)
    with torch.no_grad():
        spectrum = xd.spectrum()
    ns = [g.n for g in xd.geometry]
    modes = ns if all_modes else [3] * len(ns)
    fft = SpectralConv(spectrum, modes, xd.geometry, groups=xd.groups, bias=xd.bias, method="fft")
    model = nn.Sequential(fft).eval()
    x = torch.randn(*shape)
    if all_modes:
        with torch.no_grad():
            ref = relaxed(x)
        assert float((model(x) - ref).abs().max()) <= TOL * float(ref.abs().max())
    else:  # same kept modes on the matmul path
        twin = SpectralConv(spectrum, modes, xd.geometry, groups=xd.groups, bias=xd.bias, method="matmul")
        with torch.no_grad():
            ref = twin(x)
        assert float((model(x) - ref).abs().max()) <= TOL * float(ref.abs().max())
    result = _export(model, x, tmp_path)
    _assert_checked(result, shape[0])
    assert result.exported_forms == {"0": "factored"} and fft.method == "fft"
    assert "DFT" not in _op_types(result.path)


@pytest.mark.parametrize(
    "conv, shape",
    [
        (lambda: nn.Conv1d(3, 3, 3, padding=1), (2, 3, 40)),
        (lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), (2, 4, 12, 10)),  # depthwise
        (lambda: nn.Conv1d(3, 4, 5, padding=2, padding_mode="reflect"), (2, 3, 30)),
        (lambda: nn.Conv1d(4, 4, 3, padding=1), (2, 4, 200)),  # n = 210 > 192: factored Monarch
    ],
    ids=["1d", "2d-depthwise-stride", "1d-reflect", "1d-monarch-factored"],
)
@pytest.mark.parametrize("dft", ["matmul", "fft"])
def test_frozen_xd_layer_exports(conv, shape, dft, tmp_path) -> None:
    """Both ways the frozen form takes its DFTs: real cos/sin matmuls or real FFTs (harden's
    choice), exported here with the ONNX ``DFT`` op on request (by default they export as
    factored matmuls: test_export_lengths.py)."""
    torch.manual_seed(0)
    relaxed, xd = _relaxed(conv(), shape, arch="monarch")
    with torch.no_grad():  # learned general factors: only the frozen form reproduces the layer
        for q in xd.K:
            q.blocks1.add_(0.05 * torch.randn_like(q.blocks1))
    hard = xdfx.harden(relaxed, snap="never")  # the default would snap it onto a conv
    assert hard.xdfx_report.records[0].form == "frozen"
    layer = hard.get_submodule("0")
    assert isinstance(layer, FrozenXD) and layer.method == "fft"
    assert not any(isinstance(m, (XDConv, Monarch)) for m in hard.modules())  # frozen factors are buffers
    hard.set_submodule("0", FrozenXD(xd, method=dft))
    hard.get_submodule("0").onnx_method = dft
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = layer(x)
        assert float((hard(x) - ref).abs().max()) <= TOL * float(ref.abs().max())
    result = _export(hard, torch.randn(*shape), tmp_path)
    _assert_checked(result, shape[0])
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert ("DFT" in ops) == (dft == "fft"), ops
    got = xdfx.export.ort_session(result.path).run(None, {result.input_names[0]: x.numpy()})[0]
    with torch.no_grad():
        ref = relaxed(x)
    assert float(np.abs(got - ref.numpy()).max()) <= TOL * float(ref.abs().max())


def _plant_zero(xd: XDConv) -> None:
    xd.set_kernel(torch.zeros_like(xd.kernel()))


def _plant_identity(xd: XDConv) -> None:
    w = torch.zeros_like(xd.kernel())
    w[:, :, 1] = torch.eye(xd.in_channels)
    xd.set_kernel(w)
    with torch.no_grad():
        xd.bias.zero_()


def _plant_permutation(xd: XDConv) -> None:
    n = xd.geometry[0].n
    with torch.no_grad():
        xd.M[0].blocks1[0].copy_(torch.eye(n)[torch.randperm(n)])


@pytest.mark.parametrize(
    "conv, length, arch, plant, form, module_type",
    [
        (lambda: nn.Conv1d(4, 4, 3, padding=1), 33, "fixed", _plant_zero, "zero", Zero),
        (lambda: nn.Conv1d(4, 4, 3, padding=1), 33, "fixed", _plant_identity, "identity", nn.Identity),
        (lambda: nn.Conv1d(3, 3, 3, padding=1), 60, "monarch", _plant_permutation, "conv+permutation", Gather),
        (lambda: nn.Conv1d(2, 2, 4, padding="same"), 33, "fixed", None, "conv", Pad),  # pads (1, 2)
    ],
    ids=["zero", "identity", "permutation", "asymmetric-pad"],
)
def test_other_hardened_forms_export(conv, length, arch, plant, form, module_type, tmp_path) -> None:
    torch.manual_seed(0)
    c = conv()
    relaxed, xd = _relaxed(c, (2, c.in_channels, length), arch=arch)
    if plant is not None:
        plant(xd)
    hard = xdfx.harden(relaxed)
    assert hard.xdfx_report.records[0].form == form
    assert any(isinstance(m, module_type) for m in hard.modules())
    if form == "conv+permutation":
        assert any(isinstance(m, PadTo) for m in hard.modules())
    result = _export(hard, torch.randn(2, c.in_channels, length), tmp_path)
    _assert_checked(result, 2)


def test_frozen_graph_conv_exports(tmp_path) -> None:
    torch.manual_seed(0)
    entry = ZOO["gcn"]
    inputs = entry.example_inputs()
    relaxed = xdfx.relax(entry.make().eval(), inputs, arch="monarch")
    with torch.no_grad():
        for m in relaxed.modules():
            if isinstance(m, XDGraphConv) and m.K is not None:
                m.K.matrix.add_(0.01 * torch.randn_like(m.K.matrix))
    hard = xdfx.harden(relaxed, example_inputs=inputs)
    assert "frozen" in {r.form for r in hard.xdfx_report}
    assert any(isinstance(m, FrozenGraphConv) for m in hard.modules())
    result = _export(hard, inputs, tmp_path, dynamic_batch=False)
    assert not result.dynamic_batch and result.max_error <= TOL


# ------------------------------------------------------------------------------------- errors
def test_relaxed_model_exports_directly(tmp_path) -> None:
    """XD layers keep complex values inside rfft/irfft and one complex matmul per frequency,
    which the exporter translates: an unhardened model exports and is verified too."""
    x = torch.randn(2, 3, 40)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 2, 3)), x)
    result = _export(relaxed, x, tmp_path)
    got = xdfx.export.ort_session(result.path).run(None, {result.input_names[0]: x.numpy()})[0]
    with torch.no_grad():
        ref = relaxed(x)
    assert float(np.abs(got - ref.numpy()).max()) <= TOL * float(ref.abs().max())


def test_unsupported_op_next_to_xd_layers_names_op_and_suggests_harden(tmp_path) -> None:
    x = torch.randn(2, 4, 16)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), _KthValue()), x)
    with pytest.raises(XdfxExportError) as info:
        _export(relaxed, x, tmp_path)
    msg = str(info.value)
    assert "no ONNX translation for op aten.kthvalue" in msg, msg
    assert "XD layers ('0'" in msg and "xdfx.harden(model" in msg, msg
    assert isinstance(info.value.__cause__, Exception)


class _KthValue(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.kthvalue(self.conv(x), 2, dim=-1).values


def test_unsupported_op_is_named(tmp_path) -> None:
    with pytest.raises(XdfxExportError) as info:
        _export(nn.Sequential(_KthValue()), torch.randn(2, 4, 16), tmp_path)
    msg = str(info.value)
    assert "no ONNX translation for op aten.kthvalue" in msg and "module '0' (_KthValue)" in msg, msg
    assert "torch.kthvalue" in msg and "test_export.py" in msg, msg  # the source line
    assert "xdfx.harden" not in msg  # no XD layer in this model


class _TracesDifferently(nn.Module):
    """Legitimately computes something else under torch.export than in eager mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.tanh(y) if torch.compiler.is_exporting() else torch.sigmoid(y)


def test_mismatching_session_is_reported(tmp_path) -> None:
    with pytest.raises(XdfxExportError, match=r"onnxruntime disagrees .* output 0 .* max error [\d.e+-]+ > tol 0.0001"):
        _export(_TracesDifferently(), torch.randn(2, 3, 20), tmp_path)


def test_check_outputs_compares_arrays() -> None:
    y = np.linspace(-2.0, 2.0, 12, dtype=np.float32).reshape(3, 4)
    assert check_outputs([y, y], [y + 1e-6, y], 1e-4) <= 1e-6
    bad = y.copy()
    bad[1, 2] += 0.5
    with pytest.raises(XdfxExportError, match=r"output 1 \('logits'\) \(shape \(3, 4\)\) has max error 0.5 > tol 0.0001 \* max\|y\| 2"):
        check_outputs([y, y], [y, bad], 1e-4, names=["features", "logits"])
    assert check_outputs([y], [bad], 0.3) == pytest.approx(0.25, rel=1e-6)
    with pytest.raises(XdfxExportError, match=r"shape \(4, 3\) in onnxruntime but \(3, 4\)"):
        check_outputs([y], [y.reshape(4, 3)], 1e-4)
    with pytest.raises(XdfxExportError, match="returns 1 outputs"):
        check_outputs([y, y], [y], 1e-4)
    nan = y.copy()
    nan[0, 0] = np.nan
    assert check_outputs([nan], [nan.copy()], 1e-4) == 0.0
    with pytest.raises(XdfxExportError, match="NaNs at different places"):
        check_outputs([y], [nan], 1e-4)
    with pytest.raises(XdfxExportError, match="max error"):  # all-zero reference: exact match required
        check_outputs([np.zeros(3)], [np.full(3, 1e-9)], 1e-4)


# -------------------------------------------------------------------------- options and state
def test_static_batch_opset_and_training_mode(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Dropout(0.5), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    model(x)  # moves the running statistics off their initial values
    model.train()
    result = _export(model, x, tmp_path, dynamic_batch=False, timing_runs=2)
    assert model.training, "the caller's mode is restored"
    assert not result.dynamic_batch and set(result.errors) == {2} and result.max_error <= TOL
    proto = onnx.load(str(result.path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 8, 8]
    assert result.ort_ms > 0 and result.eager_ms > 0 and result.ratio > 0
    assert "static batch" in str(result)


@pytest.mark.parametrize("pad", [False, True], ids=["conv", "conv+asymmetric-pad"])
def test_opset_is_read_back_from_the_file(pad: bool, tmp_path) -> None:
    """Opset 17 asked: the exporter writes 17 where it can convert every op down, else 18 (Pad
    with axes); the result reports what the file holds and warns when that is not what was asked."""
    torch.manual_seed(0)
    model = nn.Sequential(*([Pad([(1, 2)], "zeros")] if pad else []), nn.Conv1d(2, 2, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _export(model, torch.randn(2, 2, 16), tmp_path, opset=17)
    proto = onnx.load(str(result.path))
    assert result.opset == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    warned = [w for w in caught if issubclass(w.category, XdfxExportWarning) and "asked for opset 17" in str(w.message)]
    assert result.opset >= 17 and bool(warned) == (result.opset != 17)


def test_onnx_rejects_non_modules(tmp_path) -> None:
    with pytest.raises(xdfx.XdfxInputError, match="expects an nn.Module"):
        xdfx.export.onnx(lambda x: x, torch.randn(2), tmp_path / "f.onnx")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_and_compile_from_cuda(tmp_path) -> None:
    torch.manual_seed(0)
    relaxed, xd = _relaxed(nn.Conv1d(6, 6, 5, padding=2, padding_mode="circular"), (2, 6, 128))
    _plant_spectrum(xd, 12)
    hard = xdfx.harden(relaxed).cuda()
    x = torch.randn(2, 6, 128, device="cuda")
    result = _export(hard, x, tmp_path, timing_runs=2)
    _assert_checked(result, 2)
    served = xdfx.export.compile(hard, mode="reduce-overhead", example_inputs=x)
    assert served(x).device.type == "cuda"


# ------------------------------------------------------------------------------ torch.compile
def _small_hardened() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 64)
    relaxed = xdfx.relax(nn.Sequential(nn.Conv1d(6, 6, 5, padding=2, padding_mode="circular"), nn.GELU(),
                                       nn.Conv1d(6, 4, 3, padding=1)), x, arch="fixed")
    _plant_spectrum(relaxed.get_submodule("0"), 6)
    return xdfx.harden(relaxed, max_cost=10.0), x  # exact forms: compile must match them


def test_compile_matches_eager() -> None:
    hard, x = _small_hardened()
    assert hard.xdfx_report.records[0].form in ("spectral", "fft")
    served = xdfx.export.compile(hard, example_inputs=x)  # compiles, checks against eager
    assert served.compiled and served.fallback_reason is None
    x2 = torch.randn(2, 6, 64)
    with torch.no_grad():
        ref = hard(x2)
        got = served(x2)
    assert float((got - ref).abs().max()) <= TOL * float(ref.abs().max())


def test_compile_falls_back_to_eager_with_warning() -> None:
    hard, x = _small_hardened()

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    with pytest.warns(XdfxExportWarning, match="no C\\+\\+ compiler on this machine"):
        served = xdfx.export.compile(hard, example_inputs=x, backend=broken_backend)
    assert not served.compiled and "no C++ compiler" in served.fallback_reason
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, then plain eager
        assert torch.equal(served(x), hard(x))
    with pytest.raises(xdfx.XdfxInputError, match="mode 'fastest'"):
        xdfx.export.compile(hard, mode="fastest")


def test_searched_permuted_digits_model_exports(tmp_path) -> None:
    """A relaxed CNN searched on permuted digits (real data, real steps) hardens and exports, and
    onnxruntime agrees with PyTorch at two batch sizes."""
    from benchmarks.search_results import DigitsCNN
    from xdfx.search import optimizers, search
    from xdfx.tasks import permuted_digits

    torch.manual_seed(0)
    data = permuted_digits.load(seed=0)
    loader = [(data["x_train"][i:i + 64], data["y_train"][i:i + 64]) for i in range(0, 256, 64)]
    relaxed = xdfx.relax(DigitsCNN(width=8), data["x_train"][:2], arch="monarch")
    search(relaxed, loader, torch.nn.functional.cross_entropy, 2, opt=optimizers(relaxed), progress=False)
    assert any(float(p.grad.abs().sum()) > 0 for p in xdfx.arch_parameters(relaxed) if p.grad is not None)
    hard = xdfx.harden(relaxed.eval(), tol=1e-3, example_inputs=(data["x_test"][:32],))
    result = xdfx.export.onnx(hard, (data["x_test"][:8],), tmp_path / "digits.onnx", check_batches=(1, 5))
    assert set(result.errors) >= {1, 5} and max(result.errors.values()) <= 1e-4
