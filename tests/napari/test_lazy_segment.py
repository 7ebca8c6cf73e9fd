"""Segment widget on zarr, dask and multiscale layers: chunk by chunk into a lazy layer."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.napari._segment_widget import SegmentWidget

from ..test_chunked_predict import grid_of_disks
from .conftest import errors, wait_idle

zarr = pytest.importorskip("zarr")


@pytest.fixture
def segment(dock, disk_model, tmp_path):
    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(disk_model)
    widget.size_combo.setCurrentText("native scale")
    widget.results_folder = tmp_path / "results"
    return viewer, widget


def _zarr_image(tmp_path, image):
    array = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=image.shape,
                            chunks=(128, 128), dtype=image.dtype)  # fmt: skip
    array[:] = image
    return array


def test_a_zarr_layer_gives_a_lazy_labels_layer_saved_on_disk(segment, qtbot, notes, tmp_path):
    viewer, widget = segment
    image, truth = grid_of_disks((300, 280))
    layer = viewer.add_image(_zarr_image(tmp_path, image), name="slide", scale=(0.5, 0.5))
    widget.image_combo.set_layer(layer)
    assert widget.run() is not None
    wait_idle(qtbot, widget, timeout=120_000)
    assert not errors(notes)
    out = viewer.layers["slide instances"]
    assert isinstance(out.data, zarr.Array)  # lazy: napari reads what it draws
    assert len(np.unique(out.data[:])) - 1 == len(np.unique(truth)) - 1
    np.testing.assert_array_equal(out.scale, layer.scale)
    [folder] = (tmp_path / "results").iterdir()
    assert folder.suffix == ".zarr" and out.metadata["segloop_zarr"] == str(folder)
    # an edit goes straight to the Zarr on disk
    out.data[0:3, 0:3] = 77
    assert (zarr.open_group(str(folder), mode="r")["0"][0:3, 0:3] == 77).all()
    # running again never replaces the edited layer
    widget.run()
    wait_idle(qtbot, widget, timeout=120_000)
    assert "slide instances [1]" in [other.name for other in viewer.layers]
    assert (out.data[0:3, 0:3] == 77).all()  # the second run went to a new Zarr
    assert len(list((tmp_path / "results").iterdir())) == 2


def test_multiscale_and_dask_layers_are_segmented_at_full_resolution(segment, qtbot, notes):
    da = pytest.importorskip("dask.array")
    viewer, widget = segment
    image, truth = grid_of_disks((256, 240))
    layer = viewer.add_image([da.from_array(image, chunks=64), image[::2, ::2]], name="pyramid",
                             multiscale=True)  # fmt: skip
    widget.image_combo.set_layer(layer)
    widget.run()
    wait_idle(qtbot, widget, timeout=120_000)
    assert not errors(notes)
    out = viewer.layers["pyramid instances"]
    assert out.data.shape == image.shape
    assert len(np.unique(out.data[:])) - 1 == len(np.unique(truth)) - 1


def test_cancel_leaves_no_result(segment, qtbot, tmp_path):
    viewer, widget = segment
    image, _ = grid_of_disks((600, 560))
    viewer.add_image(_zarr_image(tmp_path, image), name="slide")
    job = widget.run()
    job.cancel()
    wait_idle(qtbot, widget, timeout=120_000)
    assert "slide instances" not in [layer.name for layer in viewer.layers]
    results = tmp_path / "results"
    assert not results.exists() or not list(results.iterdir())
