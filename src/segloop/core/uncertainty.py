"""Per-pixel uncertainty of softmax probabilities: where to correct next.

Both measures take class probabilities of shape (C, H, W) for one image or (T, C, H, W)
for a stack (the class axis is the one before the two image axes) and return float32
maps of shape (H, W) or (T, H, W) in 0..1, where 0 means certain.
"""

from __future__ import annotations

import numpy as np

#: Probabilities below this are treated as 0 in the entropy (0 log 0 = 0).
_TINY = 1e-12


def _check(probs: np.ndarray) -> np.ndarray:
    """``probs`` as a float array with a class axis at -3 (at least 2 classes)."""
    probs = np.asarray(probs)
    if probs.ndim not in (3, 4):
        raise ValueError(f"probabilities must be (C, H, W) or (T, C, H, W), got {probs.shape}")
    if probs.shape[-3] < 2:
        raise ValueError(f"need at least 2 classes, got {probs.shape[-3]}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probabilities must be floating point, got {probs.dtype}")
    return probs


def max_probability_uncertainty(probs: np.ndarray) -> np.ndarray:
    """One minus the largest class probability, per pixel.

    Parameters
    ----------
    probs : np.ndarray
        Softmax probabilities, (C, H, W) or (T, C, H, W).

    Returns
    -------
    np.ndarray
        float32 (H, W) or (T, H, W): ``1 - max_c p_c``; 0 where one class is certain,
        at most ``1 - 1/C`` where all classes are equally likely.
    """
    probs = _check(probs)
    return np.clip(1.0 - probs.max(axis=-3), 0.0, 1.0).astype(np.float32)


def entropy_uncertainty(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of the class probabilities, normalised to 0..1 by ``log C``.

    Parameters
    ----------
    probs : np.ndarray
        Softmax probabilities, (C, H, W) or (T, C, H, W).

    Returns
    -------
    np.ndarray
        float32 (H, W) or (T, H, W): 0 where one class has probability 1, 1 where all
        ``C`` classes are equally likely.
    """
    probs = _check(probs)
    n_classes = probs.shape[-3]
    p = np.clip(probs.astype(np.float64, copy=False), 0.0, 1.0)
    logs = np.log(np.where(p > _TINY, p, 1.0))
    entropy = -(p * logs).sum(axis=-3) / np.log(n_classes)
    return np.clip(entropy, 0.0, 1.0).astype(np.float32)
