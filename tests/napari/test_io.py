"""Reader, writer and sample data of the plugin."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from segloop.napari._reader import napari_get_reader
from segloop.napari._sample_data import ecoli, fibroblasts, fluorescence, histology
from segloop.napari._writer import write_labels

from .conftest import THREE_DISKS, disks


def test_reads_lzw_multipage_tiff_as_stack(tmp_path):
    stack = np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20)
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, stack, compression="lzw", photometric="minisblack")
    reader = napari_get_reader(str(path))
    [(data, meta, kind)] = reader(str(path))
    assert kind == "image" and meta["name"] == "movie" and not meta["rgb"]
    np.testing.assert_array_equal(data, stack)


def test_reads_png_rgb_and_jpeg(tmp_path):
    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.jpg")
    [(data, meta, kind)] = napari_get_reader(str(tmp_path / "colour.png"))(
        str(tmp_path / "colour.png")
    )
    assert data.shape == (20, 24, 3) and meta["rgb"] and kind == "image"
    [(data, meta, _)] = napari_get_reader(str(tmp_path / "grey.jpg"))(str(tmp_path / "grey.jpg"))
    assert data.shape == (20, 24) and not meta["rgb"]


def test_reads_folder_of_frames_as_one_stack(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in (1, 2, 10):  # natural order: 1, 2, 10
        Image.fromarray(np.full((16, 16), t, np.uint8)).save(folder / f"t{t}.png")
    (folder / "notes.txt").write_text("not an image")
    [(data, meta, kind)] = napari_get_reader(str(folder))(str(folder))
    assert data.shape == (3, 16, 16) and meta["name"] == "frames" and kind == "image"
    assert list(data[:, 0, 0]) == [1, 2, 10]


def test_reader_declines_other_files(tmp_path):
    (tmp_path / "table.csv").write_text("a,b\n")
    assert napari_get_reader(str(tmp_path / "table.csv")) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert napari_get_reader(str(empty)) is None


def test_labels_writer_round_trip(tmp_path):
    labels = np.stack([disks(THREE_DISKS), disks(THREE_DISKS[:2])])
    [written] = write_labels(str(tmp_path / "cells_labels"), labels, {})
    assert written.endswith("cells_labels.tif")
    [(data, meta, kind)] = napari_get_reader(written)(written)
    assert kind == "labels" and meta["name"] == "cells_labels"
    assert data.dtype == np.uint8
    np.testing.assert_array_equal(data, labels)


def test_writer_through_napari(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(disks(THREE_DISKS) * 300, name="big")  # needs uint16
    path = tmp_path / "big_masks.tif"
    layer.save(str(path), plugin="napari-segloop")
    np.testing.assert_array_equal(tifffile.imread(path), layer.data)
    assert tifffile.imread(path).dtype == np.uint16


@pytest.mark.parametrize(
    "factory, shape",
    [
        (fluorescence, (256, 256)),
        (histology, (256, 320)),
        (ecoli, (320, 320)),
        (fibroblasts, (512, 512)),
    ],
)
def test_sample_data_functions(factory, shape):
    (image, image_meta, image_kind), (masks, masks_meta, masks_kind) = factory()
    assert image_kind == "image" and masks_kind == "labels"
    assert image.shape[:2] == shape == masks.shape
    assert masks.max() > 10 and not masks_meta["visible"]


def test_open_sample_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloop", "fluorescence")
    assert [layer.name for layer in viewer.layers] == [
        "nuclei fluorescence",
        "nuclei fluorescence masks",
    ]
    assert int(viewer.layers["nuclei fluorescence masks"].data.max()) == 57


def test_reader_puts_the_pixel_size_in_scale_and_units(make_napari_viewer, tmp_path):
    path = tmp_path / "nuclei.tif"
    tifffile.imwrite(path, np.zeros((3, 16, 20), np.uint8), imagej=True, resolution=(4.0, 4.0),
                     metadata={"unit": "micron", "axes": "TYX"})  # fmt: skip
    [(data, meta, kind)] = napari_get_reader(str(path))(str(path))
    assert meta["scale"] == (1.0, 0.25, 0.25)
    assert meta["units"] == ("pixel", "micrometer", "micrometer")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-segloop")
    from segloop.napari.adapters import layer_pixel_size

    assert layer_pixel_size(layer) == (0.25, 0.25)


def test_writer_records_provenance_and_pixel_size(make_napari_viewer, tmp_path):
    from segloop.core.provenance import read_tiff_provenance
    from segloop.core.units import read_pixel_size
    from segloop.napari.adapters import PROVENANCE_KEY

    viewer = make_napari_viewer()
    layer = viewer.add_labels(disks(THREE_DISKS), name="cells", scale=(0.5, 0.5))
    layer.metadata[PROVENANCE_KEY] = {"model": {"name": "nuclei"}, "settings": {"tile": 256}}
    path = tmp_path / "cells_labels.tif"
    layer.save(str(path), plugin="napari-segloop")
    record = read_tiff_provenance(path)
    assert record["model"] == {"name": "nuclei"} and record["settings"] == {"tile": 256}
    assert record["pixel_size_um"] == [0.5, 0.5]
    assert read_pixel_size(path) == (0.5, 0.5)


def test_a_multichannel_image_opens_as_one_layer_per_channel(make_napari_viewer, tmp_path):
    """A 2-channel ImageJ hyperstack (T, C, Y, X) must not become 2x as many frames, and a
    (Y, X, 2) array must not become Y frames of X x 2 pixels."""
    movie = np.zeros((3, 2, 32, 40), np.uint16)
    movie[:, 1] = 7  # channel 1 is the bright one
    tifffile.imwrite(tmp_path / "movie.tif", movie, imagej=True, metadata={"axes": "TCYX"})
    pair = np.zeros((32, 40, 2), np.uint8)
    pair[..., 0] = 5
    tifffile.imwrite(tmp_path / "pair.tif", pair)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "movie.tif"), plugin="napari-segloop")
    viewer.open(str(tmp_path / "pair.tif"), plugin="napari-segloop")
    layers = {layer.name: layer for layer in viewer.layers}
    assert sorted(layers) == ["movie ch0", "movie ch1", "pair ch0", "pair ch1"]
    assert layers["movie ch1"].data.shape == (3, 32, 40) and layers["movie ch1"].data.max() == 7
    assert layers["pair ch0"].data.shape == (32, 40) and layers["pair ch0"].data.max() == 5


def _palette_mask(path, ids: np.ndarray) -> None:
    """``ids`` saved as a palette (indexed-colour) PNG, as many mask tools write them."""
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    image.save(path)


def test_a_palette_png_mask_opens_as_its_ids(tmp_path):
    """Palette masks used to be read as RGB colours: a (H, W, 3) 'labels' layer with
    values 0/255 instead of object ids 1 and 2. An RGB picture of labels opens as an
    image, not as a 3-slice labels volume."""
    ids = np.zeros((64, 64), np.uint8)
    ids[5:20, 5:20], ids[30:50, 30:50] = 1, 2
    _palette_mask(tmp_path / "cells_labels.png", ids)
    ((data, meta, kind),) = napari_get_reader(str(tmp_path / "cells_labels.png"))(
        str(tmp_path / "cells_labels.png")
    )
    assert kind == "labels" and data.shape == (64, 64)
    np.testing.assert_array_equal(data, ids)
    _palette_mask(tmp_path / "cells.png", ids)  # not named as labels: a colour picture
    ((data, meta, kind),) = napari_get_reader(str(tmp_path / "cells.png"))(
        str(tmp_path / "cells.png")
    )
    assert kind == "image" and data.shape == (64, 64, 3)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "rgb_masks.png")
    ((data, meta, kind),) = napari_get_reader(str(tmp_path / "rgb_masks.png"))(
        str(tmp_path / "rgb_masks.png")
    )
    assert kind == "image" and meta["rgb"]
    folder = tmp_path / "movie_masks"  # a folder of palette masks: a stack of ids
    folder.mkdir()
    for t in range(3):
        _palette_mask(folder / f"t{t}.png", np.roll(ids, t, axis=1))
    ((data, meta, kind),) = napari_get_reader(str(folder))(str(folder))
    assert kind == "labels" and data.shape == (3, 64, 64)
    np.testing.assert_array_equal(data[2], np.roll(ids, 2, axis=1))


def test_the_writer_never_wraps_large_ids(tmp_path):
    labels = np.zeros((16, 16), np.int64)
    labels[2:5, 2:5], labels[8:12, 8:12] = 2**32 + 5, 5
    (path,) = write_labels(str(tmp_path / "big"), labels, {})
    back = tifffile.imread(path)
    assert back.dtype == np.uint64
    np.testing.assert_array_equal(back, labels)
