"""Tests for segloop.core.metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from segloop.core.metrics import (
    MatchCounts,
    count_error,
    dice_coefficient,
    match_instances,
    matched_predictions,
    pixel_iou,
    seg_counts,
    seg_per_prediction,
    seg_score,
)


def _squares() -> np.ndarray:
    """Three separate 4x4 squares (16 pixels each) with labels 1, 2, 3."""
    labels = np.zeros((12, 20), dtype=np.int32)
    labels[1:5, 1:5] = 1
    labels[1:5, 8:12] = 2
    labels[6:10, 14:18] = 3
    return labels


def test_pixel_iou_and_dice() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    assert pixel_iou(a, b) == 1.0 and dice_coefficient(a, b) == 1.0
    a[0, :] = True  # 4 pixels
    assert pixel_iou(a, b) == 0.0 and dice_coefficient(a, b) == 0.0
    b[0, :2] = True
    b[1, :2] = True  # 4 pixels, 2 shared with a
    assert pixel_iou(a, b) == pytest.approx(2 / 6)
    assert dice_coefficient(a, b) == pytest.approx(2 * 2 / 8)
    with pytest.raises(ValueError, match="same shape"):
        pixel_iou(a, b[:3])


def test_identical_labels() -> None:
    labels = _squares()
    m = match_instances(labels, labels)
    assert (m.tp, m.fp, m.fn) == (3, 0, 0)
    assert m.sum_iou == pytest.approx(3.0)
    assert m.f1 == 1.0 and m.precision == 1.0 and m.recall == 1.0 and m.ap == 1.0
    assert m.mean_matched_iou == pytest.approx(1.0)
    assert seg_score(labels, labels) == pytest.approx(1.0)
    assert seg_counts(labels, labels) == (pytest.approx(3.0), 3)
    assert count_error(labels, labels) == 0.0


def test_shifted_object_known_iou() -> None:
    true = np.zeros((8, 8), dtype=np.int32)
    true[0:4, 0:4] = 1
    pred = np.zeros_like(true)
    pred[0:4, 1:5] = 9  # shifted right by one: intersection 12, union 20 -> IoU 0.6
    m = match_instances(true, pred, iou_threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)
    assert m.sum_iou == pytest.approx(0.6)
    m = match_instances(true, pred, iou_threshold=0.7)
    assert (m.tp, m.fp, m.fn) == (0, 1, 1)
    assert m.f1 == 0.0 and m.mean_matched_iou == 0.0
    # SEG: 12 > 16 / 2 -> Jaccard 0.6.
    assert seg_score(true, pred) == pytest.approx(0.6)


def test_merged_prediction() -> None:
    true = np.zeros((6, 10), dtype=np.int32)
    true[1:5, 1:5] = 1
    true[1:5, 5:9] = 2  # touching 4x4 squares
    pred = (true > 0).astype(np.int32)  # one 32-pixel object: IoU 16/32 = 0.5 with each
    m = match_instances(true, pred)  # 0.5 is not > 0.5
    assert (m.tp, m.fp, m.fn) == (0, 1, 2)
    assert m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0 and m.ap == 0.0
    m = match_instances(true, pred, iou_threshold=0.3)  # one-to-one: only one can match
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert m.sum_iou == pytest.approx(0.5)
    assert m.precision == 1.0 and m.recall == 0.5
    assert m.f1 == pytest.approx(2 / 3) and m.ap == pytest.approx(0.5)
    # SEG: each reference has 16 > 8 pixels inside the merged object -> Jaccard 0.5 each.
    assert seg_score(true, pred) == pytest.approx(0.5)
    assert count_error(true, pred) == pytest.approx(0.5)


def test_low_threshold_maximises_number_of_matches() -> None:
    true = np.zeros((1, 24), dtype=np.int32)
    true[0, 0:10] = 1  # A
    true[0, 10:20] = 2  # B
    pred = np.zeros_like(true)
    pred[0, 0:2] = 1  # Y: IoU(A, Y) = 2 / 10
    pred[0, 2:12] = 2  # X: IoU(A, X) = 8 / 12, IoU(B, X) = 2 / 18
    m = match_instances(true, pred, iou_threshold=0.1)
    # Greedy / max-IoU would match only A-X; the best one-to-one matching is A-Y and B-X.
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.sum_iou == pytest.approx(2 / 10 + 2 / 18)
    m = match_instances(true, pred, iou_threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert m.sum_iou == pytest.approx(8 / 12)


def test_empty_prediction_and_empty_reference() -> None:
    true = _squares()
    empty = np.zeros_like(true)
    m = match_instances(true, empty)
    assert (m.tp, m.fp, m.fn, m.sum_iou) == (0, 0, 3, 0.0)
    assert m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0
    assert seg_score(true, empty) == 0.0
    assert count_error(true, empty) == 1.0
    m = match_instances(empty, true)
    assert (m.tp, m.fp, m.fn) == (0, 3, 0)
    assert m.f1 == 0.0
    assert math.isnan(seg_score(empty, true))
    assert seg_counts(empty, true) == (0.0, 0)
    assert count_error(empty, true) == 3.0
    m = match_instances(empty, empty)
    assert (m.tp, m.fp, m.fn) == (0, 0, 0)
    assert m.f1 == 1.0 and m.precision == 1.0 and m.ap == 1.0


def test_label_permutation_invariance() -> None:
    true = _squares()
    pred = np.zeros_like(true)
    pred[1:5, 2:6] = 1  # square 1 shifted by one: IoU 0.6
    pred[1:5, 8:12] = 2  # square 2 exact
    pred[0:2, 14:18] = 3  # spurious object
    reference = match_instances(true, pred)
    assert (reference.tp, reference.fp, reference.fn) == (2, 1, 1)
    assert reference.sum_iou == pytest.approx(1.6)
    mapping = np.array([0, 1000, 7, 42])
    permuted_pred = mapping[pred]
    permuted_true = np.array([0, 5, 900, 3])[true]
    for t, p in ((true, permuted_pred), (permuted_true, pred), (permuted_true, permuted_pred)):
        assert match_instances(t, p) == reference
        assert seg_score(t, p) == pytest.approx(1.6 / 3)


def test_seg_half_coverage_is_not_a_match() -> None:
    true = np.zeros((6, 6), dtype=np.int32)
    true[0:4, 0:4] = 1  # 16 pixels
    pred = np.zeros_like(true)
    pred[0:2, 0:4] = 1  # exactly 8 pixels = half: not > 0.5 |R|
    assert seg_score(true, pred) == 0.0
    pred[2, 0] = 1  # 9 pixels inside R: Jaccard 9 / 16
    assert seg_score(true, pred) == pytest.approx(9 / 16)
    pred[5, 5] = 1  # plus a pixel outside R: Jaccard 9 / 17
    assert seg_score(true, pred) == pytest.approx(9 / 17)


def test_3d_labels() -> None:
    true = np.zeros((4, 6, 6), dtype=np.uint16)
    true[0:2, 0:2, 0:2] = 1  # 8 voxels
    true[2:4, 3:6, 3:6] = 2  # 18 voxels
    pred = np.zeros_like(true)
    pred[0:2, 0:2, 0:1] = 5  # 4 voxels inside object 1: IoU 0.5, SEG needs > 4
    pred[2:4, 3:6, 3:6] = 6
    m = match_instances(true, pred)
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert seg_score(true, pred) == pytest.approx(0.5)


def test_match_counts_aggregation_and_json() -> None:
    a = MatchCounts(tp=2, fp=1, fn=0, sum_iou=1.5)
    b = MatchCounts(tp=1, fp=0, fn=3, sum_iou=0.75)
    total = a + b
    assert total == MatchCounts(3, 1, 3, 2.25)
    assert sum([a, b]) == total
    assert total.precision == pytest.approx(3 / 4)
    assert total.recall == pytest.approx(3 / 6)
    assert total.f1 == pytest.approx(6 / 10)
    assert total.ap == pytest.approx(3 / 7)
    assert total.mean_matched_iou == pytest.approx(0.75)
    d = json.loads(json.dumps(total.as_dict()))
    assert d["tp"] == 3 and d["fn"] == 3 and d["f1"] == pytest.approx(0.6)
    assert set(d) == {
        "tp",
        "fp",
        "fn",
        "sum_iou",
        "precision",
        "recall",
        "f1",
        "ap",
        "mean_matched_iou",
    }


def test_shape_mismatch_and_bad_labels() -> None:
    with pytest.raises(ValueError, match="same shape"):
        match_instances(np.zeros((4, 4), dtype=int), np.zeros((4, 5), dtype=int))
    with pytest.raises(ValueError, match="same shape"):
        seg_score(np.zeros((4, 4), dtype=int), np.zeros((2, 4, 4), dtype=int))
    with pytest.raises(ValueError, match="same shape"):
        count_error(np.zeros((4, 4), dtype=int), np.zeros((4,), dtype=int))
    with pytest.raises(ValueError, match="integer"):
        match_instances(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        seg_score(-np.ones((4, 4), dtype=int), np.zeros((4, 4), dtype=int))


def test_matched_predictions_flags_each_predicted_object() -> None:
    true = np.zeros((20, 40), np.int32)
    true[2:10, 2:10], true[2:10, 20:30] = 1, 2
    pred = np.zeros_like(true)
    pred[2:10, 2:10] = 1  # exact
    pred[2:10, 20:23] = 2  # IoU 0.3
    pred[15:18, 35:38] = 3  # nothing there
    assert matched_predictions(true, pred).tolist() == [True, False, False]
    assert matched_predictions(true, np.zeros_like(true)).tolist() == []
    with pytest.raises(ValueError, match="sequential"):
        matched_predictions(true, pred * 2)
    with pytest.raises(ValueError, match="at least 0.5"):
        matched_predictions(true, pred, 0.3)


def test_seg_per_prediction_sums_to_seg_and_credits_a_merge_with_both_objects():
    true = _squares()
    pred = np.zeros_like(true)
    pred[1:5, 1:12] = 1  # merges objects 1 and 2 (each more than half covered)
    pred[6:10, 14:16] = 2  # half of object 3: not more than half, no SEG partner
    pred[0, 19] = 3  # a false object
    per_object = seg_per_prediction(true, pred)
    total, n_true = seg_counts(true, pred)
    assert per_object.shape == (3,)
    assert per_object[0] == pytest.approx(2 * 16 / 44)
    assert per_object[1] == 0.0 and per_object[2] == 0.0
    assert per_object.sum() == pytest.approx(total) and n_true == 3


def test_seg_per_prediction_needs_sequential_predictions():
    true = _squares()
    with pytest.raises(ValueError, match="sequential"):
        seg_per_prediction(true, np.where(true == 1, 5, 0))
