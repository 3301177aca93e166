"""The xdfx command line, run in-process."""

from __future__ import annotations

from xdfx.cli import main


def test_relax_then_harden_a_saved_checkpoint(tmp_path, capsys) -> None:
    ckpt = tmp_path / "tcn.pt"
    assert main(["relax", "examples.models:TCN", "--shape", "2,1,48", "--save", str(ckpt)]) == 0
    assert ckpt.exists()
    assert main(["harden", "examples.models:TCN", "--shape", "2,1,48", "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "convs.3" in out and "end-to-end relative error" in out


def test_bad_model_spec_is_a_clear_error(capsys) -> None:
    assert main(["relax", "no_such_module:Net", "--shape", "1,2,8"]) == 2
    assert "cannot load 'no_such_module:Net'" in capsys.readouterr().err
    assert main(["relax", "examples.models", "--shape", "1,2,8"]) == 2
    assert "package.module:callable" in capsys.readouterr().err
