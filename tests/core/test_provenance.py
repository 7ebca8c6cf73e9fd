"""Provenance: TIFF outputs and CSV side files say how they were made."""

from __future__ import annotations

import json

import numpy as np

from segloop import __version__
from segloop.core.counting import count_table, write_csv
from segloop.core.imageio import read_image, write_tiff
from segloop.core.provenance import provenance, read_tiff_provenance, side_file, tiff_metadata
from segloop.core.units import read_pixel_size


def test_tiff_keeps_shape_provenance_and_pixel_size(tmp_path):
    stack = np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 3, 5, 6)
    record = provenance({"name": "nuclei", "version": 3}, {"diameter": 18.0}, (0.5, 0.5), "a.tif")
    path = tmp_path / "out.tif"
    write_tiff(path, stack, metadata=tiff_metadata(record), pixel_size=(0.5, 0.5))
    np.testing.assert_array_equal(read_image(path), stack)
    found = read_tiff_provenance(path)
    assert found["model"] == {"name": "nuclei", "version": 3}
    assert found["settings"] == {"diameter": 18.0} and found["source"] == "a.tif"
    assert found["segloop_version"] == __version__ and found["pixel_size_um"] == [0.5, 0.5]
    assert read_pixel_size(path) == (0.5, 0.5)


def test_a_plain_tiff_has_no_provenance(tmp_path):
    path = tmp_path / "plain.tif"
    write_tiff(path, np.zeros((4, 4), np.uint8))
    assert read_tiff_provenance(path) is None


def test_csv_side_file_has_the_record_and_column_units(tmp_path):
    labels = np.zeros((20, 20), np.int32)
    labels[2:6, 2:8] = 1
    path = tmp_path / "objects.csv"
    record = provenance(settings={"min_size": 5}, pixel_size=(0.5, 0.5))
    write_csv(count_table(labels, pixel_size=(0.5, 0.5)), path, {"image": "a.tif"}, record)
    content = json.loads(side_file(path).read_text())
    assert content["segloop"]["settings"] == {"min_size": 5}
    units = content["columns"]
    assert units["area"] == "px^2" and units["area_um2"] == "um^2" and units["image"] == ""
    assert units["centroid_x_um"] == "um"
