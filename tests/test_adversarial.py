"""Bad inputs (issue 18): each gets a typed xdfx error that names the layer and says what to do,
or the right answer; the user's model is never changed (state_dict and module tree, byte for
byte); handled cases print no traceback."""

from __future__ import annotations

import copy
import math
import os
import re
import stat

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import xdfx
from xdfx import cli
from xdfx.errors import XdfxError, XdfxInputError, XdfxShapeError, XdfxTraceError

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
FX_INTERNALS = re.compile(r"%\w+ :|num_users|call_module\[|call_function\[")


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=1)).eval()


def snapshot(model: nn.Module) -> tuple:
    """Everything a mutation could touch: tensors (values, dtype, device), module tree, flags, hooks."""
    state = {k: (v if isinstance(v, nn.parameter.UninitializedParameter) else v.detach().clone(), v.dtype, v.device)
             for k, v in model.state_dict(keep_vars=True).items()}
    flags = tuple((n, m.training) for n, m in model.named_modules())
    hooks = tuple((n, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules())
    return state, repr(model), flags, hooks


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    state, tree, flags, hooks = snapshot(model)
    old_state, old_tree, old_flags, old_hooks = before
    assert state.keys() == old_state.keys()
    for k, (v, dtype, device) in state.items():
        ov, odtype, odevice = old_state[k]
        assert dtype == odtype and device == odevice, k
        lazy = isinstance(v, nn.parameter.UninitializedParameter)
        assert v.is_meta or (lazy and ov is v) or (not lazy and torch.equal(v, ov)), f"{k} changed"
    assert (tree, flags, hooks) == (old_tree, old_flags, old_hooks)


def assert_clear(err: BaseException, *words: str) -> None:
    """An xdfx message: no fx internals, and every given word (layer name, advice) in it."""
    text = str(err)
    assert not FX_INTERNALS.search(text), text
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"


def assert_quiet(capfd) -> None:
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, out + err


@pytest.fixture(scope="module")
def relaxed() -> nn.Module:
    return xdfx.relax(net(), X)


@pytest.fixture(scope="module")
def hardened(relaxed) -> nn.Module:
    return xdfx.harden(relaxed, example_inputs=X)


# ---------------------------------------------------------------------------------- shapes
def test_unbatched_example_input_names_the_layer_and_says_add_a_batch_axis(capfd) -> None:
    model = net()
    before = snapshot(model)
    with pytest.raises(XdfxShapeError) as info:
        xdfx.relax(model, X[0])
    assert_clear(info.value, "'1'", "BatchNorm2d", "(3, 16, 16)")
    assert_unchanged(model, before)
    # a model that accepts an unbatched input (a bare conv): xdfx relaxes batched layers only
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    before = snapshot(conv)
    with pytest.raises(XdfxShapeError) as info:
        xdfx.relax(conv, X[0])
    assert_clear(info.value, "'0'", "unbatched", "unsqueeze(0)")
    assert_unchanged(conv, before)
    assert_quiet(capfd)


def test_unbatched_input_at_run_time(relaxed) -> None:
    with pytest.raises(XdfxShapeError) as info:
        relaxed(X[0])
    assert_clear(info.value, "'0'", "(3, 16, 16)", "batch")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(1, 20), min_size=1, max_size=5))
