"""Hypothesis properties of the core: tiling round trip, weight-map invariants, instance
relabelling, rescale round trip and CSV round trip (small example counts: CI stays fast)."""

from __future__ import annotations

import csv
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.draw import disk

from segloop.core.counting import write_csv
from segloop.core.instances import remove_small
from segloop.core.models import ModelConfig
from segloop.core.scale import rescale_image, rescale_labels, resize_to_shape
from segloop.core.tiling import pad_image, plan_tiles
from segloop.core.weightmap import _weight_map_reference, weight_map

FAST = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _identity_prediction(image: np.ndarray, config: ModelConfig, tile: int) -> np.ndarray:
    """What predict_probabilities_iter assembles when the network returns its input's
    centre (a perfect identity network): must be the image itself."""
    plan = plan_tiles(config, image.shape, tile)
    padded = pad_image(image[None].astype(np.float32), plan)
    canvas = np.zeros((1, *plan.canvas_shape), np.float32)
    weights = np.zeros(plan.canvas_shape, np.float32)
    inner = slice(plan.margin, plan.margin + plan.output_size)
    for y, x in plan.starts:
        window = padded[:, y : y + plan.input_size, x : x + plan.input_size]
        assert window.shape[-2:] == (plan.input_size, plan.input_size)
        out = window[:, inner, inner]
        canvas[:, y : y + plan.output_size, x : x + plan.output_size] += out * plan.window
        weights[y : y + plan.output_size, x : x + plan.output_size] += plan.window
    c = plan.context
    height, width = image.shape
    covered = weights[c : c + height, c : c + width]
    assert (covered > 0).all()
    return canvas[0, c : c + height, c : c + width] / covered


@FAST
@given(
    height=st.integers(8, 300),
    width=st.integers(8, 300),
    tile=st.integers(16, 200),
    padding=st.sampled_from(["same", "valid"]),
    seed=st.integers(0, 2**16),
)
def test_tiling_round_trip_reassembles_the_image(height, width, tile, padding, seed):
    config = ModelConfig(depth=3, base_channels=4, padding=padding, batch_norm=False)
    image = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    np.testing.assert_allclose(_identity_prediction(image, config, tile), image, atol=1e-5)


def _random_labels(seed: int, shape: tuple[int, int], n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for index in range(1, n + 1):
        centre = (rng.integers(0, shape[0]), rng.integers(0, shape[1]))
        rr, cc = disk(centre, int(rng.integers(1, 6)), shape=shape)
        labels[rr, cc] = index
    return labels


@FAST
@given(
    seed=st.integers(0, 2**16),
    side=st.integers(12, 40),
    n=st.integers(0, 6),
    w0=st.floats(0.0, 50.0),
    sigma=st.floats(0.5, 10.0),
)
def test_weight_map_invariants(seed, side, n, w0, sigma):
    labels = _random_labels(seed, (side, side + 3), n)
    weights = weight_map(labels, w0=w0, sigma=sigma)
    plain = weight_map(labels, w0=0.0, sigma=sigma)
    assert weights.dtype == np.float32 and weights.shape == labels.shape
    assert np.isfinite(weights).all()
    # class balance alone has mean 1; the border term only adds, and only on background
    assert math.isclose(float(plain.mean()), 1.0, rel_tol=1e-4)
    assert (weights >= plain - 1e-6).all()
    assert (weights <= plain + w0 + 1e-4).all()
    np.testing.assert_allclose(weights[labels > 0], plain[labels > 0], atol=1e-6)
    # the windowed map equals the full-EDT reference; renumbering objects changes nothing
    np.testing.assert_allclose(weights, _weight_map_reference(labels, w0, sigma), atol=1e-3)
    ids = np.unique(labels[labels > 0])
    renumbered = np.zeros_like(labels)
    for new, old in zip(
        np.random.default_rng(seed).permutation(len(ids)) * 7 + 3, ids, strict=True
    ):
        renumbered[labels == old] = new
    np.testing.assert_allclose(weight_map(renumbered, w0, sigma), weights, atol=1e-5)


@FAST
@given(seed=st.integers(0, 2**16), n=st.integers(0, 12), min_size=st.integers(0, 40))
def test_relabelling_is_sequential_and_keeps_the_partition(seed, n, min_size):
    labels = _random_labels(seed, (48, 48), n) * 5  # sparse ids
    out = remove_small(labels, min_size)
    kept = [i for i in np.unique(labels[labels > 0]) if np.count_nonzero(labels == i) >= min_size]
    assert out.dtype == np.int32
    assert sorted(np.unique(out[out > 0])) == list(range(1, len(kept) + 1))
    for old in np.unique(labels[labels > 0]):
        new_ids = np.unique(out[labels == old])
        assert len(new_ids) == 1  # one object -> one id (or removed)
        assert (new_ids[0] > 0) == (old in kept)


@FAST
@given(
    height=st.integers(4, 60),
    width=st.integers(4, 60),
    factor=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_rescale_labels_round_trip_is_exact_for_integer_factors(height, width, factor, seed):
    labels = np.random.default_rng(seed).integers(0, 2**31 - 1, (height, width), dtype=np.int64)
    up = rescale_labels(labels, float(factor))
    assert up.shape == (height * factor, width * factor) and up.dtype == labels.dtype
    np.testing.assert_array_equal(resize_to_shape(up, (height, width), order=0), labels)


@FAST
@given(
    height=st.integers(4, 80),
    width=st.integers(4, 80),
    factor=st.floats(0.1, 4.0),
    seed=st.integers(0, 2**16),
)
def test_rescale_image_shape_and_range(height, width, factor, seed):
    image = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    scaled = rescale_image(image, factor)
    assert scaled.shape == (max(1, round(height * factor)), max(1, round(width * factor)))
    assert scaled.min() >= image.min() - 1e-5 and scaled.max() <= image.max() + 1e-5
    back = resize_to_shape(scaled, (height, width), order=1)
    assert back.shape == image.shape


text_cells = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=12
)


@FAST
@given(
    names=st.lists(text_cells, min_size=0, max_size=8),
    data=st.data(),
)
def test_csv_round_trip(tmp_path, names, data):
    n = len(names)
    ints = data.draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n))
    floats = data.draw(st.lists(st.floats(allow_infinity=False, width=64), min_size=n, max_size=n))
    path = tmp_path / "t.csv"
    write_csv(
        {
            "name": np.array(names, dtype=object),
            "count": np.array(ints, dtype=np.int64),
            "value": np.array(floats, dtype=np.float64),
        },
        path,
        extra_columns={"image": 'a, "b".tif'},
    )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n
    for row, name, count, value in zip(rows, names, ints, floats, strict=True):
        assert row["image"] == 'a, "b".tif' and row["name"] == name
        assert int(row["count"]) == count
        back = float(row["value"])
        assert (math.isnan(back) and math.isnan(value)) or math.isclose(
            back, value, rel_tol=1e-5, abs_tol=1e-300
        )
