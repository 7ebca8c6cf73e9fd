"""The command line never writes over its inputs or over files it did not write, and
refuses options it would otherwise ignore (``--level`` on a TIFF, ``--frames`` out of
range), each with one line and exit status 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segloop.cli import main

from .conftest import disks_image


@pytest.fixture
def files(tmp_path) -> Path:
    """``a.tif`` (three disks) and ``mask.tif`` (their labels) in ``tmp_path``."""
    image, labels = disks_image([(30, 30), (30, 52), (70, 70)], [9, 9, 8], shape=(96, 96))
    tifffile.imwrite(tmp_path / "a.tif", (image * 255).clip(0, 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", labels.astype(np.uint16))
    return tmp_path


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("segloop: error:")
    return lines[-1]


def _unchanged(path: Path, before: bytes) -> bool:
    return path.read_bytes() == before


def test_predict_never_replaces_a_file_it_did_not_write(files, capsys):
    truth = files / "a_labels.tif"  # the user's ground truth, named like an output
    tifffile.imwrite(truth, np.ones((96, 96), np.uint16))
    before = truth.read_bytes()
    assert main(["predict", "--model", "nuclei", "--out", str(files), str(files / "a.tif")]) == 1
    assert "not written by segloop" in _error(capsys) and _unchanged(truth, before)
    truth.unlink()
    # its own outputs are replaced when run again on the same image
    argv = ["predict", "--model", "nuclei", "--out", str(files), str(files / "a.tif")]
    assert main(argv) == 0 and main(argv) == 0
    # a folder holding its own earlier outputs: they would be inputs and outputs at once
    labels = (files / "a_labels.tif").read_bytes()
    assert main(["predict", "--model", "nuclei", "--out", str(files), str(files)]) == 1
    assert "over an input" in _error(capsys)
    assert _unchanged(files / "a_labels.tif", labels)
    assert not (files / "a_labels_labels.tif").exists()


def test_count_and_weightmap_never_write_over_their_inputs(files, capsys):
    image, mask = files / "a.tif", files / "mask.tif"
    image_bytes, mask_bytes = image.read_bytes(), mask.read_bytes()
    assert main(["count", "--model", "nuclei", "--csv", str(image), str(image)]) == 1
    assert "also an input" in _error(capsys)
    same = ["--csv", str(files / "c.csv"), "--objects", str(files / "." / "c.csv")]
    assert main(["count", "--model", "nuclei", *same, str(image)]) == 1
    assert "same file" in _error(capsys) and not (files / "c.csv").exists()
    assert main(["weightmap", str(mask), "--out", str(mask)]) == 1
    assert "also an input" in _error(capsys)
    assert _unchanged(image, image_bytes) and _unchanged(mask, mask_bytes)


def test_project_commands_on_a_missing_folder_create_nothing(files, capsys):
    missing = files / "typo"
    for argv in (["project", "list"], ["project", "versions"], ["finetune"]):
        assert main([*argv, "--project", str(missing)]) == 1
        assert "no project there" in _error(capsys)
    assert not missing.exists()


@pytest.mark.parametrize(
    "frames, message",
    [("5", "frame 5 does not exist"), ("abc", "write 'current', 'all'"), ("2-1", "low to high")],
)
def test_project_add_checks_frames_of_a_2d_image(files, capsys, frames, message):
    project = files / "p"
    argv = ["project", "add", "--project", str(project), "--frames", frames]
    assert main([*argv, str(files / "a.tif"), str(files / "mask.tif")]) == 1
    assert message in _error(capsys) and not project.exists()


def test_level_above_0_on_a_tiff_and_version(files, capsys):
    argv = ["predict", "--model", "nuclei", "--level", "2", "--out", str(files / "o")]
    assert main([*argv, str(files / "a.tif")]) == 1
    assert "only OME-Zarr inputs have resolution levels" in _error(capsys)
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("segloop ")


def test_predict_never_replaces_a_zarr_folder_it_did_not_write(files, capsys):
    pytest.importorskip("zarr")
    mine = files / "a_labels.zarr"  # the user's own labels, named like an output
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    argv = ["predict", "--model", "nuclei", "--out-format", "zarr", "--out", str(files)]
    assert main([*argv, str(files / "a.tif")]) == 1
    assert "not written by segloop" in _error(capsys)
    assert (mine / "notes.txt").read_text() == "mine"
    (mine / "notes.txt").unlink()
    mine.rmdir()
    assert main([*argv, str(files / "a.tif")]) == 0
    assert main([*argv, str(files / "a.tif")]) == 0  # its own output is replaced


def test_predict_never_replaces_labels_saved_from_napari(files, capsys):
    """segloop predict -> open a_labels.tif in napari, correct it, save it over itself with
    segloop's writer -> predict again: the corrected file stays (the writer's provenance
    record used to make it look like predict's own output)."""
    from segloop.napari._writer import write_labels

    argv = ["predict", "--model", "nuclei", "--out", str(files), str(files / "a.tif")]
    assert main(argv) == 0
    output = files / "a_labels.tif"
    corrected = tifffile.imread(output).astype(np.int32)
    corrected[:5, :5] = corrected.max() + 1  # the user's correction
    write_labels(str(output), corrected, {"metadata": {}})
    before = output.read_bytes()
    assert main(argv) == 1
    assert "saved from napari" in _error(capsys) and _unchanged(output, before)


@pytest.mark.parametrize(
    "attrs",
    [
        {"multiscales": [{}]},
        {"multiscales": [{"datasets": [{}]}]},
        {"multiscales": []},
        {"multiscales": [{"datasets": [{"path": "0", "coordinateTransformations": [1]}]}]},
    ],
)
def test_malformed_ome_zarr_metadata_is_a_one_line_error(files, capsys, attrs):
    import json

    zarr = pytest.importorskip("zarr")
    folder = files / "odd.zarr"
    zarr.open_group(str(folder), mode="w", zarr_format=2).create_array(
        "0", shape=(32, 32), dtype="uint8"
    )
    (folder / ".zattrs").write_text(json.dumps(attrs))
    argv = ["predict", "--model", "nuclei", "--out", str(files / "out"), str(folder)]
    assert main(argv) == 1
    assert "odd.zarr" in _error(capsys)


def test_predict_never_replaces_labels_the_older_writer_saved(files, capsys):
    """Labels saved from napari before the writer marked its files carry only
    ``command: napari writer``; they are the user's too."""
    from segloop.core.imageio import write_tiff
    from segloop.core.provenance import provenance, tiff_metadata

    output = files / "a_labels.tif"  # as the writer saved a layer without a record
    record = tiff_metadata(provenance(command="napari writer"))
    write_tiff(output, np.ones((96, 96), np.uint16), metadata=record)
    before = output.read_bytes()
    argv = ["predict", "--model", "nuclei", "--out", str(files), str(files / "a.tif")]
    assert main(argv) == 1
    assert "saved from napari" in _error(capsys) and _unchanged(output, before)
