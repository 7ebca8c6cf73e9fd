"""segloop predict on images cut into chunks: same objects as whole, Zarr/OME-Zarr, dask."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from segloop.cli import main
from segloop.core.imageio import read_image
from segloop.core.provenance import read_tiff_provenance

from .conftest import disks_image

zarr = pytest.importorskip("zarr")


def grid_of_disks(shape=(600, 560), step=40, seed=0):
    """Well separated disks on a jittered grid, many of them across 256-px chunk borders."""
    rng = np.random.default_rng(seed)
    centres, radii = [], []
    for y in range(20, shape[0] - 15, step):
        for x in range(20, shape[1] - 15, step):
            centres.append((y + int(rng.integers(-4, 5)), x + int(rng.integers(-4, 5))))
            radii.append(int(rng.integers(6, 10)))
    image, labels = disks_image(centres, radii, shape, seed=seed)
    return (image * 255).clip(0, 255).astype(np.uint8), labels


def matched_fraction(a: np.ndarray, b: np.ndarray, iou: float = 0.8) -> float:
    """Fraction of b's objects that one object of a covers with IoU >= ``iou``."""
    ids = [i for i in np.unique(b) if i]
    good = 0
    for i in ids:
        mask = b == i
        values, counts = np.unique(a[mask], return_counts=True)
        j = values[np.argmax(counts)]
        if j and (np.logical_and(mask, a == j).sum() / np.logical_or(mask, a == j).sum()) >= iou:
            good += 1
    return good / max(len(ids), 1)


@pytest.fixture
def big_image(tmp_path):
    image, labels = grid_of_disks()
    path = tmp_path / "in" / "slide.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, image, tile=(128, 128), compression="zlib")
    return path, labels


def test_chunked_tiff_matches_the_whole_image(disk_model, big_image, tmp_path):
    path, truth = big_image
    base = ["predict", "--model", str(disk_model), "--diameter", "native", str(path)]
    assert main([*base, "--out", str(tmp_path / "whole")]) == 0
    assert main([*base, "--chunk", "256", "--halo", "48", "--out", str(tmp_path / "chunks")]) == 0
    whole = read_image(tmp_path / "whole" / "slide_labels.tif")
    chunks = read_image(tmp_path / "chunks" / "slide_labels.tif")
    assert chunks.shape == whole.shape == truth.shape
    n_true = len(np.unique(truth)) - 1
    assert len(np.unique(whole)) - 1 == n_true  # the model finds every disk
    assert len(np.unique(chunks)) - 1 == n_true  # ...and so do the chunks: no piece, no twin
    assert matched_fraction(chunks, whole) == 1.0
    record = read_tiff_provenance(tmp_path / "chunks" / "slide_labels.tif")
    assert record["chunk"] == 256 and record["frames"][0]["windows"] == 9
    classes = read_image(tmp_path / "chunks" / "slide_classes.tif")
    assert set(np.unique(classes)) <= {0, 1, 2} and classes.shape == truth.shape


def test_zarr_output_is_ome_zarr_and_equals_the_tiff(disk_model, big_image, tmp_path):
    path, _ = big_image
    base = ["predict", "--model", str(disk_model), "--diameter", "native", "--chunk", "256"]
    assert main([*base, "--out", str(tmp_path / "t"), str(path)]) == 0
    assert main([*base, "--out-format", "zarr", "--out", str(tmp_path / "z"), str(path)]) == 0
    folder = tmp_path / "z" / "slide_labels.zarr"
    group = zarr.open_group(str(folder), mode="r")
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5" and ome["multiscales"][0]["datasets"][0]["path"] == "0"
    assert "image-label" in ome and group.attrs["segloop"]["source"] == "slide.tif"
    np.testing.assert_array_equal(group["0"][:], read_image(tmp_path / "t" / "slide_labels.tif"))
    assert (tmp_path / "z" / "slide_classes.zarr").is_dir()
    assert not list((tmp_path / "z").glob("*.partial"))


def _ome_zarr_image(folder, image, pixel_size=0.5):
    group = zarr.open_group(str(folder), mode="w", zarr_format=3)
    group.create_array("0", data=image, chunks=(128, 128))
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "yx"]
    scale = [{"type": "scale", "scale": [pixel_size, pixel_size]}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
        ],
    }


