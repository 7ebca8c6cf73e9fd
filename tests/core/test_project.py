from pathlib import Path

import numpy as np
import pytest

from segloop.core.imageio import read_image
from segloop.core.project import Project, parse_frames

from ..conftest import random_disks


def test_corrections_are_stored_and_replaced_not_duplicated(tmp_path):
    project = Project(tmp_path / "p", base_model="nuclei")
    image, labels = random_disks(0, shape=(64, 64))
    ident = project.add_correction(image, labels, "movie", frame=3, model_version="v1")
    assert ident == "movie_t3"
    project.add_correction(image, labels, "movie", frame=3)
    assert project.correction_ids() == ["movie_t3"]
    loaded = project.load_corrections()[0]
    np.testing.assert_array_equal(loaded.labels, labels)
    assert Project(tmp_path / "p").base_model == "nuclei"
    with pytest.raises(ValueError, match="empty"):
        project.add_correction(image, np.zeros_like(labels), "blank", sparse=True)
    # dense labels with no object: "nothing here", a correction like any other
    assert project.add_correction(image, np.zeros_like(labels), "blank") == "blank"
    assert project.correction_info("blank")["n_objects"] == 0
    with pytest.raises(ValueError, match="same size"):
        project.add_correction(image, labels[:10], "cut")


def test_sparse_correction_ignores_unlabelled_pixels(tmp_path):
    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    project.add_correction(image, labels, "sparse", sparse=True)
    item = project.load_corrections()[0]
    np.testing.assert_array_equal(item.ignore, labels == 0)


def test_resaving_a_correction_keeps_the_old_files_in_history(tmp_path):
    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    project.add_correction(image, labels, "frame")
    assert project.history("frame") == []
    project.add_correction(image, labels, "frame")  # same content: nothing to keep
    assert project.history("frame") == []
    edited = labels.copy()
    edited[:8, :8] = labels.max() + 1
    project.add_correction(image, edited, "frame")
    project.add_correction(image, labels, "frame")
    history = project.history("frame")
    assert len(history) == 2
    np.testing.assert_array_equal(read_image(history[0]), labels)
    np.testing.assert_array_equal(read_image(history[1]), edited)
    np.testing.assert_array_equal(project.load_corrections()[0].labels, labels)


class _Crash(Exception):
    """Stands for the process dying in the middle of a save."""


def _edited(labels):
    edited = labels.copy()
    edited[:8, :8] = labels.max() + 1
    return edited


def test_a_save_that_dies_before_its_commit_leaves_the_old_set(tmp_path, monkeypatch):
    import segloop.core.project as project_module

    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    project.add_correction(image, labels, "frame", origin="model")
    real_write_json = project_module._write_json

    def dies_at_commit(path, data):
        if path.name == project_module.COMMIT_MARKER:
            raise _Crash
        real_write_json(path, data)

    monkeypatch.setattr(project_module, "_write_json", dies_at_commit)
    with pytest.raises(_Crash):
        project.add_correction(image, _edited(labels), "frame")
    monkeypatch.setattr(project_module, "_write_json", real_write_json)
    monkeypatch.setattr(project_module, "PENDING_GRACE_S", 0.0)
    reopened = Project(tmp_path / "p")
    np.testing.assert_array_equal(reopened.load_corrections()[0].labels, labels)
    assert reopened.correction_info("frame")["origin"] == "model"
    assert not any((tmp_path / "p" / "corrections" / ".pending").iterdir())


