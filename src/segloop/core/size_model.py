"""A learned object-size estimate, as cellpose's size model: the mean activations of the
U-Net's deepest encoder levels over a few crops of the frame (its "style"), mapped to
the log of the objects' median diameter by a ridge regression.

The network's first pass finds objects several times larger than it was trained on only
as pieces of their texture, which measure like objects it knows; the encoder's activations
over the whole crop still say how coarse the texture is. The regression is fitted for
one set of weights (``scripts/fit_size_model.py``) and stored in the model's metadata
(``metadata["size_model"]``); training or fine-tuning drops it, since new weights make
other features.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Side of the square crops the features are averaged over (a multiple of 16).
CROP = 256
#: Crops per side at most: the central 3x3 crops of a large frame.
MAX_CROPS_PER_SIDE = 3
#: Encoder levels counted from the deepest: the last three (64, 128 and 256 channels
#: for the shipped 5-level U-Nets).
LEVELS = 3
#: Added before the log of a mean activation.
EPSILON = 1e-3


def _crops(frame: np.ndarray, multiple: int) -> list[np.ndarray]:
    """Up to 3x3 central CROP x CROP crops of ``frame``, or the whole frame (mirrored up
    to a multiple of ``multiple``) when it is smaller than one crop."""
    height, width = frame.shape
    if height < CROP or width < CROP:
        pad = ((0, (-height) % multiple), (0, (-width) % multiple))
        mode = "reflect" if min(height, width) > 1 else "edge"
        return [np.pad(frame, pad, mode=mode)]
    rows = min(MAX_CROPS_PER_SIDE, height // CROP)
    cols = min(MAX_CROPS_PER_SIDE, width // CROP)
    y0, x0 = (height - rows * CROP) // 2, (width - cols * CROP) // 2
    return [
        frame[y0 + i * CROP : y0 + (i + 1) * CROP, x0 + j * CROP : x0 + (j + 1) * CROP]
        for i in range(rows)
        for j in range(cols)
    ]


def style_features(network: Any, frame: np.ndarray) -> np.ndarray:
    """Log mean activation of every channel of the network's last :data:`LEVELS`
    encoder levels, averaged over the central crops of a normalised 2-D ``frame``.

    Parameters
    ----------
    network : segloop.core.models.unet.UNet
        A U-Net (``down`` blocks and ``pool``); its device is used, in float32.
    frame : np.ndarray
        Normalised grey frame (H, W), at the scale the network would see it.

    Returns
    -------
    np.ndarray
        float64 vector (channels of the last LEVELS levels together).
    """
    import torch

    if not hasattr(network, "down"):
        raise ValueError("the size model needs a U-Net encoder (network.down)")
    parameter = next(network.parameters())
    multiple = 2 ** (len(network.down) - 1)
    first_kept = len(network.down) - LEVELS
    pooled_crops = []
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            for crop in _crops(np.asarray(frame, dtype=np.float32), multiple):
                x = torch.from_numpy(np.ascontiguousarray(crop))[None, None]
                x = x.to(device=parameter.device, dtype=parameter.dtype)
                pooled = []
                for level, block in enumerate(network.down):
                    x = block(x)
                    if level >= first_kept:
                        pooled.append(x.float().mean(dim=(2, 3))[0])
                    if level < len(network.down) - 1:
                        x = network.pool(x)
                pooled_crops.append(torch.cat(pooled).cpu().numpy().astype(np.float64))
    finally:
        network.train(was_training)
    return np.log(np.maximum(np.mean(pooled_crops, axis=0), 0.0) + EPSILON)


def fit_size_model(
    features: np.ndarray, diameters: np.ndarray, ridge: float = 10.0
) -> dict[str, Any]:
    """Ridge regression of ``log(diameter)`` on standardised features.

    Parameters
    ----------
    features : np.ndarray
        (N, F) rows of :func:`style_features`.
    diameters : np.ndarray
        (N,) median object diameters (px) of the same frames, as the network saw them.
    ridge : float
        L2 penalty on the standardised weights.

    Returns
    -------
    dict
        ``{"weights": [F floats], "bias": float, "levels": LEVELS, "crop": CROP}``: the
        standardisation is folded into the weights, so a prediction is
        ``exp(features @ weights + bias)``.
    """
    features = np.asarray(features, dtype=np.float64)
    target = np.log(np.asarray(diameters, dtype=np.float64))
    keep = np.isfinite(target) & np.all(np.isfinite(features), axis=1)
    if keep.sum() < 2:
        raise ValueError("the size model needs at least two frames with objects")
    features, target = features[keep], target[keep]
    mean, spread = features.mean(axis=0), features.std(axis=0) + 1e-6
    standard = (features - mean) / spread
    offset = target.mean()
    gram = standard.T @ standard + ridge * np.eye(standard.shape[1])
    weights = np.linalg.solve(gram, standard.T @ (target - offset)) / spread
    bias = offset - float(mean @ weights)
    return {
        "weights": [round(float(w), 7) for w in weights],
        "bias": float(bias),
        "levels": LEVELS,
        "crop": CROP,
    }


def predict_diameter(size_model: dict[str, Any], features: np.ndarray) -> float:
    """Median object diameter (px of the frame the features came from)."""
    weights = np.asarray(size_model["weights"], dtype=np.float64)
    if weights.shape != np.shape(features):
        raise ValueError(f"size model has {weights.size} weights for {np.size(features)} features")
    return float(math.exp(float(np.dot(features, weights)) + float(size_model["bias"])))


def estimate_size(bundle: Any, frame: np.ndarray) -> float | None:
    """The stored size model's diameter estimate (px of ``frame``), or None when the
    model has none or it does not fit this network."""
    size_model = bundle.metadata.get("size_model")
    if not isinstance(size_model, dict) or not hasattr(bundle.network, "down"):
        return None
    if (size_model.get("levels", LEVELS), size_model.get("crop", CROP)) != (LEVELS, CROP):
        return None
    try:
        return predict_diameter(size_model, style_features(bundle.network, frame))
    except ValueError:
        return None