def test_ome_zarr_input_gets_a_labels_group_beside_the_image(disk_model, tmp_path):
    image, truth = grid_of_disks((300, 280))
    folder = tmp_path / "slide.zarr"
    _ome_zarr_image(folder, image)
    argv = ["predict", "--model", str(disk_model), "--diameter", "native", "--out-format", "zarr"]
    assert main([*argv, "--out", str(tmp_path / "out"), str(folder)]) == 0
    labels = zarr.open_group(str(folder / "labels" / "segloop"), mode="r")
    assert labels["0"].shape == truth.shape
    assert len(np.unique(labels["0"][:])) - 1 == len(np.unique(truth)) - 1
    listing = json.loads((folder / "labels" / "zarr.json").read_text())["attributes"]["ome"]
    assert listing["labels"] == ["segloop", "segloop-classes"]
    assert labels.attrs["segloop"]["pixel_size_um"] == [0.5, 0.5]
    axes = labels.attrs["ome"]["multiscales"][0]["axes"]
    assert axes[-1]["unit"] == "micrometer"


def test_a_stack_is_written_frame_by_frame(disk_model, tmp_path):
    frames = np.stack([grid_of_disks((300, 280), seed=s)[0] for s in range(3)])
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, frames, photometric="minisblack")
    argv = ["predict", "--model", str(disk_model), "--diameter", "native", "--out-format", "zarr"]
    assert main([*argv, "--chunk", "256", "--out", str(tmp_path / "out"), str(path)]) == 0
    labels = zarr.open_group(str(tmp_path / "out" / "movie_labels.zarr"), mode="r")["0"]
    assert labels.shape == frames.shape and labels.chunks[0] == 1
    for t in range(3):
        truth = grid_of_disks((300, 280), seed=t)[1]
        assert len(np.unique(labels[t])) - 1 == len(np.unique(truth)) - 1


def test_a_failed_run_leaves_no_output_that_looks_complete(
    disk_model, big_image, tmp_path, monkeypatch
):
    from segloop import batch_chunked

    path, _ = big_image
    calls = {"n": 0}
    real = batch_chunked._window_segmentation

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise MemoryError
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(batch_chunked, "_window_segmentation", failing)
    out = tmp_path / "out"
    argv = ["predict", "--model", str(disk_model), "--chunk", "256", "--out-format", "zarr"]
    assert main([*argv, "--out", str(out), str(path)]) == 1
    assert not list(out.glob("*")), "no partial or complete-looking output is left"


