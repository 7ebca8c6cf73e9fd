"""Qt-free helpers of the Fine-tune widget: frames, version rows, time left."""

from __future__ import annotations

import pytest

from segloop.napari.adapters import UserError
from segloop.napari.finetune_adapters import (
    Version,
    default_project_folder,
    parse_frames,
    version_choices,
    version_row,
)
from segloop.napari.train_adapters import remaining_seconds


def test_parse_frames():
    assert parse_frames("current", 10, 4) == [4]
    assert parse_frames(" ", 10, 4) == [4]
    assert parse_frames("all", 3, 0) == [0, 1, 2]
    assert parse_frames("3,5, 9", 10, 0) == [3, 5, 9]
    assert parse_frames("2-4 8", 10, 0) == [2, 3, 4, 8]
    with pytest.raises(UserError, match="frames 0..9"):
        parse_frames("3,12", 10, 0)
    with pytest.raises(UserError, match="'current', 'all'"):
        parse_frames("first", 10, 0)


def test_default_project_folder(projects_home):
    # ~/segloop-projects for users; the tests' autouse fixture moves it to a tmp folder
    folder = default_project_folder("nuclei fluorescence")
    assert folder == projects_home / "nuclei_fluorescence"
    assert default_project_folder(None).name == "untitled"


def test_version_row_shows_before_and_after(tmp_path):
    path = tmp_path / "v2.safetensors"
    path.write_bytes(b"")
    metrics = {
        "before": {"corrections": {"f1": 0.4, "seg": 0.3}, "base_validation": None},
        "after": {"corrections": {"f1": 0.8, "seg": 0.6}, "base_validation": None},
    }
    meta = {
        "finetune": {
            "trained_on": ["a", "b"],
            "validated_on": ["c"],
            "n_corrected_objects": 12,
            "seconds": 75.2,
            "stopped": True,
            "metrics": metrics,
        }
    }
    row = version_row(Version(2, path, meta))
    assert row["version"] == "v2 (stopped)"
    assert row["images"] == "2 +1 val" and row["objects"] == "12"
    assert row["time"] == "1 min 15 s"
    assert row["held-out"] == "F1 0.40 → 0.80\nSEG 0.30 → 0.60"
    assert row["base validation"] == "start model has none"


def test_version_row_says_why_a_score_is_missing(tmp_path):
    path = tmp_path / "v1.safetensors"
    path.write_bytes(b"")
    meta = {"finetune": {"trained_on": ["a"], "base": "scratch:unet", "metrics": {}}}
    row = version_row(Version(1, path, meta))
    assert row["held-out"] == "none held out"
    assert row["base validation"] == "from scratch"


@pytest.mark.parametrize(
    "meta",
    [
        {"finetune": {"trained_on": ["a"], "seconds": "12"}},
        {"finetune": {"metrics": {"after": {"corrections": {"seg": "0.5"}}}}},
        {"finetune": []},
        {"target": "classes", "validation": [0.5]},
    ],
)
def test_a_version_record_this_code_cannot_read_gives_a_row_that_says_so(tmp_path, meta):
    """Another segloop's file with unexpected types: a row, not an error in the GUI thread."""
    from segloop.napari._finetune_widget import COLUMNS

    path = tmp_path / "v4.safetensors"
    path.write_bytes(b"")
    row = version_row(Version(4, path, meta))
    assert tuple(row) == tuple(COLUMNS)  # the table's columns, in order
    assert row["version"] == "v4" and row["held-out"] == "record unreadable"
    good = version_row(Version(2, path, {"finetune": {"trained_on": ["a"]}}))
    assert tuple(good) == tuple(COLUMNS) and good["held-out"] == "none held out"


def test_version_row_of_a_class_model_shows_accuracy(tmp_path):
    path = tmp_path / "v1.safetensors"
    path.write_bytes(b"")
    meta = {"target": "classes", "validation": [{"accuracy": 0.7}, {"accuracy": 0.9}]}
    assert version_row(Version(1, path, meta))["held-out"] == "acc – → 0.90"


def test_version_choices_say_what_the_corrections_chose(tmp_path):
    path = tmp_path / "v3.safetensors"
    path.write_bytes(b"")
    meta = {
        "colour_choice": {
            "chosen": "hematoxylin",
            "scores": {"luma": {"seg": 0.42, "f1": 0.3}, "hematoxylin": {"seg": 0.587, "f1": 0.7}},
        },
        "size_check": {
            "f1_auto": 0.61,
            "f1_native": 0.9,
            "margin": 0.1,
            "chosen": "native",
            "images": ["a", "b"],
        },
        "postprocess": {"fg_threshold": 0.6, "seed_threshold": 0.4, "min_size": 30},
        "validation": [{"step": 5, "f1": 0.5}, {"tuned_f1": 0.8, "tuned_kept_current": False}],
    }
    assert version_choices(Version(3, path, meta)) == [
        "colour → grey: hematoxylin (start model's SEG on the colour corrections: "
        "luma 0.42, hematoxylin 0.59)",
        "object size: the corrections' scale (F1 on 2 corrections: measured 0.61, "
        "their scale 0.90)",
        "post-processing: re-tuned: foreground 0.6, seeds 0.4, min size 30",
    ]
    meta["validation"][-1]["tuned_kept_current"] = True
    assert version_choices(Version(3, path, meta))[-1].startswith("post-processing: kept")
    assert version_choices(Version(1, path, {})) == []  # nothing checked: no lines
    broken = {"colour_choice": {"chosen": "luma"}, "size_check": meta["size_check"]}
    assert version_choices(Version(3, path, broken)) == [  # unreadable record: left out
        "object size: the corrections' scale (F1 on 2 corrections: measured 0.61, their scale 0.90)"
    ]


def test_remaining_seconds():
    assert remaining_seconds(0.5, 30.0, 2.0) == 90.0
    assert remaining_seconds(0.25, 30.0, None) == 90.0
    assert remaining_seconds(0.0, 3.0, None) is None


def test_a_frame_the_user_emptied_is_a_correction_and_a_blank_one_is_skipped():
    import numpy as np
    from napari.layers import Image, Labels

    from segloop.napari import edits
    from segloop.napari.finetune_adapters import pair_corrections

    written = np.zeros((3, 32, 32), np.int32)
    written[:2, 4:12, 4:12] = 1  # Segment found one object in frames 0 and 1
    labels = Labels(written.copy(), name="movie instances")
    edits.record_written(labels, edits.frame_digests(written[:2]), replace=True)
    labels.data[1] = 0  # the user erased it: nothing in frame 1
    image = Image(np.random.default_rng(0).random((3, 32, 32)), name="movie")
    items, skipped = pair_corrections(image, labels, "all", 0, "nuclei")
    assert [(item.frame, item.resolved_origin(), int(item.labels.max())) for item in items] == [
        (0, "model", 1),
        (1, "user", 0),
    ]
    assert skipped == [2]  # never labelled
    items, skipped = pair_corrections(image, labels, "all", 0, "nuclei", sparse=True)
    assert [item.frame for item in items] == [0] and skipped == [1, 2]
