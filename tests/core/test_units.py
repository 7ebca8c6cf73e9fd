"""Pixel sizes read from OME-TIFF, ImageJ TIFF, TIFF tags and OME-Zarr; lengths parsed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from segloop.core.units import (
    length_in_micrometres,
    parse_length,
    parse_pixel_size,
    read_pixel_size,
)


@pytest.mark.parametrize(
    "text, expected",
    [("18", (18.0, None)), ("18px", (18.0, None)), ("12um", (12.0, "um")), ("12 µm", (12.0, "µm"))],
)
def test_parse_length(text, expected):
    assert parse_length(text) == expected


@pytest.mark.parametrize("text", ["", "um", "-3um", "12 parsecs", "0", "nan"])
def test_bad_lengths_are_refused(text):
    with pytest.raises(ValueError):
        parse_length(text)


def test_lengths_convert_to_micrometres():
    assert length_in_micrometres("12um") == 12.0
    assert length_in_micrometres("650nm") == pytest.approx(0.65)
    assert length_in_micrometres("0.5mm") == 500.0
    assert length_in_micrometres("30") is None  # pixels
    assert parse_pixel_size("0.65") == (0.65, 0.65)
    assert parse_pixel_size("650nm") == pytest.approx((0.65, 0.65))
    assert parse_pixel_size("0.5,0.25") == (0.5, 0.25)


def test_ome_tiff_physical_size_with_its_unit(tmp_path):
    path = tmp_path / "ome.ome.tif"
    metadata = {
        "axes": "YX",
        "PhysicalSizeX": 325.0,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 330.0,
        "PhysicalSizeYUnit": "nm",
    }
    tifffile.imwrite(path, np.zeros((8, 9), np.uint16), ome=True, metadata=metadata)
    assert read_pixel_size(path) == pytest.approx((0.33, 0.325))


def test_ome_tiff_default_unit_is_micrometre(tmp_path):
    path = tmp_path / "ome.ome.tif"
    metadata = {"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    tifffile.imwrite(path, np.zeros((8, 9), np.uint16), ome=True, metadata=metadata)
    assert read_pixel_size(path) == pytest.approx((0.5, 0.5))


@pytest.mark.parametrize("unit, factor", [("micron", 1.0), ("\\u00B5m", 1.0), ("nm", 1e-3)])
def test_imagej_tiff_resolution_and_unit(tmp_path, unit, factor):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 8, 9), np.uint8),
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.4),  # pixels per unit, x then y
        metadata={"unit": unit, "axes": "TYX"},
    )
    assert read_pixel_size(path) == pytest.approx((0.4 * factor, 0.2 * factor))


def test_tiff_resolution_in_centimetres_is_read_and_inches_are_ignored(tmp_path):
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, np.zeros((8, 9), np.uint8), resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")  # fmt: skip
    assert read_pixel_size(cm) == pytest.approx((0.5, 0.5))
    inch = tmp_path / "inch.tif"
    tifffile.imwrite(inch, np.zeros((8, 9), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert read_pixel_size(inch) is None
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((8, 9), np.uint8))
    assert read_pixel_size(plain) is None


def test_png_has_no_pixel_size(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(path)
    assert read_pixel_size(path) is None


def _multiscales(unit: str = "micrometer") -> dict:
    axes = [{"name": "c", "type": "channel"}]
    axes += [{"name": a, "type": "space", "unit": unit} for a in ("y", "x")]
    datasets = [
        {"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.25 * 2**level, 0.2 * 2**level]}]}
        for level in range(2)
    ]  # fmt: skip
    return {"multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]}


def test_ome_zarr_v04_scale_of_level_0(tmp_path):
    folder = tmp_path / "image.zarr"
    folder.mkdir()
    (folder / ".zattrs").write_text(json.dumps(_multiscales()))
    assert read_pixel_size(folder) == pytest.approx((0.25, 0.2))


def test_ome_zarr_v05_zarr_json_in_nanometres(tmp_path):
    folder = tmp_path / "image.zarr"
    folder.mkdir()
    content = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"ome": _multiscales("nanometer")},
    }
    (folder / "zarr.json").write_text(json.dumps(content))
    assert read_pixel_size(folder) == pytest.approx((0.25e-3, 0.2e-3))


def test_ome_zarr_without_units_gives_no_size(tmp_path):
    folder = tmp_path / "image.zarr"
    folder.mkdir()
    attrs = _multiscales()
    for axis in attrs["multiscales"][0]["axes"]:
        axis.pop("unit", None)
    (folder / ".zattrs").write_text(json.dumps(attrs))
    assert read_pixel_size(folder) is None