@pytest.mark.slow
def test_two_worker_local_cluster_gives_the_same_labels(disk_model, big_image, tmp_path):
    pytest.importorskip("distributed")
    path, _ = big_image
    base = ["predict", "--model", str(disk_model), "--diameter", "native", "--chunk", "256"]
    assert main([*base, "--out", str(tmp_path / "here"), str(path)]) == 0
    assert main([*base, "--dask", "local:2", "--out", str(tmp_path / "dask"), str(path)]) == 0
    here = read_image(tmp_path / "here" / "slide_labels.tif")
    there = read_image(tmp_path / "dask" / "slide_labels.tif")
    pairs = np.unique(np.stack([here.ravel(), there.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_count_of_a_chunked_image_equals_the_whole_image(disk_model, big_image, tmp_path):
    import csv

    path, truth = big_image
    base = ["count", "--model", str(disk_model), "--diameter", "native", "--pixel-size", "0.5"]
    whole = [*base, "--csv", str(tmp_path / "w.csv"), "--objects", str(tmp_path / "wo.csv")]
    chunks = [
        *base,
        "--chunk",
        "256",
        "--csv",
        str(tmp_path / "c.csv"),
        "--objects",
        str(tmp_path / "co.csv"),
    ]
    assert main([*whole, str(path)]) == 0
    assert main([*chunks, str(path)]) == 0
    count = next(csv.DictReader((tmp_path / "c.csv").open()))["count"]
    assert int(count) == len(np.unique(truth)) - 1
    assert count == next(csv.DictReader((tmp_path / "w.csv").open()))["count"]
    rows = list(csv.DictReader((tmp_path / "co.csv").open()))
    assert len(rows) == int(count) and len({r["label"] for r in rows}) == len(rows)
    areas = sorted(float(r["area_um2"]) for r in rows)
    whole_areas = sorted(float(r["area_um2"]) for r in csv.DictReader((tmp_path / "wo.csv").open()))
    np.testing.assert_allclose(areas, whole_areas, rtol=0.05)
    assert (tmp_path / "co.csv.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".segloop-count-")]


def test_level_auto_picks_the_level_where_objects_have_the_models_size(disk_model, tmp_path):
    from skimage.transform import downscale_local_mean

    from segloop.bigimage import choose_level
    from segloop.core.modelio import load_model

    image, truth = grid_of_disks((300, 280), step=40)
    big = np.kron(image, np.ones((2, 2), np.uint8))  # objects twice the model's size
    folder = tmp_path / "pyramid.zarr"
    group = zarr.open_group(str(folder), mode="w", zarr_format=3)
    group.create_array("0", data=big, chunks=(128, 128))
    group.create_array("1", data=downscale_local_mean(big, 2).astype(np.uint8), chunks=(128, 128))
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "yx"]
    datasets = [
        {
            "path": str(i),
            "coordinateTransformations": [{"type": "scale", "scale": [0.5 * 2**i] * 2}],
        }
        for i in range(2)
    ]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    model_diameter = load_model(str(disk_model)).diameter
    assert choose_level(folder, model_diameter, 2 * model_diameter) == 1
    assert choose_level(folder, model_diameter, model_diameter) == 0
    assert choose_level(folder, model_diameter, None) == 0
    diameter = f"{2 * model_diameter:.1f}"
    argv = ["predict", "--model", str(disk_model), "--diameter", diameter, "--level", "auto"]
    assert main([*argv, "--out-format", "zarr", "--out", str(tmp_path / "o"), str(folder)]) == 0
    labels = zarr.open_group(str(folder / "labels" / "segloop"), mode="r")
    assert labels["0"].shape == truth.shape  # level 1's grid
    assert labels.attrs["segloop"]["frames"][0]["level"] == 1
    assert len(np.unique(labels["0"][:])) - 1 == len(np.unique(truth)) - 1


def test_a_diameter_in_micrometres_works_on_the_chunked_path(disk_model, big_image, tmp_path):
    path, truth = big_image
    from segloop.core.modelio import load_model

    model_diameter = load_model(str(disk_model)).diameter
    argv = ["predict", "--model", str(disk_model), "--chunk", "256", "--pixel-size", "0.5"]
    microns = f"{model_diameter * 0.5:.2f}um"  # the model's own size: no rescaling
    assert main([*argv, "--diameter", microns, "--out", str(tmp_path / "o"), str(path)]) == 0
    labels = read_image(tmp_path / "o" / "slide_labels.tif")
    assert len(np.unique(labels)) - 1 == len(np.unique(truth)) - 1
    record = read_tiff_provenance(tmp_path / "o" / "slide_labels.tif")
    assert abs(record["settings"]["diameter"] - model_diameter) < 0.05


def test_writing_again_replaces_the_zarr_output_and_keeps_one_whole(
    disk_model, big_image, tmp_path, monkeypatch
):
    """A second run over an older Zarr output renames the old one aside before moving
    the new one in: when that move fails, the old output is put back, whole."""
    from segloop import bigimage

    path, _ = big_image
    out = tmp_path / "out"
    argv = ["predict", "--model", str(disk_model), "--chunk", "256", "--out-format", "zarr"]
    assert main([*argv, "--out", str(out), str(path)]) == 0
    first = sorted(p.name for p in out.iterdir())
    old_labels = np.asarray(zarr.open_group(str(out / "slide_labels.zarr"), mode="r")["0"])
    real_replace = bigimage.os.replace

    def failing(source, target):  # os.replace is global: fail only the final move
        if str(source).endswith("_labels.zarr.partial"):
            raise OSError("disk full")
        return real_replace(source, target)

    monkeypatch.setattr(bigimage.os, "replace", failing)
    assert main([*argv, "--out", str(out), str(path)]) == 1
    monkeypatch.setattr(bigimage.os, "replace", real_replace)
    assert sorted(p.name for p in out.iterdir()) == first  # nothing aside, nothing partial
    again = np.asarray(zarr.open_group(str(out / "slide_labels.zarr"), mode="r")["0"])
    np.testing.assert_array_equal(again, old_labels)
    assert main([*argv, "--out", str(out), str(path)]) == 0
    assert sorted(p.name for p in out.iterdir()) == first


def test_a_level_the_zarr_does_not_have_is_one_clear_error(disk_model, tmp_path, capsys):
    image, _ = grid_of_disks((300, 280))
    store = tmp_path / "plain.zarr"
    zarr.open_array(str(store), mode="w", shape=image.shape, dtype=image.dtype)[:] = image
    argv = ["predict", "--model", str(disk_model), "--level", "3", "--out", str(tmp_path / "o")]
    assert main([*argv, str(store)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 resolution level" in err[0] and "level 3" in err[0]


def test_inputs_whose_outputs_would_share_a_name_are_refused(disk_model, tmp_path, capsys):
    image, _ = grid_of_disks((300, 280))
    tifffile.imwrite(tmp_path / "s.tif", image)
    store = tmp_path / "s.ome.zarr"
    zarr.open_array(str(store), mode="w", shape=image.shape, dtype=image.dtype)[:] = image
    argv = ["predict", "--model", str(disk_model), "--out", str(tmp_path / "o")]
    assert main([*argv, str(tmp_path / "s.tif"), str(store)]) == 1
    assert "would collide" in capsys.readouterr().err


def test_a_file_named_tif_that_is_no_tiff_names_the_file(disk_model, tmp_path, capsys):
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"this is not a tiff at all")
    argv = ["predict", "--model", str(disk_model), "--out", str(tmp_path / "o"), str(fake)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fake.tif" in err[0]