def test_any_wrong_input_shape_is_a_shape_error_or_the_right_answer(relaxed, shape) -> None:
    """Random input shapes: the relaxed model answers as the original does, or raises an
    XdfxShapeError naming the layer (never a torch error, never fx internals)."""
    model = net()
    x = torch.randn(*shape)
    try:
        with torch.no_grad():
            expected = model(x)
    except Exception:  # noqa: BLE001 - the original rejects it too
        expected = None
    try:
        with torch.no_grad():
            got = relaxed(x)
    except XdfxShapeError as err:
        assert_clear(err, "layer '")
        return
    assert expected is not None and got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_empty_batch_at_run_time_gives_an_empty_output(relaxed, hardened) -> None:
    with torch.no_grad():
        for model in (relaxed, hardened):
            y = model(X[:0])
            assert y.shape == (0, 4, 16, 16)
    # the FFT-based forms (fft, frozen) too: a kernel grown past any conv, hardened at tol 0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 5, padding=2, padding_mode="circular"), nn.ReLU(), nn.AvgPool1d(2)).eval()
    x = torch.randn(2, 2, 32)
    for arch in ("fixed", "monarch"):
        grown = xdfx.relax(model, x, arch=arch)
        with torch.no_grad():
            for p in grown.parameters():
                p.add_(0.01 * torch.randn_like(p))
        hard = xdfx.harden(grown, example_inputs=x, tol=0.0, snap="never")
        assert {r.form for r in hard.xdfx_report} <= {"fft", "frozen"}
        with torch.no_grad():
            assert grown(x[:0]).shape == hard(x[:0]).shape == (0, 4, 16)


def test_harden_refuses_an_empty_calibration_batch(relaxed, capfd) -> None:
    before = snapshot(relaxed)
    with pytest.raises(XdfxInputError) as info:
        xdfx.harden(relaxed, example_inputs=X[:0])
    assert_clear(info.value, "empty", "example_inputs")
    assert_unchanged(relaxed, before)
    assert_quiet(capfd)


def test_smaller_input_at_an_adaptive_pool_says_which_sizes_work() -> None:
    class Pooled(nn.Module):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(size)

        def forward(self, x):
            return self.pool(self.conv(x))

    torch.manual_seed(0)
    for size, small in ((8, 4), (8, 8), (1, 8)):
        model = Pooled(size).eval()
        relaxed = xdfx.relax(model, X)
        x = torch.randn(2, 3, small, small)
        with torch.no_grad():
            try:
                y = relaxed(x)
            except XdfxShapeError as err:
                assert_clear(err, "'pool'", "16", "Relax")
                text = str(err)
                m = re.search(r"at most (\d+)", text)
                assert m is None or small > int(m.group(1)), f"says 'at most' for a length it refuses: {text}"
            else:  # the right answer, or nothing
                assert y.shape == model(x).shape and torch.allclose(y, model(x), atol=1e-5)


# ---------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_and_bfloat16_models_relax_and_harden(dtype) -> None:
    model = net().to(dtype)
    before = snapshot(model)
    x = X[..., :8, :8].to(dtype)  # small: harden's snapped forms search tap boxes
    relaxed = xdfx.relax(model, x)
    hard = xdfx.harden(relaxed, example_inputs=x, tol=1e-2)
    assert [r.form for r in hard.xdfx_report] == ["conv", "conv"]  # not a float32 conv that refuses half inputs
    eps = torch.finfo(dtype).eps
    with torch.no_grad():
        y = model(x).float()
        for m in (relaxed, hard):
            got = m(x)
            assert got.dtype == dtype
            assert (got.float() - y).abs().max() <= 8 * eps * y.abs().max()
    assert_unchanged(model, before)


@pytest.mark.parametrize("model_dtype,input_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_input_of_another_float_dtype_names_the_layer_and_the_cast(model_dtype, input_dtype) -> None:
    relaxed = xdfx.relax(net().to(model_dtype), X.to(model_dtype))
    with pytest.raises(XdfxInputError) as info:
        with torch.no_grad():
            relaxed(X.to(input_dtype))
    name = {torch.float32: "float32", torch.float64: "float64"}
    assert_clear(info.value, "'0'", name[model_dtype], name[input_dtype], ".to(")


# ---------------------------------------------------------------------------------- harden
@pytest.mark.parametrize("tol", [-1.0, float("nan"), float("inf")])
def test_harden_rejects_a_tol_that_is_not_a_finite_nonnegative_number(relaxed, tol) -> None:
    before = snapshot(relaxed)
    with pytest.raises(XdfxInputError) as info:
        xdfx.harden(relaxed, tol=tol)
    assert_clear(info.value, "tol", str(tol))
    assert_unchanged(relaxed, before)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.just(0.0), st.floats(-1e3, 1e3), st.sampled_from([math.nan, math.inf, -math.inf])))
