"""Permuted 8x8 digits: scikit-learn's ``load_digits`` with one fixed random pixel permutation.

Permuting the pixels destroys the spatial structure that convolutions exploit, so the task
tells architectures with a built-in locality prior from ones that can learn any mixing.
The data ships inside scikit-learn (no download).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["load", "permute", "unpermute"]

_PIXELS = 64


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: ``(1797, 8, 8)`` float64 in ``[0, 16]`` and ``(1797,)`` int."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "xdfx.tasks.permuted_digits needs scikit-learn for its bundled digits data: pip install scikit-learn"
        ) from exc
    digits = load_digits()
    return np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target)


def permute(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Reorder the 64 pixels of ``(..., 8, 8)`` images: output pixel ``p`` is input pixel ``permutation[p]``."""
    flat = images.reshape(*images.shape[:-2], _PIXELS)
    return flat[..., permutation].reshape(images.shape)


def unpermute(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Invert :func:`permute`."""
    return permute(images, np.argsort(permutation))


def load(*, seed: int = 0, test_fraction: float = 0.2) -> dict[str, torch.Tensor]:
    """Load the permuted-digits task.

    The 1797 images are scaled from ``[0, 16]`` to ``[0, 1]``, shuffled and split by a generator
    seeded with ``seed`` (the last ``round(test_fraction * 1797)`` go to the test set), and every
    image's pixels are reordered by one random permutation drawn from an independent stream of
    the same seed.

    Parameters
    ----------
    seed : int
        Seed of the split and of the permutation.
    test_fraction : float
        Fraction of the images in the test set, in ``(0, 1)``.

    Returns
    -------
    dict[str, torch.Tensor]
        ``x_train``, ``x_test``: float32 ``(n, 1, 8, 8)``; ``y_train``, ``y_test``: int64 ``(n,)``
        in ``0..9``; ``permutation``: int64 ``(64,)`` as used by :func:`permute`;
        ``train_index``, ``test_index``: int64 rows of ``sklearn.datasets.load_digits()`` that
        each split holds, in order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _load_sklearn_digits()
    split_seq, perm_seq = np.random.SeedSequence(seed).spawn(2)
    order = np.random.default_rng(split_seq).permutation(len(images))
    n_test = int(round(test_fraction * len(images)))
    if not 0 < n_test < len(images):
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split")
    train_index, test_index = order[: len(images) - n_test], order[len(images) - n_test :]
    permutation = np.random.default_rng(perm_seq).permutation(_PIXELS)
    x = permute(images / 16.0, permutation).astype(np.float32)[:, None]

    def tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)

    return {
        "x_train": tensor(x[train_index], torch.float32),
        "y_train": tensor(labels[train_index], torch.int64),
        "x_test": tensor(x[test_index], torch.float32),
        "y_test": tensor(labels[test_index], torch.int64),
        "permutation": tensor(permutation, torch.int64),
        "train_index": tensor(train_index, torch.int64),
        "test_index": tensor(test_index, torch.int64),
    }
