"""Tests for segloop.core.instances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from segloop.core.counting import count_table, frame_counts
from segloop.core.instances import (
    connected_components,
    instances_from_class_map,
    instances_from_probabilities,
    per_frame,
    split_touching,
)
from segloop.core.metrics import match_instances
from segloop.core.targets import normalized_distance

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def disks(centres: list[tuple[int, int]], radius: int = 10, shape=(64, 96)) -> np.ndarray:
    """Labels with one disk per centre (later disks overwrite earlier ones)."""
    labels = np.zeros(shape, dtype=np.int32)
    for i, centre in enumerate(centres, start=1):
        labels[disk(centre, radius, shape=shape)] = i
    return labels


def three_class_probs(labels: np.ndarray, band: int = 2) -> np.ndarray:
    """Synthetic (3, H, W) probabilities: interior = eroded objects, border = the rest."""
    interior = np.zeros(labels.shape, dtype=bool)
    for i in range(1, labels.max() + 1):
        interior |= ndi.binary_erosion(labels == i, iterations=band)
    # pixels where two objects touch are border too
    touching = ndi.grey_dilation(labels, size=3) != ndi.grey_erosion(
        np.where(labels > 0, labels, labels.max() + 1), size=3
    )
    interior &= ~touching
    fg = labels > 0
    probs = np.zeros((3, *labels.shape), dtype=np.float32)
    probs[0] = np.where(fg, 0.05, 0.9)
    probs[1] = np.where(interior, 0.9, 0.05)
    probs[2] = 1.0 - probs[0] - probs[1]
    return probs


@pytest.fixture
def touching() -> np.ndarray:
    """Two disks of radius 10 overlapping by 4 pixels."""
    return disks([(32, 30), (32, 46)])


def test_three_separate_disks_counted() -> None:
    labels = disks([(15, 15), (40, 50), (20, 80)])
    probs = three_class_probs(labels)
    inst = instances_from_probabilities(probs)
    assert inst.dtype == np.int32
    assert inst.max() == 3 and set(np.unique(inst)) == {0, 1, 2, 3}
    assert frame_counts(inst)["count"].tolist() == [3]
    assert len(count_table(inst)["label"]) == 3
    assert connected_components(labels > 0).max() == 3
    assert instances_from_class_map(np.argmax(probs, axis=0)).max() == 3


def test_touching_disks(touching: np.ndarray) -> None:
    mask = touching > 0
    assert connected_components(mask).max() == 1
    probs = three_class_probs(touching)
    inst = instances_from_probabilities(probs)
    assert inst.max() == 2
    # the whole foreground is labelled, nothing leaks outside
    assert np.array_equal(inst > 0, mask)
    assert instances_from_class_map(np.argmax(probs, axis=0)).max() == 2
    assert split_touching(mask).max() == 2


def test_split_touching_keeps_single_disk() -> None:
    labels = split_touching(disks([(32, 40)], radius=12) > 0)
    assert labels.max() == 1


def test_split_touching_respects_input_labels() -> None:
    # two label values in one connected blob (a rectangle cut in half) stay two objects
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:25, 5:20] = 1
    labels[5:25, 20:35] = 2
    out = split_touching(labels, min_distance=20)
    for value in (1, 2):
        assert len(np.unique(out[labels == value])) == 1
    assert out.max() == 2


def test_unseeded_component_kept_and_min_size() -> None:
    labels = disks([(30, 30)], radius=10, shape=(60, 60))
    labels[50:52, 50:52] = 2  # a 4-pixel blob: foreground, but no interior at all
    probs = three_class_probs(labels)
    assert probs[1][50:52, 50:52].max() < 0.5
    assert instances_from_probabilities(probs).max() == 2
    assert instances_from_probabilities(probs, min_size=10).max() == 1
    assert connected_components(labels > 0, min_size=5).max() == 1
    assert split_touching(labels > 0, min_size=5).max() == 1


def test_min_peak_drops_weak_objects_and_keeps_confident_ones() -> None:
    labels = disks([(30, 30), (30, 70)], radius=10, shape=(60, 100))
    distance = normalized_distance(labels)
    distance[labels == 2] *= 0.55  # the network only half believes in object 2
    probs = three_class_probs(labels)
    assert instances_from_probabilities(probs, distance=distance).max() == 2
    kept = instances_from_probabilities(probs, distance=distance, min_peak=0.6)
    assert kept.max() == 1
    assert kept[30, 30] == 1 and kept[30, 70] == 0
    # an unseeded blob (peak below the seed threshold) goes too
    labels[50:54, 90:94] = 3
    probs = three_class_probs(labels)
    distance = normalized_distance(labels) * 0.4
    distance[labels == 1] /= 0.4
    assert instances_from_probabilities(probs, distance=distance).max() == 3
    assert instances_from_probabilities(probs, distance=distance, min_peak=0.5).max() == 1


def test_split_large_splits_a_shared_seed_but_not_single_objects() -> None:
    centres = [(20, 20), (20, 60), (20, 100), (60, 20), (60, 100)]
    labels = disks(centres, radius=9, shape=(90, 130))
    pair = disks([(62, 52), (62, 68)], radius=9, shape=(90, 130))  # two touching nuclei
    labels[pair > 0] = pair[pair > 0] + 5
    distance = normalized_distance(labels)
    # the network's distance does not dip between the pair down to the seed threshold
    rows, cols = np.ogrid[:90, :130]
    bridge = (pair > 0) & (np.abs(cols - 60) < 6) & (np.abs(rows - 62) < 3)
    distance[bridge] = np.maximum(distance[bridge], 0.55)
    probs = three_class_probs(labels > 0)
    merged = instances_from_probabilities(probs, seed_threshold=0.4, distance=distance)
    assert merged.max() == 6
    split = instances_from_probabilities(
        probs, seed_threshold=0.4, distance=distance, split_large=1.5
    )
    assert split.max() == 7
    assert match_instances(labels, split).tp == 7
    # one big nucleus among small ones stays whole: its seed never breaks up
    big = disks([(45, 60)], radius=25, shape=(90, 130))
    alone = labels.copy()
    alone[pair > 0] = 0
    alone[big > 0] = 9
    found = instances_from_probabilities(
        three_class_probs(alone > 0),
        seed_threshold=0.4,
        distance=normalized_distance(alone),
        split_large=1.5,
    )
    assert found.max() == 6


def test_min_seed_size_drops_tiny_seeds() -> None:
    probs = three_class_probs(disks([(30, 30)], shape=(60, 60)))
    probs[1, 30, 30] = 0.0  # nothing changes for a big seed
    probs[1, 10, 10] = 0.9  # a 1-pixel seed outside the foreground is ignored
    assert instances_from_probabilities(probs, min_seed_size=3).max() == 1


def test_per_frame_stack(touching: np.ndarray) -> None:
    stack = np.stack([touching > 0, np.zeros_like(touching, dtype=bool)])
    out = per_frame(split_touching, stack, min_distance=5)
    assert out.shape == stack.shape
    assert out[0].max() == 2 and out[1].max() == 0
    probs = np.stack([three_class_probs(touching)] * 2)
    assert per_frame(instances_from_probabilities, probs).max(axis=(1, 2)).tolist() == [2, 2]
    with pytest.raises(ValueError, match="stack"):
        per_frame(split_touching, touching)


@pytest.mark.shared_data
def test_real_masks_components_vs_watershed() -> None:
    mask_path = DATA / "stardist_dsb2018_sample" / "masks" / "img2d.tif"
    if not mask_path.is_file():
        pytest.skip("shared data not available")
    tifffile = pytest.importorskip("tifffile")
    gt = np.asarray(tifffile.imread(mask_path))[:128, :128].astype(np.int32)
    n_gt = len(np.unique(gt)) - 1
    # class map built from the ground truth: border = object pixels next to another label
    edges = ndi.grey_dilation(gt, size=3) != ndi.grey_erosion(gt, size=3)
    class_map = np.where(gt > 0, np.where(edges, 2, 1), 0)
    found = instances_from_class_map(class_map).max()
    assert found >= connected_components(gt > 0).max()
    assert abs(int(found) - n_gt) <= max(2, n_gt // 10)


def test_refine_outlines_keeps_coarse_objects_and_fine_outlines():
    from skimage.draw import disk as draw_disk

    from segloop.core.instances import refine_outlines

    truth = np.zeros((80, 120), np.int32)
    for label, (centre, radius) in enumerate((((40, 40), 20), ((40, 78), 19)), start=1):
        rr, cc = draw_disk(centre, radius, shape=truth.shape)
        truth[rr, cc] = label
    fine = np.zeros((3, *truth.shape), np.float32)
    fine[1] = truth > 0
    fine[0] = 1 - fine[1]
    fine[:, 5:9, 105:109] = [[[0]], [[1]], [[0]]]  # a speck only the fine pass "sees"
    # coarse pass: blocky 4x4 outlines, the two objects correctly split
    coarse_labels = np.kron(truth[::4, ::4], np.ones((4, 4), np.int32))
    coarse = np.zeros_like(fine)
    coarse[1] = coarse_labels > 0
    coarse[0] = 1 - coarse[1]
    refined = refine_outlines(coarse_labels, coarse, fine, 0.5, 0.5)
    assert refined.max() == 2  # the speck is dropped, the split is kept
    assert refined[5:9, 105:109].max() == 0
    coarse_iou = match_instances(truth, coarse_labels).mean_matched_iou
    assert match_instances(truth, refined).mean_matched_iou > max(0.97, coarse_iou)


def test_distance_map_splits_objects_the_interior_probability_merges() -> None:
    labels = disks([(32, 30), (32, 46)])  # two disks overlapping by 4 pixels
    probs = three_class_probs(labels)
    probs[1] = np.where(labels > 0, 0.9, 0.05)  # no border predicted at the contact
    probs[2] = 1.0 - probs[0] - probs[1]
    assert instances_from_probabilities(probs).max() == 1  # merged without a distance
    distance = normalized_distance(labels)
    split = instances_from_probabilities(probs, seed_threshold=0.5, distance=distance)
    assert split.max() == 2
    assert match_instances(labels, split).tp == 2