def test_harden_refuses_calibration_that_cannot_tell_forms_apart(relaxed, value) -> None:
    """All-zero, constant, NaN or infinite calibration inputs would pick 'zero' or any form at
    random: harden names the layer and asks for real data."""
    before = snapshot(relaxed)
    with pytest.raises(XdfxInputError) as info:
        xdfx.harden(relaxed, example_inputs=torch.full_like(X, value))
    words = ["'0'", "example_inputs"] + (["NaN or infinite"] if not math.isfinite(value) else ["constant"])
    assert_clear(info.value, *words)
    assert_unchanged(relaxed, before)


def test_harden_refuses_nan_in_one_pixel(relaxed) -> None:
    x = X.clone()
    x[1, 2, 3, 4] = math.nan
    with pytest.raises(XdfxInputError) as info:
        xdfx.harden(relaxed, example_inputs=x)
    assert_clear(info.value, "'0'", "NaN or infinite")


def test_harden_and_report_of_a_train_mode_model_change_nothing(tmp_path) -> None:
    model = net().train()
    x = X[..., :8, :8]  # small: the report draws a figure per layer
    relaxed = xdfx.relax(model, x).train()
    before = snapshot(relaxed)
    hard = xdfx.harden(relaxed, example_inputs=x)
    assert_unchanged(relaxed, before)
    # the reported end-to-end error is the eval-mode models' error
    with torch.no_grad():
        ref = copy.deepcopy(relaxed).eval()(x)
        got = copy.deepcopy(hard).eval()(x)
    err = float((got - ref).abs().max() / ref.abs().max())
    assert hard.xdfx_report.end_to_end_error == pytest.approx(err, rel=1e-3, abs=1e-9)
    assert err < 1e-5
    xdfx.report(relaxed, tmp_path / "report", example_inputs=x)
    assert_unchanged(relaxed, before)
    assert relaxed.training and relaxed.get_submodule("1").training


