"""Chunked segmentation: every object comes out once, whole, with one id, whatever the cut."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk, rectangle
from skimage.measure import label as connected

from segloop.core.chunked import (
    ChunkPlan,
    count_ids,
    match_labels,
    sample_windows,
    sampled_intensity_range,
    stitch_iter,
)
from segloop.core.progress import run_to_end


def components_of(mask: np.ndarray):
    """A 'segmenter' that labels the connected components of ``mask`` in each window."""

    def segment_window(window, core):
        y0, y1, x0, x1 = window
        yield from ()
        return connected(mask[y0:y1, x0:x1], connectivity=1).astype(np.int32)

    return segment_window


def stitched(mask: np.ndarray, chunk: int, halo: int) -> tuple[np.ndarray, object]:
    plan = ChunkPlan(*mask.shape, chunk=chunk, halo=halo)
    out = np.zeros(mask.shape, np.uint32)
    state = run_to_end(stitch_iter(plan, components_of(mask), out))
    return out, state


def same_up_to_relabelling(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b split the pixels into the same objects."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def blobs_across_borders(shape=(300, 260), chunk=100, radius=9) -> np.ndarray:
    """Disks centred on every chunk border, on every corner and inside the cores."""
    mask = np.zeros(shape, bool)
    for y in range(chunk, shape[0], chunk):
        for x in range(30, shape[1], 60):
            mask[disk((y, x), radius, shape=shape)] = True  # across a horizontal border
    for x in range(chunk, shape[1], chunk):
        for y in range(50, shape[0], 60):
            mask[disk((y, x), radius, shape=shape)] = True  # across a vertical border
    for y in range(chunk, shape[0], chunk):
        for x in range(chunk, shape[1], chunk):
            mask[disk((y, x), radius, shape=shape)] = True  # on a corner
    mask[disk((20, 20), radius, shape=shape)] = True
    return mask


@pytest.mark.parametrize("chunk, halo", [(100, 24), (64, 24), (128, 40), (300, 0)])
def test_objects_across_borders_and_corners_come_out_once_and_whole(chunk, halo):
    mask = blobs_across_borders()
    out, _ = stitched(mask, chunk, halo)
    whole = connected(mask, connectivity=1)
    assert count_ids(ChunkPlan(*mask.shape, chunk=chunk, halo=halo), out) == whole.max()
    assert same_up_to_relabelling(out, whole)


def test_touching_objects_stay_apart():
    mask = np.zeros((200, 200), bool)
    mask[40:60, 80:100] = True
    mask[40:60, 101:120] = True  # one background column apart, across the border at 100
    out, _ = stitched(mask, 100, 20)
    assert len(np.unique(out[out > 0])) == 2


def test_objects_larger_than_the_halo_are_joined_when_the_windows_agree():
    mask = np.zeros((120, 400), bool)
    mask[50:60, 10:390] = True  # a bar across four chunks, far longer than the halo
    out, state = stitched(mask, 100, 8)
    assert len(np.unique(out[out > 0])) == 1
    assert state.objects_joined == 3


def test_ids_given_twice_are_united_and_relabelled():
    # a U: its two arms reach the top cores separately; the bar below joins them
    mask = np.zeros((200, 200), bool)
    rr, cc = rectangle((10, 60), end=(150, 75))
    mask[rr, cc] = True
    rr, cc = rectangle((10, 125), end=(150, 140))
    mask[rr, cc] = True
    rr, cc = rectangle((140, 60), end=(150, 140))
    mask[rr, cc] = True
    out, state = stitched(mask, 100, 12)
    assert state.unions.merged
    assert len(np.unique(out[out > 0])) == 1
    assert same_up_to_relabelling(out, connected(mask, connectivity=1))


def test_disagreeing_windows_cut_an_object_into_pieces_never_into_duplicates():
    """A window that sees only a sliver of a large object may label it differently; the
    documented outcome is pieces with their own ids, each pixel written once."""
    mask = np.zeros((100, 200), bool)
    mask[20:80, 20:180] = True

    def disagreeing(window, core):
        y0, y1, x0, x1 = window
        yield from ()
        labels = connected(mask[y0:y1, x0:x1], connectivity=1).astype(np.int32)
        if x0 > 0:  # the right window cuts off the top third of the object
            top = labels[: (y1 - y0) // 3]
            top[top > 0] = 7
        return labels

    plan = ChunkPlan(100, 200, chunk=100, halo=10)
    out = np.zeros((100, 200), np.uint32)
    run_to_end(stitch_iter(plan, disagreeing, out))
    assert np.all((out > 0) == mask)  # every object pixel written, nothing outside
    assert len(np.unique(out[out > 0])) == 2  # the right window's top third is apart


def test_match_needs_a_mutual_majority():
    local = np.array([[1, 1, 1, 1], [2, 2, 0, 0]])
    written = np.array([[5, 5, 5, 6], [6, 6, 6, 6]])
    mask = np.ones_like(local, bool)
    assert match_labels(local, written, mask) == {1: 5}  # 2 covers only 2 of 6's 5 pixels


def test_sampled_range_reads_only_windows_of_a_large_frame():
    reads = []
    image = np.random.default_rng(0).integers(0, 200, (4000, 5000)).astype(np.float32)

    def read(box):
        reads.append(box)
        y0, y1, x0, x1 = box
        return image[y0:y1, x0:x1]

    (low, high), invert = sampled_intensity_range(read, 4000, 5000, 1.0, 99.8, "auto")
    assert sum((b[1] - b[0]) * (b[3] - b[2]) for b in reads) <= 16 * 512 * 512
    assert low == pytest.approx(2, abs=1) and high == pytest.approx(199, abs=1)
    assert not invert
    assert sample_windows(100, 120) == [(0, 100, 0, 120)]  # a small frame: all of it


def test_window_measurements_equal_the_whole_image_table():
    from segloop.core.chunked_counting import measure_chunked
    from segloop.core.counting import count_table

    rng = np.random.default_rng(3)
    labels = np.zeros((330, 290), np.int32)
    for i, (y, x) in enumerate(rng.integers(5, 285, (60, 2)), start=1):
        labels[disk((y, x), int(rng.integers(4, 12)), shape=labels.shape)] = i
    rr, cc = rectangle((40, 10), end=(300, 60))  # far larger than the margin
    labels[rr, cc] = 99
    intensity = rng.random(labels.shape + (2,))
    plan = ChunkPlan(*labels.shape, chunk=100, halo=16)
    parts = list(
        measure_chunked(plan, labels, lambda b: intensity[b[0] : b[1], b[2] : b[3]], (0.5, 0.5), 20)
    )
    got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    want = count_table(labels, intensity, (0.5, 0.5))
    assert sorted(got["label"]) == sorted(want["label"])  # every object once
    order_got, order_want = np.argsort(got["label"]), np.argsort(want["label"])
    for key in want:
        np.testing.assert_allclose(got[key][order_got], want[key][order_want], err_msg=key)


def test_csv_parts_are_joined_under_one_header(tmp_path):
    import csv

    from segloop.core.chunked_counting import CsvStream, concat_csvs

    first = CsvStream(tmp_path / "a.csv", {"image": "a.tif"})
    first.write({"label": np.array([1, 2]), "area": np.array([10, 20])})
    first.close()
    second = CsvStream(tmp_path / "b.csv", {"image": "b.tif"})
    second.write({"label": np.array([1]), "area": np.array([5]), "area_um2": np.array([1.25])})
    second.close()
    aborted = CsvStream(tmp_path / "c.csv")
    aborted.write({"label": np.array([1])})
    aborted.abort()
    assert not (tmp_path / "c.csv").exists() and not list(tmp_path.glob(".c.csv*"))
    assert concat_csvs([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "all.csv") == 3
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert [r["image"] for r in rows] == ["a.tif", "a.tif", "b.tif"]
    assert rows[0]["area_um2"] == "nan" and rows[2]["area_um2"] == "1.25"
