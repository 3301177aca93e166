"""The Bach chorales task of xdfx.tasks: piano rolls from music21's corpus, splits, frame NLL, batching."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xdfx.tasks import chorales


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def _tmp_cache(cache_dir, monkeypatch) -> Path:
    monkeypatch.setenv("XDFX_CACHE", str(cache_dir))
    return cache_dir


@pytest.fixture(scope="module")
def twenty(cache_dir) -> dict:
    pytest.importorskip("music21")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDFX_CACHE", str(cache_dir))
        return chorales.load(max_chorales=20)


def test_importing_tasks_does_not_import_music21() -> None:
    code = "import sys, xdfx.tasks; from xdfx.tasks import chorales; assert 'music21' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_piano_rolls_are_four_voice_binary_frames(twenty: dict) -> None:
    rolls = [r for split in chorales.SPLITS for r in twenty[split]]
    assert len(rolls) == 20
    for roll in rolls:
        assert roll.dtype == torch.float32 and roll.ndim == 2 and roll.shape[1] == 88 and len(roll) >= 16
        assert torch.all((roll == 0) | (roll == 1))
    active = torch.cat(rolls).sum(dim=1)
    # four voices: observed 3-4 notes in 97% of quarter frames (3 when two voices share a key),
    # 0 at rests (2%), at most 4; in all 407 chorales 20303 / 2016 / 19 / 16 / 596 frames have 4 / 3 / 2 / 1 / 0
    assert ((active >= 3) & (active <= 5)).float().mean() > 0.9
    assert active.max() <= 5
    keys = torch.cat(rolls).sum(dim=0).nonzero().flatten() + chorales.LOWEST_MIDI
    assert 28 <= keys.min() and keys.max() <= 88  # choir range (corpus: MIDI 36..81)


def test_splits_are_disjoint_deterministic_and_cached(twenty: dict, _tmp_cache: Path, monkeypatch) -> None:
    names = twenty["names"]
    assert [len(twenty[s]) for s in chorales.SPLITS] == [len(names[s]) for s in chorales.SPLITS]
    assert all(len(names[s]) > 0 for s in chorales.SPLITS)
    assert sum(len(v) for v in names.values()) == len(set().union(*names.values())) == 20  # disjoint
    assert len(list(_tmp_cache.glob("chorales-*.npz"))) == 1

    def no_parsing(**_):
        raise AssertionError("the cache should have been hit")

    with monkeypatch.context() as mp:
        mp.setattr(chorales, "_make", no_parsing)
        again = chorales.load(max_chorales=20)
    assert again["names"] == names
    assert all(torch.equal(a, b) for s in chorales.SPLITS for a, b in zip(again[s], twenty[s]))
    # recomputed without the cache, fewer chorales: each is the same roll in the same split
    few = chorales.load(max_chorales=6, cache=False)
    assert sum(len(few[s]) for s in chorales.SPLITS) == 6
    for s in chorales.SPLITS:
        k = len(few[s])
        assert few["names"][s] == names[s][:k]
        assert all(torch.equal(a, b) for a, b in zip(few[s], twenty[s][:k]))


def test_step_is_validated() -> None:
    with pytest.raises(ValueError, match="step"):
        chorales.load(step="whole")
    with pytest.raises(ValueError, match="positive"):
        chorales.load(step=0.0)


def test_frame_nll() -> None:
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(3, 88, 7, generator=gen) < 0.05).float()
    perfect = 40.0 * (2 * target - 1)
    assert chorales.frame_nll(perfect, target).item() < 88 * math.exp(-40) * 2
    assert chorales.frame_nll(torch.zeros_like(target), target).item() == pytest.approx(88 * math.log(2), rel=1e-6)
    # (frames, 88) layout: keys at dim 1 as well
    assert chorales.frame_nll(torch.zeros(5, 88), torch.ones(5, 88)).item() == pytest.approx(88 * math.log(2), rel=1e-6)
    # against the definition, with a mask: only the counted frames, each summed over keys
    logits = torch.randn(3, 88, 7, generator=gen)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    p = torch.sigmoid(logits)
    per_frame = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).sum(dim=1)
    expected = per_frame[mask].mean()
    assert chorales.frame_nll(logits, target, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    garbage = logits.clone()
    garbage[1, :, 4:] = 1e3  # padded frames do not count
    assert chorales.frame_nll(garbage, target, mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_pad_batch_and_batches() -> None:
    gen = torch.Generator().manual_seed(1)
    rolls = [(torch.rand(n, 88, generator=gen) < 0.05).float() for n in (5, 9, 2, 7)]
    inputs, targets, mask = chorales.pad_batch(rolls)
    assert inputs.shape == targets.shape == (4, 88, 8) and mask.shape == (4, 8) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [4, 8, 1, 6]
    for b, roll in enumerate(rolls):
        steps = len(roll) - 1
        assert torch.equal(inputs[b, :, :steps], roll[:-1].T) and torch.equal(targets[b, :, :steps], roll[1:].T)
        assert not inputs[b, :, steps:].any() and not targets[b, :, steps:].any()
    seen = []
    for x, y, m in chorales.batches(rolls, 3, seed=4):
        assert x.shape[0] == y.shape[0] == m.shape[0] <= 3
        seen.extend(m.sum(dim=1).tolist())
    assert sorted(seen) == [1, 4, 6, 8]  # every sequence once
    ordered = [m.sum(dim=1).tolist() for _, _, m in chorales.batches(rolls, 2, shuffle=False)]
    assert ordered == [[4, 8], [1, 6]]
