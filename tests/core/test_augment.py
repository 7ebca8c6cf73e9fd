"""Tests for segloop.core.augment."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from segloop.core.augment import AugmentConfig, _apply_dihedral, augment_sample, random_crop

OFF = AugmentConfig(flips=False, rot90=False, elastic=False, intensity=False, noise=False)
GEOM_ONLY = AugmentConfig(elastic=False, intensity=False, noise=False)
ELASTIC_ONLY = AugmentConfig(
    flips=False, rot90=False, elastic_probability=1.0, intensity=False, noise=False
)


def _sample(h: int = 64, w: int = 64, c: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.random((c, h, w), dtype=np.float32)
    target = rng.integers(-1, 3, size=(h, w)).astype(np.int64)
    weight = rng.random((h, w), dtype=np.float32)
    return image, target, weight


def _square_sample(size: int = 96):
    image = np.zeros((1, size, size), np.float32)
    target = np.ones((size, size), np.int64)
    image[0, 30:60, 35:65] = 1.0
    target[30:60, 35:65] = 2
    target[:10, :] = -1
    return image, target


def _dihedral_all(arr: np.ndarray) -> list[np.ndarray]:
    return [_apply_dihedral(arr, k, f) for k in range(4) for f in (False, True)]


def test_all_off_is_identity():
    image, target, weight = _sample()
    for cfg in (
        OFF,
        AugmentConfig(
            elastic_probability=0.0, flips=False, rot90=False, intensity=False, noise=False
        ),
    ):
        out = augment_sample(image, target, weight, np.random.default_rng(1), cfg)
        np.testing.assert_array_equal(out[0], image)
        np.testing.assert_array_equal(out[1], target)
        np.testing.assert_array_equal(out[2], weight)
        assert out[0].dtype == np.float32 and out[1].dtype == np.int64
        assert out[0] is not image
    img, tgt, wgt = augment_sample(image, target, None, np.random.default_rng(1), OFF)
    assert wgt is None


@pytest.mark.parametrize(
    ("k", "flip", "expected"),
    [
        (0, False, (2, 5)),
        (0, True, (2, 10 - 1 - 5)),
        (1, False, (10 - 1 - 5, 2)),  # np.rot90 turns counter-clockwise
        (2, False, (10 - 1 - 2, 10 - 1 - 5)),
        (3, False, (5, 10 - 1 - 2)),
        (1, True, (10 - 1 - 5, 10 - 1 - 2)),
    ],
)
def test_dihedral_moves_marked_pixel(k, flip, expected):
    arr = np.zeros((10, 10), np.int64)
    arr[2, 5] = 7
    out = _apply_dihedral(arr, k, flip)
    assert tuple(np.argwhere(out == 7)[0]) == expected
    stacked = _apply_dihedral(np.stack([arr, arr]), k, flip)
    np.testing.assert_array_equal(stacked[1], out)


def test_geometric_is_consistent_dihedral_and_keeps_values():
    image, target, weight = _sample(32, 32, c=1)
    seen = set()
    for seed in range(24):
        img, tgt, wgt = augment_sample(
            image, target, weight, np.random.default_rng(seed), GEOM_ONLY
        )
        idx = [i for i, cand in enumerate(_dihedral_all(image)) if np.array_equal(cand, img)]
        assert len(idx) == 1
        np.testing.assert_array_equal(tgt, _dihedral_all(target)[idx[0]])
        np.testing.assert_array_equal(wgt, _dihedral_all(weight)[idx[0]])
        np.testing.assert_array_equal(np.sort(tgt, axis=None), np.sort(target, axis=None))
        assert tgt.flags.c_contiguous and img.flags.c_contiguous
        seen.add(idx[0])
    assert len(seen) >= 6  # most of the 8 dihedral elements occur


def test_non_square_keeps_shape():
    image, target, weight = _sample(24, 40)
    for seed in range(16):
        img, tgt, wgt = augment_sample(
            image,
            target,
            weight,
            np.random.default_rng(seed),
            AugmentConfig(elastic_probability=1.0),
        )
        assert img.shape == image.shape and tgt.shape == target.shape
        assert wgt.shape == weight.shape


def test_elastic_no_new_labels_and_ignore_kept():
    image, target, weight = _sample(64, 64)
    target[16:48, 16:48] = -1
    for seed in range(4):
        img, tgt, wgt = augment_sample(
            image, target, weight, np.random.default_rng(seed), ELASTIC_ONLY
        )
        assert set(np.unique(tgt)) <= set(np.unique(target))
        assert tgt[32, 32] == -1  # centre of the ignore block stays ignore, not blended
        assert not np.array_equal(tgt, target)  # something actually moved
        assert wgt.min() >= weight.min() - 1e-6 and wgt.max() <= weight.max() + 1e-6
        assert img.dtype == np.float32 and tgt.dtype == np.int64 and wgt.dtype == np.float32


def test_elastic_keeps_image_and_target_aligned():
    image, target = _square_sample()
    for seed in range(4):
        img, tgt, _ = augment_sample(image, target, None, np.random.default_rng(seed), ELASTIC_ONLY)
        bright = img[0] > 0.5
        assert bright.sum() > 200
        assert (tgt[bright] == 2).mean() > 0.95
        assert set(np.unique(tgt)) <= {-1, 1, 2}


def test_intensity_and_noise_only_touch_image():
    image, target, weight = _sample()
    cfg = AugmentConfig(flips=False, rot90=False, elastic=False)
    img, tgt, wgt = augment_sample(image, target, weight, np.random.default_rng(3), cfg)
    assert not np.allclose(img, image)
    assert np.corrcoef(img.ravel(), image.ravel())[0, 1] > 0.8
    np.testing.assert_array_equal(tgt, target)
    np.testing.assert_array_equal(wgt, weight)
    assert img.dtype == np.float32


def test_same_seed_is_repeatable():
    image, target, weight = _sample()
    cfg = AugmentConfig(elastic_probability=1.0)
    a = augment_sample(image, target, weight, np.random.default_rng(42), cfg)
    b = augment_sample(image, target, weight, np.random.default_rng(42), cfg)
    c = augment_sample(image, target, weight, np.random.default_rng(43), cfg)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_config_json_roundtrip():
    cfg = AugmentConfig(flips=False, elastic_grid=5, elastic_sigma=4.5, noise=False)
    back = AugmentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert AugmentConfig.from_dict({"rot90": False, "unknown": 1}) == AugmentConfig(rot90=False)


def test_random_crop_large_input_is_consistent():
    h, w = 50, 70
    image = np.arange(2 * h * w, dtype=np.float32).reshape(2, h, w)
    target = np.arange(h * w, dtype=np.int64).reshape(h, w)
    for seed in range(5):
        img, tgt = random_crop([image, target], (20, 30), np.random.default_rng(seed))
        assert img.shape == (2, 20, 30) and tgt.shape == (20, 30)
        np.testing.assert_array_equal(img[0], tgt.astype(np.float32))
        assert img.flags.c_contiguous and tgt.flags.c_contiguous


def test_random_crop_small_input_pads():
    rng = np.random.default_rng(0)
    image = rng.random((1, 10, 12), dtype=np.float32)
    target = np.full((10, 12), 3, np.int64)
    weight = np.ones((10, 12), np.float32)
    img, tgt, wgt = random_crop([image, target, weight], (16, 20), rng)
    assert img.shape == (1, 16, 20) and tgt.shape == (16, 20) and wgt.shape == (16, 20)
    assert (tgt == 3).sum() == 10 * 12
    assert (tgt == -1).sum() == 16 * 20 - 10 * 12
    np.testing.assert_array_equal(wgt == 0, tgt == -1)
    assert set(np.unique(img)) <= set(np.unique(image))  # reflect padding, no new values
    # mixed: one axis smaller, one larger than the crop
    img, tgt = random_crop([image, target], (8, 30), rng)
    assert img.shape == (1, 8, 30) and tgt.shape == (8, 30)
    with pytest.raises(ValueError):
        random_crop([image, target[:5]], (8, 8), rng)


def test_speed_256():
    image, target, weight = _sample(256, 256, c=1)
    cfg = AugmentConfig(elastic_probability=1.0)
    rng = np.random.default_rng(0)
    augment_sample(image, target, weight, rng, cfg)
    n = 5
    t0 = time.perf_counter()
    for _ in range(n):
        augment_sample(image, target, weight, rng, cfg)
    per_call = (time.perf_counter() - t0) / n
    print(f"augment_sample 256x256 with elastic: {per_call * 1000:.1f} ms/call")
    assert per_call < 0.5


def test_float_maps_move_with_the_target():
    # a stack of float maps (loss weight, regression target) follows the target exactly
    # under flips/rotations and stays aligned under elastic deformation
    image, target = _square_sample()
    inside = (target == 2).astype(np.float32)
    maps = np.stack([np.ones_like(inside), inside])
    for config in (GEOM_ONLY, ELASTIC_ONLY):
        for seed in range(3):
            _, tgt, out = augment_sample(image, target, maps, np.random.default_rng(seed), config)
            assert out.shape == maps.shape
            assert np.allclose(out[0], 1.0)
            agree = (out[1] > 0.5) == (tgt == 2)
            assert agree.mean() > 0.99


def test_random_crop_around_a_centre_keeps_it_inside_the_margin():
    rng = np.random.default_rng(0)
    image = np.zeros((1, 100, 120), np.float32)
    target = np.full((100, 120), -1, np.int64)
    for centre in [(0, 0), (99, 119), (50, 3), (7, 80)]:
        marked = target.copy()
        marked[centre] = 1
        for _ in range(20):
            _, crop = random_crop([image, marked], (48, 48), rng, centre=centre, margin=8)
            ys, xs = np.nonzero(crop == 1)
            assert len(ys) == 1, centre
            # inside the margin unless the image border forbids it
            for found, where, side in ((ys[0], centre[0], 100), (xs[0], centre[1], 120)):
                near_border = where < 8 or where >= side - 8
                assert near_border or 8 <= found < 40, (centre, found)
    small = np.zeros((20, 20), np.int64)
    small[5, 5] = 1
    _, crop = random_crop([np.zeros((1, 20, 20), np.float32), small], (48, 48), rng, centre=(5, 5))
    assert crop.shape == (48, 48) and (crop == 1).sum() == 1


def test_sparse_corrections_crop_around_what_was_painted():
    from segloop.core.evaluation import LabelledImage
    from segloop.core.modelio import new_bundle
    from segloop.core.models import ModelConfig, tile_geometry
    from segloop.core.training import TrainConfig, _batch, make_sample

    labels = np.zeros((256, 256), np.int32)
    labels[200:210, 30:40] = 1  # one painted object in a large, otherwise unlabelled image
    item = LabelledImage(np.random.default_rng(1).random((256, 256)), labels, "s", labels == 0)
    bundle = new_bundle(ModelConfig(depth=3, base_channels=8), "m")
    config = TrainConfig(epochs=1, crop=64, augment=AugmentConfig(elastic=False))
    sample = make_sample(item, bundle, config)
    assert sample.labelled is not None and len(sample.labelled) == 100
    geometry = tile_geometry(bundle.config, 64)
    rng = np.random.default_rng(0)
    _, targets, _, _ = _batch([sample], [0] * 8, geometry, config, rng, geometry.margin)
    assert all((t >= 0).any() for t in targets.numpy())  # every crop holds painted pixels
    dense = make_sample(LabelledImage(item.image, labels, "d"), bundle, config)
    assert dense.labelled is None


def test_shift_augmentations_are_off_by_default_and_validated():
    config = AugmentConfig()
    assert config.scale_range == (1.0, 1.0)
    assert config.blur_probability == config.invert_probability == 0.0
    assert config.poisson_probability == 0.0
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="blur_probability"):
        AugmentConfig(blur_probability=1.5)
    shift = AugmentConfig.shift()
    assert AugmentConfig.from_dict(json.loads(json.dumps(shift.to_dict()))) == shift


def test_inversion_blur_and_shot_noise_change_only_the_image():
    image, target = _square_sample()
    rng = np.random.default_rng(0)
    inverted, tgt, _ = augment_sample(
        image, target, None, rng, AugmentConfig(**{**OFF.to_dict(), "invert_probability": 1.0})
    )
    np.testing.assert_allclose(inverted, 1.0 - image)
    np.testing.assert_array_equal(tgt, target)
    blurred, tgt, _ = augment_sample(
        image, target, None, rng, AugmentConfig(**{**OFF.to_dict(), "blur_probability": 1.0})
    )
    np.testing.assert_array_equal(tgt, target)
    assert 0 < blurred[0, 45, 34] < 1 and 0 < blurred[0, 45, 35] < 1  # edges softened
    assert abs(blurred.sum() - image.sum()) < 0.01 * image.sum()  # blur keeps the mass
    noisy, tgt, _ = augment_sample(
        image, target, None, rng, AugmentConfig(**{**OFF.to_dict(), "poisson_probability": 1.0})
    )
    np.testing.assert_array_equal(tgt, target)
    assert np.all(noisy[image == 0] == 0)  # no photons where there is no signal
    inside = noisy[0, 30:60, 35:65]
    assert inside.std() > 0 and abs(inside.mean() - 1.0) < 0.2


def test_zoomed_crops_keep_image_and_target_aligned():
    from segloop.core.samples import _zoomed_crop
    from segloop.core.training import TrainConfig

    image, target = _square_sample(192)
    config = TrainConfig(epochs=1, augment=AugmentConfig(scale_range=(2.0, 2.0)))
    rng = np.random.default_rng(3)
    for _ in range(5):
        crop_image, crop_target = _zoomed_crop([image, target], 64, rng, None, 0, config)
        assert crop_image.shape == (1, 64, 64) and crop_target.shape == (64, 64)
        assert crop_target.dtype == np.int64 and set(np.unique(crop_target)) <= {-1, 1, 2}
        inside = crop_target == 2
        if inside.sum() > 50:  # the bright square is where the target says it is
            assert crop_image[0][inside].mean() > 0.9
            assert crop_image[0][crop_target == 1].mean() < 0.1
    zoomed_out = TrainConfig(epochs=1, augment=AugmentConfig(scale_range=(0.5, 0.5)))
    crop_image, crop_target = _zoomed_crop([image, target], 64, rng, None, 0, zoomed_out)
    assert crop_image.shape == (1, 64, 64)
    assert (crop_target == 2).sum() < 30 * 30  # objects shrink when zooming out
