import numpy as np
import pytest

from segloop.core.evaluation import drops_more, tune_postprocess
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


def _probabilities_with_a_halo(labels, halo=4):
    """Interior 0.9 inside eroded objects; a halo ``halo`` px wide around each object
    that the network half believes is foreground (1 - p_bg = 0.55)."""
    from scipy import ndimage as ndi

    probs = probabilities_for(labels, 0.9)
    halo_mask = ndi.binary_dilation(labels > 0, iterations=halo) & (labels == 0)
    probs[0][halo_mask] = 0.45
    probs[1][halo_mask] = 0.05
    probs[2] = 1 - probs[0] - probs[1]
    return probs


def test_seg_weight_picks_the_threshold_that_outlines_objects_best():
    _, labels = disks_image([(40, 40), (40, 80), (90, 60)], [10, 10, 10])
    probs = _probabilities_with_a_halo(labels)
    plain = tune_postprocess([probs], [labels], diameter=20, quick=True, smooth=0.0)
    outlined = tune_postprocess(
        [probs], [labels], diameter=20, quick=True, smooth=0.0, seg_weight=1.0
    )
    # every object is found either way: F1 and count error cannot tell the halo apart
    assert plain.f1 == outlined.f1 == 1.0 and plain.count_error == outlined.count_error == 0
    assert plain.settings["fg_threshold"] == 0.5  # the first of the tied settings
    assert outlined.settings["fg_threshold"] > 0.55  # leaves the halo out
    assert outlined.seg > plain.seg + 0.1


def test_baseline_settings_are_kept_unless_the_tuned_ones_outline_better():
    _, labels = disks_image([(40, 40), (40, 80), (90, 60)], [10, 10, 10])
    probs = _probabilities_with_a_halo(labels)
    good = {"fg_threshold": 0.7, "seed_threshold": 0.5, "min_size": 0, "smooth": 0.0}
    kept = tune_postprocess([probs], [labels], diameter=20, quick=True, baseline=good)
    assert kept.kept_baseline and kept.settings["fg_threshold"] == 0.7
    # seeds above 0.95 find none: two touching disks stay one object, whose outline
    # matches neither disk well; the search's best replaces these settings
    from scipy import ndimage as ndi

    _, touching = disks_image([(40, 40), (40, 58), (90, 60)], [10, 10, 10])
    probs = probabilities_for(touching, 0.9)
    cores = [ndi.binary_erosion(touching == i, iterations=3) for i in (1, 2, 3)]
    probs[1] = np.where(np.any(cores, axis=0), 0.9, np.minimum(probs[1], 0.05))
    probs[2] = 1 - probs[0] - probs[1]
    blind = {**good, "seed_threshold": 0.95}
    tuned = tune_postprocess([probs], [touching], diameter=20, quick=True, baseline=blind)
    assert not tuned.kept_baseline and tuned.f1 == 1.0
    assert tuned.settings["seed_threshold"] < 0.95
    # a margin: settings that drop more (here: a higher foreground threshold than the
    # baseline's 0.3) must outline better by more than it to replace the baseline
    args = ([probs], [touching])
    loose = {**blind, "fg_threshold": 0.3}
    held = tune_postprocess(*args, diameter=20, quick=True, baseline=loose, baseline_margin=1.0)
    assert held.kept_baseline and held.settings["fg_threshold"] == 0.3
    replaced = tune_postprocess(*args, diameter=20, quick=True, baseline=loose)
    assert not replaced.kept_baseline and drops_more(replaced.settings, loose)
    gain = replaced.seg - held.seg
    assert gain > 0.01
    for margin, kept in ((gain - 0.005, False), (gain + 0.005, True)):
        found = tune_postprocess(
            *args, diameter=20, quick=True, baseline=loose, baseline_margin=margin
        )
        assert found.kept_baseline is kept
    # settings that drop less than the baseline need no margin
    strict = {**blind, "fg_threshold": 0.9, "min_size": 10**6}
    freed = tune_postprocess(*args, diameter=20, quick=True, baseline=strict, baseline_margin=1.0)
    assert not freed.kept_baseline and not drops_more(freed.settings, strict)


def test_drops_more_compares_the_settings_that_drop_objects():
    start = {"fg_threshold": 0.6, "seed_threshold": 0.4, "min_size": 0, "min_peak": 0.5}
    assert not drops_more(dict(start), start)
    assert drops_more({**start, "min_peak": 0.65}, start)
    assert drops_more({**start, "min_size": 37}, start)
    assert drops_more({**start, "fg_threshold": 0.7, "min_size": 0}, start)
    assert not drops_more({**start, "seed_threshold": 0.6, "fg_threshold": 0.5}, start)
    assert not drops_more({"min_peak": 0.7}, {"fg_threshold": 0.6})  # nothing in common


def test_rescale_raw_image_keeps_colour_axis_last():
    rgb = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    assert rescale_raw_image(rgb, 2.0).shape == (40, 60, 3)
    assert rescale_raw_image(rgb[..., 0], 0.5).shape == (10, 15)


def test_tuning_without_images_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one"):
        tune_postprocess([], [], diameter=18)


def _weak_centred(labels, peak):
    return peak * normalized_distance(labels)


def test_domain_groups_stop_the_largest_domain_choosing_the_settings_alone():
    """Domain A: 3 images of 10 nuclei plus a false blob with a weak centre. Domain B:
    1 image whose 2 real nuclei have centres as weak. Pooled, dropping weak centres
    wins (3 false objects for 2 real ones); averaged over domains, it zeroes B."""
    probs, truths, distances, groups = [], [], [], []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        centres = [(16 + 32 * (i // 4), 16 + 32 * (i % 4)) for i in range(10)]
        _, labels = disks_image([(r + rng.integers(-2, 3), c) for r, c in centres], [9] * 10)
        blob = np.zeros_like(labels)
        blob[100:115, 85:100] = 1
        probs.append(probabilities_for(labels + 20 * blob, 0.9, noise_seed=seed))
        distances.append(normalized_distance(labels) + _weak_centred(blob, 0.56))
        truths.append(labels)
        groups.append("A")
    _, labels = disks_image([(40, 40), (90, 90)], [9, 9])
    probs.append(probabilities_for(labels, 0.9))
    distances.append(_weak_centred(labels, 0.56))
    truths.append(labels)
    groups.append("B")

    def objects_found_in_b(tuned):
        settings = tuned.settings
        return instances_from_probabilities(probs[-1], distance=distances[-1], **settings).max()

    pooled = tune_postprocess(probs, truths, diameter=18, distances=distances, quick=True)
    macro = tune_postprocess(
        probs, truths, diameter=18, distances=distances, quick=True, groups=groups
    )
    assert objects_found_in_b(pooled) == 0
    assert objects_found_in_b(macro) == 2
    assert macro.f1 < 1.0  # the mean over domains: A keeps its false blobs
    same = tune_postprocess(
        probs, truths, diameter=18, distances=distances, quick=True, groups=["x"] * 4
    )
    assert same.settings == pooled.settings and same.score == pooled.score
    with pytest.raises(ValueError, match="groups"):
        tune_postprocess(probs, truths, diameter=18, distances=distances, groups=["A"])
