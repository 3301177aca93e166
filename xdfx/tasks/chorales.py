"""Next-frame prediction on Bach chorales, after the JSB Chorales benchmark (Boulanger-Lewandowski et al. 2012).

Each chorale becomes a piano roll: one row per time step (a quarter note by default), one column
per piano key (MIDI 21..108, 88 keys), 1 where a key sounds at the start of the step. A model reads
frames ``0 .. T-2`` and predicts frames ``1 .. T-1`` (multi-label, one sigmoid per key); the score is
the frame-level negative log-likelihood, the binary cross-entropy summed over the 88 keys and
averaged over frames (:func:`frame_nll`).

The chorales come from the corpus inside the ``music21`` package (no download): its Bach files,
less the Roman-numeral analyses (``.rntxt``), are 413 scores. The four vocal parts (Soprano, Alto,
Tenor, Bass; instrumental parts are left out) are read from each; the three scores without exactly
four such voices (the keyboard piece BWV 846 and the five-voice BWV 227.3 and 27.6) are skipped, and
so is a piano roll equal to one met earlier in the permutation (three pairs at the quarter step,
e.g. BWV 398 and 197.7-a), which leaves 407 chorales at the quarter step. The JSB data set is the
382 chorales of the MIDI collection used by Boulanger-Lewandowski et al., split 229 / 76 / 77; here
a seeded permutation of the sorted file list deals positions ``0, 1, 2 (mod 5)`` to train, ``3`` to
valid and ``4`` to test (60 / 20 / 20 like JSB: 245 / 80 / 82 for the default seed), so a chorale's
split does not depend on ``max_chorales``. Keys are not transposed (JSB keeps the original keys too).
About 2.6% of the quarter frames are silent: single rests at phrase ends, and the instrumental
interludes of a few cantata and oratorio chorales (e.g. BWV 248.64-6) where all four voices rest.

``music21`` is an optional dependency (``pip install xdfx[music]``), imported only by :func:`load`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cache import cached

__all__ = ["N_KEYS", "LOWEST_MIDI", "SPLITS", "STEPS", "batches", "frame_nll", "load", "pad_batch", "piano_roll"]

_VERSION = 1  # bump when the generated numbers change, to invalidate cached files
N_KEYS = 88
LOWEST_MIDI = 21  # A0, the lowest piano key
SPLITS = ("train", "valid", "test")
_SPLIT_OF_POSITION = (0, 0, 0, 1, 2)  # position mod 5 -> split: 60 / 20 / 20 as JSB's 229 / 76 / 77
STEPS = {"quarter": 1.0, "eighth": 0.5, "sixteenth": 0.25}  # in quarter lengths
_VOICES = ("soprano", "alto", "tenor", "bass")


def _step_length(step: str | float) -> float:
    """The time step in quarter lengths for a name in :data:`STEPS` or a positive number."""
    if isinstance(step, str):
        if step not in STEPS:
            raise ValueError(f"step must be one of {sorted(STEPS)} or a positive number of quarter notes, got {step!r}")
        return STEPS[step]
    if not float(step) > 0:
        raise ValueError(f"step must be positive, got {step}")
    return float(step)


def _voice_parts(score) -> list:
    """The four vocal parts of a score (named Soprano/Alto/Tenor/Bass, or the only four parts), else ``[]``."""
    parts = list(score.parts)
    named = [p for p in parts if (p.partName or "").split()[:1] and p.partName.split()[0].lower() in _VOICES]
    if len(named) == 4:
        return named
    if len(parts) == 4 and not named:  # the Humdrum (.krn) files carry no part names
        return parts
    return []


def piano_roll(parts: Sequence, step: float) -> np.ndarray:
    """The ``(frames, 88)`` uint8 piano roll of music21 parts sampled every ``step`` quarter lengths.

    Frame ``j`` holds the keys sounding at time ``j * step``: a note from offset ``o`` with duration
    ``d`` fills the frames with ``o <= j * step < o + d``, so notes shorter than a step that start
    off the grid (passing eighths at the quarter step) are dropped, as when sampling a MIDI file.
    Tied notes simply continue; grace notes (duration 0) are ignored. The roll ends with the last
    note.
    """
    spans = []
    for part in parts:
        for note in part.flatten().notes:
            start, length = float(note.offset), float(note.quarterLength)
            if length <= 0:
                continue
            first = math.ceil(start / step - 1e-9)
            stop = math.ceil((start + length) / step - 1e-9)
            spans.extend((first, stop, p.midi - LOWEST_MIDI) for p in note.pitches)
    frames = max((stop for _, stop, _ in spans), default=0)
    roll = np.zeros((frames, N_KEYS), dtype=np.uint8)
    for first, stop, key in spans:
        if not 0 <= key < N_KEYS:
            raise ValueError(f"MIDI pitch {key + LOWEST_MIDI} is outside the piano range 21..108")
        roll[first:stop, key] = 1
    return roll


def _chorale_files() -> list[Path]:
    """The Bach score files of the music21 corpus, sorted by name, without the Roman-numeral analyses."""
    from music21 import corpus

    return sorted((Path(p) for p in corpus.getComposer("bach") if Path(p).suffix != ".rntxt"), key=lambda p: p.name)


def _make(step: float, seed: int, max_chorales: int | None) -> dict[str, np.ndarray]:
    """Parse chorales in permutation order; concatenated rolls with their lengths, splits and file names."""
    from music21 import converter

    files = _chorale_files()
    order = np.random.default_rng(seed).permutation(len(files))
    rolls, lengths, splits, names, seen = [], [], [], [], set()
    for position, index in enumerate(order):
        if max_chorales is not None and len(rolls) >= max_chorales:
            break
        parts = _voice_parts(converter.parse(files[index]))
        if not parts:
            continue
        roll = piano_roll(parts, step)
        fingerprint = hashlib.sha256(roll.tobytes()).hexdigest()
        if fingerprint in seen:  # the corpus has a few copies of one setting; a copy in another split would leak
            continue
        seen.add(fingerprint)
        rolls.append(roll)
        lengths.append(len(roll))
        splits.append(_SPLIT_OF_POSITION[position % len(_SPLIT_OF_POSITION)])
        names.append(files[index].name)
    return {
        "rolls": np.concatenate(rolls) if rolls else np.zeros((0, N_KEYS), dtype=np.uint8),
        "lengths": np.asarray(lengths, dtype=np.int64),
        "splits": np.asarray(splits, dtype=np.int64),
        "names": np.asarray(names, dtype=str),
    }


def load(*, step: str | float = "quarter", seed: int = 0, max_chorales: int | None = None, cache: bool = True) -> dict:
    """Piano rolls of the Bach chorales in ``music21``'s corpus, split into train / valid / test.

    Parsing all 407 chorales takes one to three minutes; the rolls are cached on disk
    (:func:`xdfx.tasks.cache.cached`), keyed by the parameters and the ``music21`` version.

    Parameters
    ----------
    step : str or float
        Time step: ``"quarter"`` (JSB's, default), ``"eighth"``, ``"sixteenth"``, or a number of
        quarter notes.
    seed : int
        Seed of the permutation of the file list that decides the splits (see the module notes).
    max_chorales : int, optional
        Keep only the first ``max_chorales`` chorales of the permutation (for quick tests); each
        keeps the split it has in the full set.
    cache : bool
        Read and write the on-disk cache.

    Returns
    -------
    dict
        ``"train"``, ``"valid"``, ``"test"``: lists of float32 tensors of shape ``(frames, 88)``, with
        values in ``{0, 1}``; ``"names"``: a dict from split to the matching list of corpus file names.
    """
    length = _step_length(step)
    if max_chorales is not None and max_chorales < 0:
        raise ValueError(f"max_chorales must be >= 0, got {max_chorales}")
    import music21  # optional dependency, imported only here: `import xdfx.tasks` stays light

    args = dict(step=length, seed=int(seed), max_chorales=None if max_chorales is None else int(max_chorales))
    make = lambda: _make(**args)  # noqa: E731
    params = {**args, "music21": str(music21.__version__), "version": _VERSION}
    data = cached("chorales", params, make) if cache else make()
    pieces = np.split(data["rolls"], np.cumsum(data["lengths"])[:-1]) if len(data["lengths"]) else []
    out: dict = {name: [] for name in SPLITS}
    out["names"] = {name: [] for name in SPLITS}
    for roll, split, file_name in zip(pieces, data["splits"], data["names"]):
        out[SPLITS[split]].append(torch.from_numpy(roll.astype(np.float32)))
        out["names"][SPLITS[split]].append(str(file_name))
    return out


# --------------------------------------------------------------------------------------------
# Training helpers
# --------------------------------------------------------------------------------------------


def frame_nll(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *, dim: int = 1) -> torch.Tensor:
    """Frame-level negative log-likelihood: binary cross-entropy summed over keys, averaged over frames.

    Parameters
    ----------
    logits, target : torch.Tensor
        Same shape; keys along ``dim``: ``(frames, 88)`` or ``(batch, 88, frames)`` (both have the
        keys at ``dim=1``). ``target`` holds 0 / 1.
    mask : torch.Tensor, optional
        Which frames count, the shape of ``target`` without ``dim`` (as returned by :func:`pad_batch`);
        default all.

    Returns
    -------
    torch.Tensor
        Scalar: the mean over the counted frames of ``-sum_keys log p(target | logits)``, in nats.
        All-zero logits give ``88 log 2 ~ 61.0``.
    """
    if logits.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(logits.shape)} vs {tuple(target.shape)}")
    per_frame = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none").sum(dim)
    if mask is None:
        return per_frame.mean()
    mask = mask.to(per_frame.dtype)
    return (per_frame * mask).sum() / mask.sum().clamp_min(1.0)


def pad_batch(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, targets and mask for a causal model from piano rolls ``(frames, 88)`` of different lengths.

    Sequence ``b`` gives ``inputs[b, :, t] = roll[t]`` and ``targets[b, :, t] = roll[t + 1]`` for
    ``t < frames - 1``; shorter sequences are zero-padded at the end, where ``mask`` is False.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor, torch.Tensor]
        ``inputs``, ``targets`` of shape ``(batch, 88, L)`` (channels first, for ``Conv1d``) and the
        bool ``mask`` of shape ``(batch, L)``, with ``L = max(frames) - 1``.
    """
    if not sequences:
        raise ValueError("need at least one sequence")
    length = max(len(s) for s in sequences) - 1
    if length < 1:
        raise ValueError("every batch needs a sequence with at least two frames")
    inputs = torch.zeros(len(sequences), N_KEYS, length)
    targets = torch.zeros(len(sequences), N_KEYS, length)
    mask = torch.zeros(len(sequences), length, dtype=torch.bool)
    for b, roll in enumerate(sequences):
        steps = len(roll) - 1
        if steps < 1:
            continue
        inputs[b, :, :steps] = roll[:-1].T
        targets[b, :, :steps] = roll[1:].T
        mask[b, :steps] = True
    return inputs, targets, mask


def batches(
    sequences: Sequence[torch.Tensor], batch_size: int, *, shuffle: bool = True, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield :func:`pad_batch` of consecutive groups of ``batch_size`` sequences (the last may be smaller).

    With ``shuffle`` the order is a permutation drawn from ``seed`` (pass the epoch number for a new
    order each epoch); without it the order of ``sequences`` is kept.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(len(sequences)) if shuffle else np.arange(len(sequences))
    for start in range(0, len(order), batch_size):
        yield pad_batch([sequences[i] for i in order[start : start + batch_size]])
