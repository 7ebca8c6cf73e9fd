import numpy as np
import pytest

from segloop.core.evaluation import tune_postprocess
from segloop.core.instances import instances_from_probabilities
from segloop.core.scale import rescale_raw_image
from segloop.core.targets import normalized_distance

from ..conftest import disks_image


def probabilities_for(labels, interior_level, noise_seed=0):
    """Fake 3-class probabilities: interior p = interior_level inside eroded objects."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(noise_seed)
    inside = labels > 0
    core = ndi.binary_erosion(inside, iterations=3)
    p_int = np.where(core, interior_level, 0.05) + rng.normal(0, 0.02, labels.shape)
    p_bg = np.where(inside, 0.05, 0.9)
    p_int = np.clip(p_int, 0, 1 - p_bg)
    return np.stack([p_bg, p_int, 1 - p_bg - p_int]).astype(np.float32)


def test_tuning_finds_the_seed_threshold_that_splits_touching_objects():
    _, labels = disks_image([(40, 40), (40, 58), (90, 90)], [10, 10, 8])
    # interior probability only 0.45: default seeds (0.5) would find nothing
    probs = probabilities_for(labels, 0.45)
    tuned = tune_postprocess([probs], [labels], diameter=18)
    assert tuned.f1 == 1.0 and tuned.count_error == 0.0
    assert tuned.settings["seed_threshold"] < 0.45


def test_tuning_drops_faint_false_objects_by_their_peak():
    _, labels = disks_image([(40, 40), (40, 80), (90, 60)], [10, 10, 10])
    distance = normalized_distance(labels)
    faint = np.zeros_like(labels)
    faint[95:110, 10:25] = 1  # a blob the network calls foreground, with a weak centre
    probs = probabilities_for(labels + 9 * faint, 0.9)
    distance = np.where(faint > 0, 0.58 * normalized_distance(faint), distance)
    tuned = tune_postprocess([probs], [labels], diameter=20, distances=[distance])
    assert tuned.f1 == 1.0 and tuned.count_error == 0.0
    assert tuned.settings["min_peak"] > 0.58
    assert tuned.settings["split_large"] in (0.0, 1.5, 2.0)
    kept = instances_from_probabilities(probs, distance=distance, **tuned.settings)
    assert kept.max() == 3


def test_quick_grid_keeps_the_models_smoothing_and_is_a_subset_of_the_full_grid():
    _, labels = disks_image([(40, 40), (40, 58), (90, 90), (20, 100)], [10, 10, 8, 9])
    probs = probabilities_for(labels, 0.45, noise_seed=3)
    quick = tune_postprocess([probs], [labels], diameter=18, quick=True, smooth=2.0)
    full = tune_postprocess([probs], [labels], diameter=18)
    assert quick.settings["smooth"] == 2.0
    assert quick.settings["seed_threshold"] in (0.3, 0.4, 0.5, 0.6)
    assert quick.f1 == 1.0 and quick.score <= full.score


def test_rescale_raw_image_keeps_colour_axis_last():
    rgb = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    assert rescale_raw_image(rgb, 2.0).shape == (40, 60, 3)
    assert rescale_raw_image(rgb[..., 0], 0.5).shape == (10, 15)


def test_tuning_without_images_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one"):
        tune_postprocess([], [], diameter=18)
