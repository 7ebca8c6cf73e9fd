"""Frames nobody corrected, used in training: the network's own confident predictions on
a plain view of a crop become the targets of an intensity-augmented view of the same crop
(FixMatch-style consistency, Sohn et al. 2020, for segmentation).

Two corrected frames show the network one part of a new modality; the other frames of
the same stack or folder show the rest, without labels. Each training step adds
``TrainConfig.unlabelled_batch`` crops of them to the batch: the network (in eval mode,
no gradients) predicts a plain crop, its pixels whose class probability is at least
``TrainConfig.pseudo_threshold`` become targets, and the network learns them on the same
crop after blur, gamma/gain/offset and noise, in the same forward pass as the corrected
crops (so batch-norm statistics also see the new frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .augment import AugmentConfig, augment_sample, random_crop
from .losses import distance_loss, segmentation_loss
from .modelio import ModelBundle
from .samples import prepared_frame
from .scale import rescale_image


def prepare_unlabelled(
    images: Sequence[np.ndarray], bundle: ModelBundle, factor: float
) -> list[np.ndarray]:
    """Normalise each 2-D frame as the model does and rescale it by ``factor`` (the
    corrections' training scale); returns ``(1, H, W)`` float32 arrays.

    Raises
    ------
    ValueError
        For a frame that is not 2-D after preprocessing (RGB is converted first).
    """
    out = []
    for index, raw in enumerate(images):
        image = prepared_frame(raw, bundle, f"unlabelled frame {index}")
        if factor != 1.0:
            image = rescale_image(image, factor)
        out.append(image[None].astype(np.float32))
    return out


#: The strong view's changes: photometric only, so pixels stay where they are (a
#: defocus blur and shot noise half of the time each, gamma/gain/offset, Gaussian noise).
STRONG_VIEW = AugmentConfig(
    flips=False, rot90=False, elastic=False, blur_probability=0.5, poisson_probability=0.5
)


def strong_view(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ``(C, H, W)`` crop after :data:`STRONG_VIEW` (``augment_sample``)."""
    no_target = np.zeros(crop.shape[1:], np.int64)
    return augment_sample(np.asarray(crop, np.float32), no_target, None, rng, STRONG_VIEW)[0]


def unlabelled_crops(
    frames: Sequence[np.ndarray], count: int, side: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` random ``side`` x ``side`` crops of the frames: (plain, strong) tensors
    of shape ``(count, 1, side, side)`` (each pair shares a random flip/quarter turn),
    and a ``(count, side, side)`` bool tensor, False on the mirrored padding of frames
    smaller than the crop."""
    plain, strong, inside = [], [], []
    for _ in range(count):
        frame = frames[int(rng.integers(len(frames)))]
        real = np.ones(frame.shape[-2:], np.uint8)  # padded with 0 by random_crop
        crop, mask = random_crop([frame, real], (side, side), rng)
        turns, flip = int(rng.integers(4)), rng.random() < 0.5
        crop, mask = np.rot90(crop, turns, axes=(1, 2)), np.rot90(mask, turns)
        if flip:
            crop, mask = crop[:, :, ::-1], mask[:, ::-1]
        crop = np.ascontiguousarray(crop, dtype=np.float32)
        plain.append(crop)
        strong.append(strong_view(crop, rng))
        inside.append(np.ascontiguousarray(mask, dtype=bool))
    return (
        torch.from_numpy(np.stack(plain)),
        torch.from_numpy(np.stack(strong)),
        torch.from_numpy(np.stack(inside)),
    )


@torch.no_grad()
def pseudo_targets(
    network: torch.nn.Module,
    plain: torch.Tensor,
    n_classes: int,
    threshold: float,
    settings,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class targets (``-1`` where the top probability is below ``threshold``) and the
    predicted distance (None without a distance head) of the plain crops, predicted in
    eval mode (batch-norm statistics untouched); each module is then put back in the mode
    it had (frozen batch-norm layers stay frozen)."""
    modes = [(module, module.training) for module in network.modules()]
    network.eval()
    try:
        with settings.autocast():
            logits = network(settings.to_device(plain)).float()
    finally:
        for module, training in modes:
            module.training = training
    probability = torch.softmax(logits[:, :n_classes], dim=1)
    confidence, target = probability.max(dim=1)
    target[confidence < threshold] = -1
    distance = torch.sigmoid(logits[:, n_classes]) if logits.shape[1] > n_classes else None
    return target, distance


@dataclass
class PseudoBatch:
    """One step's unlabelled crops: the strong views to train on, their targets (-1:
    not confident, or padding) and the plain views' predicted distance (or None)."""

    strong: torch.Tensor
    target: torch.Tensor
    distance: torch.Tensor | None


def pseudo_batch(
    network: torch.nn.Module,
    frames: Sequence[np.ndarray],
    count: int,
    geometry,
    n_classes: int,
    threshold: float,
    settings,
    rng: np.random.Generator,
) -> PseudoBatch:
    """Crops of ``frames`` (:func:`unlabelled_crops`) and their pseudo-targets
    (:func:`pseudo_targets`) at the network's output size (``geometry``: a
    :class:`~segloop.core.models.geometry.TileGeometry`)."""
    plain, strong, inside = unlabelled_crops(frames, count, geometry.input_size, rng)
    target, distance = pseudo_targets(network, plain, n_classes, threshold, settings)
    inner = slice(geometry.margin, geometry.margin + geometry.output_size)
    target[~inside[:, inner, inner].to(target.device)] = -1
    return PseudoBatch(strong, target, distance)


def consistency_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    distance: torch.Tensor | None,
    n_classes: int,
    distance_weight: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy on the confident pixels, plus (times ``distance_weight``) the
    distance channel against the plain view's predicted distance there; 0 when no pixel
    is confident."""
    if not bool((target >= 0).any()):
        return logits.sum() * 0.0
    loss = segmentation_loss(logits[:, :n_classes], target)
    if distance is not None and logits.shape[1] > n_classes:
        loss = loss + distance_weight * distance_loss(logits[:, n_classes], distance, target)
    return loss
