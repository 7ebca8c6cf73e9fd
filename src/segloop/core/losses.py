"""Segmentation losses with ignored pixels and per-pixel weights.

Targets are ``int64`` tensors of shape ``(N, H, W)`` with class indices ``0..C-1`` and
``-1`` for pixels that are not labelled (see :data:`segloop.core.targets.IGNORE`). Ignored
pixels contribute nothing to the loss value nor to its gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -1
"""Target value of pixels excluded from the loss."""


def _check_shapes(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> None:
    """Raise ``ValueError`` on inconsistent shapes or target values below -1.

    Parameters
    ----------
    logits : Tensor
        Raw network outputs of shape ``(N, C, H, W)``.
    target : Tensor
        Integer target of shape ``(N, H, W)``.
    weight : Tensor or None, optional
        Per-pixel weights of shape ``(N, H, W)``.
    """
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (N, C, ...), got {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape "
            f"{tuple(logits.shape)} (expected {expected})"
        )
    if weight is not None and tuple(weight.shape) != expected:
        raise ValueError(f"weight shape {tuple(weight.shape)} does not match target {expected}")
    if target.numel() and bool((target < IGNORE_INDEX).any()):
        raise ValueError(f"target values must be >= {IGNORE_INDEX}")


def _zero_like_loss(logits: Tensor) -> Tensor:
    """Return a scalar 0 that is connected to the graph of ``logits``."""
    return logits.sum() * 0.0


def weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Pixel-weighted cross-entropy averaged over labelled pixels.

    ``loss = sum(w * ce over labelled pixels) / sum(w over labelled pixels)``, which is the
    plain mean cross-entropy when ``weight`` is None. Weighting a pixel by 2 is the same as
    counting it twice.

    Parameters
    ----------
    logits : Tensor
        Raw network outputs of shape ``(N, C, H, W)``.
    target : Tensor
        ``int64`` target of shape ``(N, H, W)``; ``-1`` marks ignored pixels.
    weight : Tensor or None, optional
        Non-negative per-pixel weights of shape ``(N, H, W)``.

    Returns
    -------
    Tensor
        Scalar loss; 0 (still connected to ``logits``, so ``backward`` works) when no pixel
        is labelled or all labelled pixels have weight 0.

    Raises
    ------
    ValueError
        On inconsistent shapes.
    """
    _check_shapes(logits, target, weight)
    valid = target != IGNORE_INDEX
    ce = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
    pixel_weight = valid.to(ce.dtype)
    if weight is not None:
        pixel_weight = pixel_weight * weight.to(ce.dtype)
    denominator = pixel_weight.sum()
    if not bool(denominator > 0):
        return _zero_like_loss(logits)
    return (ce * pixel_weight).sum() / denominator


def soft_dice_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Soft Dice loss over the classes present in the labelled pixels.

    For each class ``c`` present in the target, ``dice_c = 2 sum(p_c g_c) / (sum(p_c) +
    sum(g_c))`` with ``p_c`` the softmax probability and ``g_c`` the one-hot target, sums
    running over the labelled pixels of the whole batch. The loss is ``1 - mean_c dice_c``.

    Parameters
    ----------
    logits : Tensor
        Raw network outputs of shape ``(N, C, H, W)``.
    target : Tensor
        ``int64`` target of shape ``(N, H, W)``.
    ignore_index : int, optional
        Target value of ignored pixels, by default -1.

    Returns
    -------
    Tensor
        Scalar loss in ``[0, 1]``; 0 (connected to ``logits``) when no pixel is labelled.

    Raises
    ------
    ValueError
        On inconsistent shapes.
    """
    _check_shapes(logits, target)
    num_classes = logits.shape[1]
    valid = target != ignore_index
    if not bool(valid.any()):
        return _zero_like_loss(logits)
    probs = torch.softmax(logits, dim=1)
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    one_hot = F.one_hot(safe_target, num_classes).movedim(-1, 1).to(probs.dtype)
    mask = valid.unsqueeze(1)
    probs = probs * mask.to(probs.dtype)
    one_hot = one_hot * mask.to(probs.dtype)
    reduce_dims = [0, *range(2, logits.ndim)]
    intersection = (probs * one_hot).sum(dim=reduce_dims)
    denominator = probs.sum(dim=reduce_dims) + one_hot.sum(dim=reduce_dims)
    present = one_hot.sum(dim=reduce_dims) > 0
    dice = 2.0 * intersection[present] / denominator[present].clamp_min(1e-12)
    return 1.0 - dice.mean()


def segmentation_loss(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, dice_weight: float = 0.0
) -> Tensor:
    """Weighted cross-entropy plus an optional soft Dice term.

    Parameters
    ----------
    logits : Tensor
        Raw network outputs of shape ``(N, C, H, W)``.
    target : Tensor
        ``int64`` target of shape ``(N, H, W)``; ``-1`` marks ignored pixels.
    weight : Tensor or None, optional
        Per-pixel weights for the cross-entropy term (the Dice term is unweighted).
    dice_weight : float, optional
        Factor of the Dice term, by default 0 (cross-entropy only).

    Returns
    -------
    Tensor
        Scalar ``weighted_cross_entropy + dice_weight * soft_dice_loss``.
    """
    loss = weighted_cross_entropy(logits, target, weight)
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(logits, target)
    return loss


def distance_loss(
    logit: Tensor, distance: Tensor, target: Tensor, weight: Tensor | None = None
) -> Tensor:
    """Binary cross-entropy of the distance channel against a ``[0, 1]`` distance map.

    Parameters
    ----------
    logit : Tensor
        Distance logits ``(N, H, W)`` (the channel after the classes).
    distance : Tensor
        Target normalised distances ``(N, H, W)`` in ``[0, 1]`` (0 on background).
    target : Tensor
        The class target ``(N, H, W)``; pixels where it is ``-1`` are ignored.
    weight : Tensor, optional
        Per-pixel weights ``(N, H, W)`` (e.g. the U-Net weight map, high in the gaps
        between touching objects); None weighs every labelled pixel equally.

    Returns
    -------
    Tensor
        Scalar (weighted) mean over the labelled pixels (0 if there are none).
    """
    labelled = target >= 0
    if not bool(labelled.any()):
        return logit.sum() * 0.0
    per_pixel = F.binary_cross_entropy_with_logits(
        logit[labelled], distance[labelled], reduction="none"
    )
    if weight is None:
        return per_pixel.mean()
    pixel_weight = weight[labelled]
    return (per_pixel * pixel_weight).sum() / pixel_weight.sum().clamp_min(1e-6)
