"""Tests for segloop.core.counting."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from segloop.core.counting import TABLE_COLUMNS, count_table, frame_counts, write_csv

from .test_instances import disks


def test_count_table_rectangle() -> None:
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[2:6, 3:11] = 5  # 4 x 8 rectangle
    intensity = np.zeros((20, 30), dtype=np.float32)
    intensity[2:6, 3:11] = 7.0
    table = count_table(labels, intensity)
    assert tuple(table) == TABLE_COLUMNS
    assert table["label"].tolist() == [5]
    assert table["frame"].tolist() == [0]
    assert table["area"].tolist() == [32]
    assert table["centroid_y"][0] == pytest.approx(3.5)
    assert table["centroid_x"][0] == pytest.approx(6.5)
    bbox = [table[k][0] for k in ("bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")]
    assert bbox == [2, 3, 6, 11]
    assert table["equivalent_diameter"][0] == pytest.approx(np.sqrt(4 * 32 / np.pi))
    assert table["mean_intensity"][0] == pytest.approx(7.0)
    assert np.isnan(count_table(labels)["mean_intensity"][0])
    with pytest.raises(ValueError, match="same shape"):
        count_table(labels, intensity[:10])


def test_stack_table_and_frame_counts_with_empty_frame() -> None:
    frame0 = disks([(15, 15), (40, 50)])
    stack = np.stack([frame0, np.zeros_like(frame0), disks([(30, 30)])])
    counts = frame_counts(stack)
    assert counts["frame"].tolist() == [0, 1, 2]
    assert counts["count"].tolist() == [2, 0, 1]
    table = count_table(stack)
    assert table["frame"].tolist() == [0, 0, 2]
    assert table["label"].tolist() == [1, 2, 1]
    empty = count_table(np.zeros((10, 10), dtype=np.int32))
    assert all(len(v) == 0 for v in empty.values())


def test_write_csv_round_trip(tmp_path: Path) -> None:
    labels = disks([(15, 15), (40, 50)])
    table = count_table(labels, labels.astype(float) * 1.2345678)
    path = tmp_path / "sub" / "counts.csv"
    write_csv(table, path, extra_columns={"image": "a.tif"})
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", *TABLE_COLUMNS]
    assert len(rows) == 2
    assert rows[0]["image"] == "a.tif"
    assert int(rows[1]["label"]) == 2
    assert int(rows[0]["area"]) == table["area"][0]
    assert rows[1]["mean_intensity"] == "2.46914"  # 6 significant digits
    assert float(rows[0]["centroid_y"]) == pytest.approx(table["centroid_y"][0], rel=1e-5)
    assert [p.name for p in path.parent.iterdir()] == ["counts.csv"]  # no temp file left
    write_csv(count_table(labels), path)  # overwrite; NaN column
    with open(path, newline="") as handle:
        assert next(csv.DictReader(handle))["mean_intensity"] == "nan"
    with pytest.raises(ValueError, match="same length"):
        write_csv({"a": np.arange(2), "b": np.arange(3)}, path)


def test_shape_measurements_of_a_rectangle() -> None:
    labels = np.zeros((30, 40), np.int32)
    labels[5:15, 5:25] = 1  # 10 x 20 rectangle
    table = count_table(labels)
    assert table["solidity"][0] == pytest.approx(1.0)
    assert 0.8 < table["eccentricity"][0] < 0.9  # sqrt(1 - (10/20)^2) = 0.866
    assert table["perimeter"][0] == pytest.approx(2 * (9 + 19), rel=0.05)


def test_intensity_per_channel_and_in_micrometres() -> None:
    labels = np.zeros((20, 20), np.int32)
    labels[2:6, 2:8] = 1
    image = np.zeros((20, 20, 3))
    image[..., 0], image[..., 1], image[..., 2] = 1.0, 2.0, 3.0
    image[2, 2, 2] = 9.0
    table = count_table(labels, image, pixel_size=(0.5, 0.25))
    assert table["mean_intensity"][0] == 1.0  # the first channel
    assert table["mean_intensity_ch1"][0] == 2.0
    assert table["max_intensity_ch2"][0] == 9.0 and table["min_intensity_ch2"][0] == 3.0
    assert table["area_um2"][0] == pytest.approx(24 * 0.125)
    assert table["centroid_y_um"][0] == pytest.approx(3.5 * 0.5)
    assert table["centroid_x_um"][0] == pytest.approx(4.5 * 0.25)
    assert table["equivalent_diameter_um"][0] == pytest.approx(2 * np.sqrt(3.0 / np.pi))
    assert "area_um2" not in count_table(labels)