def test_a_save_that_dies_while_moving_its_files_is_finished_on_reopening(tmp_path, monkeypatch):
    import segloop.core.project as project_module

    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    project.add_correction(image, labels, "frame", origin="model")
    real_replace, moves = project_module.os.replace, []

    def dies_after_one_move(source, target):
        if Path(target).parent.name == "corrections" and Path(source).parent.parent.name == (
            project_module.PENDING
        ):
            if moves:
                raise _Crash
            moves.append(target)
        real_replace(source, target)

    monkeypatch.setattr(project_module.os, "replace", dies_after_one_move)
    edited = _edited(labels)
    with pytest.raises(_Crash):
        project.add_correction(image, edited, "frame")
    monkeypatch.setattr(project_module.os, "replace", real_replace)
    # the labels on disk are still the old ones, and the record still says "model"
    assert project.correction_info("frame")["origin"] == "model"
    reopened = Project(tmp_path / "p")  # what the next napari or CLI session does
    np.testing.assert_array_equal(reopened.load_corrections()[0].labels, edited)
    assert reopened.correction_info("frame")["origin"] == "user"
    np.testing.assert_array_equal(read_image(reopened.history("frame")[0]), labels)
    assert not any((tmp_path / "p" / "corrections" / ".pending").iterdir())
    # a model's output can no longer replace the user's edits
    assert reopened.add_correction(image, labels, "frame", origin="model") is None


def test_model_output_never_replaces_a_saved_correction(tmp_path):
    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    _, model_output = random_disks(1, shape=(64, 64))
    assert project.add_correction(image, labels, "frame") == "frame"
    assert project.add_correction(image, model_output, "frame", origin="model") is None
    np.testing.assert_array_equal(project.load_corrections()[0].labels, labels)
    assert project.history("frame") == []
    # a model's output accepted as it is may be stored when nothing is saved yet
    assert project.add_correction(image, model_output, "other", origin="model") == "other"
    assert project.correction_info("other")["origin"] == "model"
    # ... and a later model's output may replace it (kept in the history)
    _, better = random_disks(2, shape=(64, 64))
    assert project.add_correction(image, better, "other", origin="model") == "other"
    np.testing.assert_array_equal(project.load_corrections(["other"])[0].labels, better)
    assert len(project.history("other")) == 1
    # switching a saved correction to sparse with the same labels updates its mode
    project.add_correction(image, labels, "frame", sparse=True)
    assert project.correction_info("frame")["sparse"] is True
    with pytest.raises(ValueError, match="origin"):
        project.add_correction(image, labels, "x", origin="robot")


def test_another_image_under_a_taken_name_is_a_new_correction(tmp_path):
    """Plate B's 'image' never replaces plate A's 'image': same name, other pixels."""
    project = Project(tmp_path / "p")
    plate_a, labels_a = random_disks(0, shape=(64, 64))
    plate_b, labels_b = random_disks(1, shape=(64, 64))
    assert project.add_correction(plate_a, labels_a, "image") == "image"
    assert project.add_correction(plate_b, labels_b, "image") == "image-2"
    assert project.add_correction(plate_b, labels_a, "image") == "image-2"  # B, edited
    assert project.correction_ids() == ["image", "image-2"]
    loaded = {item.name: item for item in project.load_corrections()}
    np.testing.assert_array_equal(loaded["image"].labels, labels_a)
    np.testing.assert_array_equal(loaded["image-2"].image, plate_b)
    assert project.history("image") == [] and len(project.history("image-2")) == 1


def test_two_threads_saving_one_correction_keep_every_version(tmp_path):
    """Save and Train may store the same frame at once: each write is whole and each
    replaced version gets its own history entry."""
    from concurrent.futures import ThreadPoolExecutor

    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    versions = []
    for n in range(8):
        edited = labels.copy()
        edited[n, :4] = 50 + n
        versions.append(edited)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda lab: project.add_correction(image, lab, "frame"), versions))
    assert project.correction_ids() == ["frame"]
    kept = [read_image(path) for path in project.history("frame")]
    kept.append(project.load_corrections()[0].labels)
    assert len(kept) == 8
    assert sorted(int(k[k >= 50].max()) for k in kept) == list(range(50, 58))


def test_an_unreadable_version_file_is_never_replaced(tmp_path):
    project = Project(tmp_path / "p")
    (project.root / "models").mkdir(parents=True, exist_ok=True)
    (project.root / "models" / "v3.safetensors").write_bytes(b"from a newer segloop")
    assert project.versions() == []
    assert project.next_version_path().name == "v4.safetensors"


