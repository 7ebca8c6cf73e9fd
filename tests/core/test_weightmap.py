"""Tests for segloop.core.weightmap."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from skimage.draw import disk

from segloop.core.weightmap import _margin, _weight_map_reference, weight_map

W0, SIGMA = 10.0, 5.0


def _two_squares() -> np.ndarray:
    """Two 10x10 squares in rows 20..29, columns 10..19 and 26..35 (gap of 6 columns)."""
    labels = np.zeros((64, 64), dtype=np.int32)
    labels[20:30, 10:20] = 1
    labels[20:30, 26:36] = 2
    return labels


def _random_disks(shape: tuple[int, int], n: int, rmin: int, rmax: int, seed: int) -> np.ndarray:
    """Paint ``n`` random disks (later ones overwrite earlier ones)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    for i in range(1, n + 1):
        r = int(rng.integers(rmin, rmax + 1))
        centre = (int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1])))
        rr, cc = disk(centre, r, shape=shape)
        labels[rr, cc] = i
    return labels


# Hand-computed class weights: N = 64 * 64 = 4096, 200 foreground and 3896 background pixels.
W_FG = 4096 / (2 * 200)  # 10.24
W_BG = 4096 / (2 * 3896)  # 0.525667...


def test_two_squares_hand_computed() -> None:
    w = weight_map(_two_squares(), w0=W0, sigma=SIGMA)
    assert w.dtype == np.float32 and w.shape == (64, 64)
    # Gap row, column 22: 3 pixels from column 19 and 4 pixels from column 26.
    assert w[25, 22] == pytest.approx(W_BG + W0 * math.exp(-((3 + 4) ** 2) / 50), abs=1e-5)
    # Gap row, column 20 (adjacent to the left square): d1 = 1, d2 = 6.
    assert w[25, 20] == pytest.approx(W_BG + W0 * math.exp(-((1 + 6) ** 2) / 50), abs=1e-5)
    # Row 19 above the gap, column 22: nearest pixels (20, 19) and (20, 26).
    d1, d2 = math.sqrt(1 + 9), math.sqrt(1 + 16)
    assert w[19, 22] == pytest.approx(W_BG + W0 * math.exp(-((d1 + d2) ** 2) / 50), abs=1e-5)
    # Far from both squares: only the class weight.
    assert w[63, 63] == pytest.approx(W_BG, abs=1e-6)
    assert w[0, 0] == pytest.approx(W_BG, abs=1e-6)
    # Object pixels (even those next to the gap) get the foreground class weight only.
    assert w[25, 19] == pytest.approx(W_FG, abs=1e-6)
    assert w[25, 26] == pytest.approx(W_FG, abs=1e-6)
    assert w[22, 12] == pytest.approx(W_FG, abs=1e-6)


def test_class_weights_have_mean_one_without_border_term() -> None:
    w = weight_map(_two_squares(), w0=0.0)
    assert np.mean(w, dtype=np.float64) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.unique(w), [W_BG, W_FG], rtol=1e-6)


def test_no_class_balance() -> None:
    w = weight_map(_two_squares(), w0=W0, sigma=SIGMA, class_balance=False)
    assert w[63, 63] == 1.0
    assert w[25, 15] == 1.0
    assert w[25, 22] == pytest.approx(1.0 + W0 * math.exp(-49 / 50), abs=1e-5)


def test_fewer_than_two_objects() -> None:
    labels = np.zeros((32, 32), dtype=np.int32)
    labels[10:20, 10:20] = 3  # 100 of 1024 pixels
    w = weight_map(labels)
    assert w[5, 5] == pytest.approx(1024 / (2 * 924))
    assert w[15, 15] == pytest.approx(1024 / 200)
    assert len(np.unique(w)) == 2
    # Only one class present: w_c = 1 everywhere.
    np.testing.assert_array_equal(weight_map(np.zeros((8, 8), dtype=np.int32)), 1.0)
    np.testing.assert_array_equal(weight_map(np.ones((8, 8), dtype=np.int32)), 1.0)


def test_margin_drops_only_small_terms() -> None:
    r = _margin(W0, SIGMA)
    assert W0 * math.exp(-(r**2) / (2 * SIGMA**2)) <= 1e-4
    assert W0 * math.exp(-((r - 1) ** 2) / (2 * SIGMA**2)) > 1e-4
    assert _margin(0.0, SIGMA) == 0


@pytest.mark.parametrize("class_balance", [True, False])
def test_fast_matches_reference(class_balance: bool) -> None:
    labels = _random_disks((96, 96), n=15, rmin=3, rmax=8, seed=0)
    assert len(np.unique(labels)) > 10
    fast = weight_map(labels, w0=W0, sigma=SIGMA, class_balance=class_balance)
    ref = _weight_map_reference(labels, w0=W0, sigma=SIGMA, class_balance=class_balance)
    assert np.abs(fast - ref).max() < 1e-3
    # The border term is really exercised (up to w0 = 10 in narrow gaps).
    no_border = _weight_map_reference(labels, w0=0.0, class_balance=class_balance)
    assert (ref - no_border).max() > 1.0


def test_fast_matches_reference_with_large_sparse_ids() -> None:
    labels = _random_disks((64, 64), n=12, rmin=2, rmax=6, seed=1).astype(np.int64)
    sparse = labels * 1_000_003
    fast = weight_map(sparse, w0=5.0, sigma=3.0)
    np.testing.assert_allclose(fast, weight_map(labels, w0=5.0, sigma=3.0), atol=1e-6)
    ref = _weight_map_reference(labels, w0=5.0, sigma=3.0)
    assert np.abs(fast - ref).max() < 1e-3


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="integer"):
        weight_map(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="sigma"):
        weight_map(np.zeros((4, 4), dtype=np.int32), sigma=0.0)


@pytest.mark.slow
def test_speed_1000_objects_1024() -> None:
    rng = np.random.default_rng(2)
    labels = np.zeros((1024, 1024), dtype=np.int32)
    # 1000 disks of radius 4..8 on a jittered 32 x 32 grid (spacing 32 px).
    centres = [(32 * i + 16, 32 * j + 16) for i in range(32) for j in range(32)][:1000]
    for k, (y, x) in enumerate(centres, start=1):
        jitter = rng.integers(-6, 7, size=2)
        rr, cc = disk((y + jitter[0], x + jitter[1]), int(rng.integers(4, 9)), shape=labels.shape)
        labels[rr, cc] = k
    start = time.perf_counter()
    w = weight_map(labels)
    elapsed = time.perf_counter() - start
    print(f"weight_map 1024x1024, 1000 objects: {elapsed:.2f} s")
    assert w.shape == labels.shape and np.isfinite(w).all()
    assert w[labels == 0].max() > w[labels == 0].min()
    assert elapsed < 60