# ---------------------------------------------------------------------------------- NaN / inf
def test_nan_spreads_through_an_xd_layer_and_check_finite_names_the_layer(capfd) -> None:
    """One NaN pixel makes every output of a relaxed conv NaN (the FFT mixes all positions);
    relax(check_finite=True) stops at the first XD layer fed NaN or inf."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    before = snapshot(model)
    x = X.clone()
    x[0, 0, 5, 5] = math.nan
    plain = xdfx.relax(model, X)
    with torch.no_grad():
        assert torch.isnan(model(x)[0]).sum() < 4 * 9 + 1  # the conv: a 3x3 patch per output channel
        assert torch.isnan(plain(x)[0]).all()  # documented: the whole sample
        assert torch.isfinite(plain(x)[1]).all()  # other samples of the batch are not touched
    checked = xdfx.relax(model, X, check_finite=True)
    with torch.no_grad():
        assert torch.equal(checked(X), plain(X))  # finite inputs: no change
        with pytest.raises(XdfxInputError) as info:
            checked(x)
    assert_clear(info.value, "'0'", "NaN or infinite", "check_finite")
    hard = xdfx.harden(checked, example_inputs=X)
    with torch.no_grad():
        assert torch.equal(hard(X), xdfx.harden(plain, example_inputs=X)(X))
    assert_unchanged(model, before)  # the checks sit on the relaxed copy's layers only
    assert_quiet(capfd)


# ---------------------------------------------------------------------------------- files
def _unwritable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(locked, os.W_OK):  # root ignores permissions: a path under a file is never writable
        (tmp_path / "file").write_text("")
        return tmp_path / "file" / "sub"
    return locked / "sub"


def test_export_to_an_unwritable_path(hardened, tmp_path, capfd) -> None:
    target = _unwritable(tmp_path) / "model.onnx"
    with pytest.raises(XdfxError) as info:
        xdfx.export.onnx(hardened, X, target)
    assert_clear(info.value, str(target))
    assert not target.exists()
    assert_quiet(capfd)


def test_checkpoint_to_an_unwritable_path(relaxed, tmp_path) -> None:
    target = _unwritable(tmp_path) / "run.pt"
    with pytest.raises(XdfxError) as info:
        xdfx.save_checkpoint(target, relaxed)
    assert_clear(info.value, str(target))


def test_checkpoint_without_a_model_or_corrupt_changes_nothing(relaxed, tmp_path) -> None:
    before = snapshot(relaxed)
    empty = tmp_path / "empty.pt"
    torch.save({"format": "xdfx-checkpoint-1", "epoch": 3}, empty)
    with pytest.raises(XdfxError) as info:
        xdfx.load_checkpoint(empty, relaxed)
    assert_clear(info.value, str(empty), "model")
    corrupt = tmp_path / "corrupt.pt"
    xdfx.save_checkpoint(corrupt, relaxed)
    corrupt.write_bytes(corrupt.read_bytes()[:100])  # a truncated write
    with pytest.raises(XdfxError) as info:
        xdfx.load_checkpoint(corrupt, relaxed)
    assert_clear(info.value, str(corrupt), "corrupt")
    assert len(str(info.value)) - len(str(corrupt)) < 400, "torch's whole weights_only lecture is not the user's problem"
    assert_unchanged(relaxed, before)


# ---------------------------------------------------------------------------------- CLI
def _cli(capfd, *argv) -> str:
    assert cli.main(list(argv)) == 2
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert err.startswith("xdfx: error:")
    return err


def test_cli_refuses_a_callable_that_is_not_a_model(capfd) -> None:
    err = _cli(capfd, "relax", "collections:OrderedDict", "--shape", "2,1,64")
    assert "not an nn.Module" in err
    err = _cli(capfd, "relax", "math:sqrt", "--shape", "2,1,64")
    assert "math:sqrt" in err


def test_cli_unwritable_out_and_bad_tol(capfd, tmp_path) -> None:
    target = _unwritable(tmp_path)
    for command, out in (("report", target / "report"), ("export", target / "tcn.onnx")):
        err = _cli(capfd, command, "examples.models:TCN", "--shape", "2,1,64", "--out", str(out))
        assert str(target) in err
    err = _cli(capfd, "relax", "examples.models:TCN", "--shape", "2,1,64", "--save", str(target / "r.pt"))
    assert str(target) in err
    err = _cli(capfd, "harden", "examples.models:TCN", "--shape", "2,1,64", "--tol", "nan")
    assert "tol" in err


# ---------------------------------------------------------------------------------- models
def test_meta_device_model_says_to_load_weights_first(capfd) -> None:
    model = net().to("meta")
    before = snapshot(model)
    for x in (X, X.to("meta")):
        with pytest.raises(XdfxInputError) as info:
            xdfx.relax(model, x)
        assert_clear(info.value, "meta", "'0.weight'", "to_empty")
    assert_unchanged(model, before)
    assert_quiet(capfd)


def test_hooks_are_kept_on_the_relaxed_model() -> None:
    model = net()
    model[0].register_forward_hook(lambda m, args, out: out * 1.5)
    model.register_forward_pre_hook(lambda m, args: (args[0].flip(-1),))
    before = snapshot(model)
    with torch.no_grad():
        y = model(X)
    relaxed = xdfx.relax(model, X)
    hard = xdfx.harden(relaxed, example_inputs=X)
    with torch.no_grad():
        for m in (relaxed, hard):
            assert (m(X) - y).abs().max() <= 1e-4 * y.abs().max()
    row = next(r for r in relaxed.xdfx_report if r.name == "0")
    assert row.status == "relaxed" and "hooks" in row.detail
    assert_unchanged(model, before)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_lazy_and_weight_norm_convs_are_reported() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LazyConv2d(5, 3, padding=1),
                          torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(5, 5, 3, padding=1)),
                          torch.nn.utils.weight_norm(nn.Conv2d(5, 2, 1))).eval()
    before = snapshot(model)
    relaxed = xdfx.relax(model, X)
    rows = {r.name: r for r in relaxed.xdfx_report}
    assert rows["1"].status == "skipped" and "has not run yet" in rows["1"].detail
    assert rows["2"].status == "relaxed" and rows["3"].status == "relaxed"
    assert "WeightNorm" in rows["3"].detail
    assert_unchanged(model, before)


def test_relax_of_a_data_dependent_branch_prints_nothing(capfd) -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            if x.mean() > 100:  # data-dependent: this block becomes a leaf
                return x
            return self.conv(x)

    class Top(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate, self.conv = Gate(), nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            if x.sum() > 0:  # in the root: cannot be worked around
                return self.conv(x)
            return -self.conv(x)

    model = nn.Sequential(Gate(), nn.Conv2d(3, 4, 3, padding=1)).eval()
    relaxed = xdfx.relax(model, X)
    assert any(r.name == "0" and "untraceable" in r.detail for r in relaxed.xdfx_report)
    assert_quiet(capfd)
    with pytest.raises(XdfxTraceError) as info:
        xdfx.relax(Top(), X)
    assert_clear(info.value, "Top", "x.sum() > 0", "concrete_args")
    assert_quiet(capfd)


# ---------------------------------------------------------------------------------- training
def test_search_refuses_empty_loaders(capfd) -> None:
    relaxed = xdfx.relax(net(), X)
    y = torch.randn(2, 4, 16, 16)
    with pytest.raises(XdfxInputError) as info:
        xdfx.search(relaxed, [], F.mse_loss, 1, progress=False)
    assert_clear(info.value, "train_loader", "no batch")
    with pytest.raises(XdfxInputError) as info:
        xdfx.search(relaxed, [(X, y)], F.mse_loss, 1, val_loader=[], progress=False)
    assert_clear(info.value, "val_loader", "no batch")
    assert_quiet(capfd)


def test_finetune_refuses_an_empty_loader_and_stops_on_a_nan_loss(hardened) -> None:
    model = copy.deepcopy(hardened)
    before = snapshot(model)
    for loader in ([], iter([])):
        with pytest.raises(XdfxInputError) as info:
            xdfx.finetune(model, loader, F.mse_loss, epochs=1, progress=False)
        assert_clear(info.value, "train_loader")
    assert_unchanged(model, before)
    with pytest.raises(XdfxError) as info:
        xdfx.finetune(model, [(X, torch.full((2, 4, 16, 16), math.nan))], F.mse_loss, epochs=1, progress=False)
    assert_clear(info.value, "nan", "epoch 1, step 1", "learning rate")


# ---------------------------------------------------------------------------------- arguments
def test_bad_arguments_are_input_errors_that_say_what_is_expected(relaxed, hardened) -> None:
    model = net()
    before, before_relaxed = snapshot(model), snapshot(relaxed)
    y = torch.randn(2, 4, 16, 16)
    cases = [
        (lambda: xdfx.relax(model, X, arch="bogus"), ["arch", "'bogus'", "'fixed'"]),
        (lambda: xdfx.relax(model, X, max_kernel_size=0), ["max_kernel_size", ">= 1"]),
        (lambda: xdfx.optimizers(relaxed, arch_lr=-1.0), ["arch_lr", "-1.0"]),
        (lambda: xdfx.search(relaxed, [(X, y)], F.mse_loss, 1.5, progress=False), ["epochs", "1.5"]),
        (lambda: xdfx.finetune(copy.deepcopy(hardened), [(X, y)], F.mse_loss, epochs=1, lr=math.nan), ["lr", "nan"]),
        (lambda: xdfx.harden(relaxed, example_inputs=[1, 2]), ["example_inputs", "TypeError", "tuple"]),
    ]
    for call, words in cases:
        with pytest.raises(XdfxInputError) as info:
            call()
        assert_clear(info.value, *words)
    assert_unchanged(model, before)
    assert_unchanged(relaxed, before_relaxed)
