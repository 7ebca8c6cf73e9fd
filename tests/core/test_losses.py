"""Tests for segloop.core.losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segloop.core.losses import (
    distance_loss,
    segmentation_loss,
    soft_dice_loss,
    weighted_cross_entropy,
)


def _random_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 5, 6, generator=gen)
    target = torch.randint(0, 3, (2, 5, 6), generator=gen)
    return logits, target


def test_hand_computed_two_pixels() -> None:
    # Pixel 0: logits (0, 0), class 0 -> ce = ln 2. Pixel 1: logits (ln 3, 0), class 0 ->
    # p = 3/4, ce = ln(4/3). Weights 3 and 1 -> (3 ln 2 + ln(4/3)) / 4.
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])
    weight = torch.tensor([[[3.0, 1.0]]])
    loss = weighted_cross_entropy(logits, target, weight)
    assert loss.item() == pytest.approx((3 * math.log(2) + math.log(4 / 3)) / 4, abs=1e-6)


def test_equals_torch_cross_entropy_without_weight_or_ignore() -> None:
    logits, target = _random_batch()
    expected = F.cross_entropy(logits, target)
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(expected.item(), 1e-6)
    ones = torch.ones(target.shape)
    assert weighted_cross_entropy(logits, target, ones).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_ignored_pixels_contribute_nothing() -> None:
    logits, target = _random_batch(1)
    target[0, 1:3, 2:5] = -1
    target[1, 4, :] = -1
    ignored = target == -1
    base = weighted_cross_entropy(logits, target).item()
    # Same as torch's ignore_index mean.
    assert base == pytest.approx(F.cross_entropy(logits, target, ignore_index=-1).item(), 1e-6)
    channels_last = logits.movedim(1, -1).clone()  # (N, H, W, C)
    channels_last[ignored] += 100.0 * torch.randn(int(ignored.sum()), 3)
    changed = channels_last.movedim(-1, 1).contiguous().requires_grad_(True)
    loss = weighted_cross_entropy(changed, target)
    assert loss.item() == pytest.approx(base, rel=1e-6)
    loss.backward()
    grad_at_ignored = changed.grad.movedim(1, -1)[ignored]
    assert torch.count_nonzero(grad_at_ignored) == 0
    assert torch.count_nonzero(changed.grad.movedim(1, -1)[~ignored]) > 0


def test_weight_two_equals_duplicated_pixel() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 3, 1, 2, generator=gen)
    target = torch.tensor([[[2, 0]]])
    weighted = weighted_cross_entropy(logits, target, torch.tensor([[[2.0, 1.0]]]))
    duplicated_logits = torch.cat([logits[..., :1], logits], dim=-1)  # pixel 0 twice
    duplicated = weighted_cross_entropy(duplicated_logits, torch.tensor([[[2, 2, 0]]]))
    assert weighted.item() == pytest.approx(duplicated.item(), rel=1e-6)


def test_all_ignored_gives_zero_and_backward_works() -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), -1, dtype=torch.int64)
    for loss in (
        weighted_cross_entropy(logits, target),
        soft_dice_loss(logits, target),
        segmentation_loss(logits, target, dice_weight=1.0),
    ):
        assert loss.item() == 0.0
        loss.backward()
        assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0
    # Zero weights on every labelled pixel behave the same way.
    target = torch.zeros((1, 3, 3), dtype=torch.int64)
    assert weighted_cross_entropy(logits, target, torch.zeros(1, 3, 3)).item() == 0.0


def test_dice_perfect_and_wrong() -> None:
    target = torch.tensor([[[0, 1, 1], [2, 2, -1]]])
    one_hot = F.one_hot(target.clamp(min=0), 3).movedim(-1, 1).float()
    perfect = soft_dice_loss(30.0 * one_hot, target)
    assert 0.0 <= perfect.item() < 1e-6
    # Predicting class (t + 1) % 3 everywhere: no overlap at all -> loss 1.
    wrong = torch.roll(one_hot, shifts=1, dims=1)
    assert soft_dice_loss(30.0 * wrong, target).item() == pytest.approx(1.0, abs=1e-6)


def test_dice_hand_computed_and_ignore() -> None:
    # Uniform logits over 2 classes: p = 1/2 everywhere. Labelled pixels: 3 of class 0 and 1
    # of class 1. Class 0: 2 * 1.5 / (2 + 3) = 0.6; class 1: 2 * 0.5 / (2 + 1) = 1/3.
    logits = torch.zeros(1, 2, 1, 5)
    target = torch.tensor([[[0, 0, 0, 1, -1]]])
    expected = 1.0 - (0.6 + 1.0 / 3.0) / 2.0
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)
    # Only class 0 present -> mean over that class only: 1 - 2 * 1.5 / (1.5 + 3) = 1/3.
    target = torch.tensor([[[0, 0, 0, -1, -1]]])
    assert soft_dice_loss(logits, target).item() == pytest.approx(1.0 / 3.0, abs=1e-6)
    # Changing the ignored pixels' logits changes nothing.
    logits[..., 3:] = torch.tensor([[[5.0]], [[-5.0]]]).reshape(1, 2, 1, 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1.0 / 3.0, abs=1e-6)


def test_segmentation_loss_combines_terms() -> None:
    logits, target = _random_batch(3)
    target[0, 0, :] = -1
    weight = torch.rand(target.shape, generator=torch.Generator().manual_seed(4)) + 0.5
    ce = weighted_cross_entropy(logits, target, weight)
    dice = soft_dice_loss(logits, target)
    assert segmentation_loss(logits, target, weight).item() == pytest.approx(ce.item())
    combined = segmentation_loss(logits, target, weight, dice_weight=0.5)
    assert combined.item() == pytest.approx(ce.item() + 0.5 * dice.item(), rel=1e-6)


def test_shape_and_value_errors() -> None:
    logits = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="target shape"):
        weighted_cross_entropy(logits, torch.zeros(1, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="weight shape"):
        weighted_cross_entropy(logits, torch.zeros(1, 3, 3, dtype=torch.int64), torch.ones(3, 3))
    with pytest.raises(ValueError, match=">= -1"):
        weighted_cross_entropy(logits, torch.full((1, 3, 3), -2, dtype=torch.int64))


def test_distance_loss_ignores_unlabelled_pixels_and_is_lowest_at_the_target() -> None:
    target = torch.tensor([[[0, 1, -1, 1]]])
    distance = torch.tensor([[[0.0, 0.5, 0.9, 1.0]]])
    logit = torch.zeros(1, 1, 4, requires_grad=True)
    distance_loss(logit, distance, target).backward()
    assert logit.grad[0, 0, 2] == 0  # the ignored pixel gets no gradient
    assert torch.all(logit.grad[0, 0, [0, 3]] != 0)
    exact = torch.logit(distance.clamp(1e-4, 1 - 1e-4))
    assert distance_loss(exact, distance, target) < distance_loss(
        torch.zeros(1, 1, 4), distance, target
    )
    none = torch.full_like(target, -1)
    assert float(distance_loss(logit, distance, none).detach()) == 0.0


def test_distance_loss_weight_map_scales_each_pixels_share() -> None:
    target = torch.tensor([[[0, 1, 1, -1]]])
    distance = torch.tensor([[[0.0, 1.0, 1.0, 0.5]]])
    logit = torch.zeros(1, 1, 4, requires_grad=True)
    weight = torch.tensor([[[1.0, 1.0, 8.0, 100.0]]])
    loss = distance_loss(logit, distance, target, weight)
    loss.backward()
    # labelled pixels only: each pixel's gradient is proportional to its weight
    assert logit.grad[0, 0, 3] == 0
    assert torch.isclose(logit.grad[0, 0, 2], 8 * logit.grad[0, 0, 1])
    # a uniform weight gives the plain mean; an uneven one shifts it towards heavy pixels
    varied = torch.tensor([[[0.3, -1.0, 2.0, 0.0]]])
    plain = distance_loss(varied, distance, target)
    uniform = distance_loss(varied, distance, target, torch.full((1, 1, 4), 3.0))
    assert torch.isclose(uniform, plain)
    uneven = distance_loss(varied, distance, target, weight)
    assert uneven < plain  # the heavy pixel (logit 2, target 1) has the lowest loss