def test_parse_frames():
    assert parse_frames("all", 3) == [0, 1, 2]
    assert parse_frames("", 3) == [0, 1, 2]
    assert parse_frames("current", 5, 4) == [4]
    assert parse_frames("1-2, 4", 5) == [1, 2, 4]
    with pytest.raises(ValueError, match="frames 0..4"):
        parse_frames("7", 5)


def test_names_made_of_dots_or_nothing_are_ordinary_corrections(tmp_path):
    """'..' or '.' would name a folder (the staging folder's parent): the save deleted
    every correction. Leading dots are dropped; an empty name becomes 'image'."""
    from segloop.core.project import correction_id

    assert [correction_id(n) for n in ("..", ".", "", ".hidden", "a.b")] == [
        "image",
        "image",
        "image",
        "hidden",
        "a.b",
    ]
    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    other_image, other = random_disks(1, shape=(64, 64))
    project.add_correction(image, labels, "kept")
    assert project.add_correction(other_image, other, "..") == "image"
    assert project.correction_ids() == ["image", "kept"]
    np.testing.assert_array_equal(project.load_corrections(["kept"])[0].labels, labels)


@pytest.mark.parametrize("first", ["a", "a_labels"])
def test_a_name_ending_in_labels_never_shares_another_corrections_file(tmp_path, first):
    """Correction 'a' keeps its labels in a_labels.tif, where a correction 'a_labels'
    would keep its image: saving the second replaced the first's file (labels became
    another frame's pixels). Whichever comes second now gets its own id."""
    project = Project(tmp_path / "p")
    pairs = {
        name: random_disks(seed, shape=(64, 64)) for seed, name in enumerate(["a", "a_labels"])
    }
    second = "a_labels" if first == "a" else "a"
    assert project.add_correction(*pairs[first], first) == first
    assert project.add_correction(*pairs[second], second) == f"{second}-2"
    assert project.correction_ids() == sorted([first, f"{second}-2"])
    for ident, name in [(first, first), (f"{second}-2", second)]:
        stored = project.load_corrections([ident])[0]
        np.testing.assert_array_equal(stored.image, pairs[name][0])
        np.testing.assert_array_equal(stored.labels, pairs[name][1])
    assert project.history(first) == []  # nothing was replaced
    assert project.add_correction(*pairs[first], first) == first  # the same again: no copy
    assert project.correction_ids() == sorted([first, f"{second}-2"])


def test_listing_versions_again_reads_only_changed_headers(tmp_path, monkeypatch):
    import shutil

    from segloop.core import versions
    from segloop.core.modelio import shipped_models

    models = tmp_path / "models"
    models.mkdir()
    source = next(iter(shipped_models().values()))
    for number in (1, 2):
        shutil.copyfile(source, models / f"v{number}.safetensors")
    reads = []
    real = versions.read_metadata
    monkeypatch.setattr(versions, "read_metadata", lambda p: reads.append(p.name) or real(p))
    first = versions.list_versions(models)
    again = versions.list_versions(models)
    assert [v.version for v in again] == [1, 2] and again[0].metadata == first[0].metadata
    assert sorted(reads) == ["v1.safetensors", "v2.safetensors"]  # once each
    (models / "v2.safetensors").write_bytes(b"half-copied")  # changed: read again, skipped
    assert [v.version for v in versions.list_versions(models)] == [1]
    assert reads[-1] == "v2.safetensors" and len(reads) == 3


def test_headers_read_says_whether_listing_would_read_a_file(tmp_path):
    import shutil

    from segloop.core import versions
    from segloop.core.modelio import shipped_models

    models = tmp_path / "models"
    assert versions.headers_read(models)  # no folder: nothing to read
    models.mkdir()
    source = next(iter(shipped_models().values()))
    shutil.copyfile(source, models / "v1.safetensors")
    assert not versions.headers_read(models)
    versions.list_versions(models)
    assert versions.headers_read(models)
    shutil.copyfile(source, models / "v2.safetensors")  # a new version: not read yet
    assert not versions.headers_read(models)
    versions.list_versions(models)
    (models / "v2.safetensors").write_bytes(b"half-copied")  # changed since it was read
    assert not versions.headers_read(models)
