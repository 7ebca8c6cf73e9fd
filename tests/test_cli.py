import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segloop.cli import main
from segloop.core.imageio import read_image, write_tiff

from .conftest import disks_image, random_disks


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for seed in range(3):
        image, labels = random_disks(seed, n=5, shape=(64, 64))
        write_tiff(images / f"f{seed}.tif", (image * 1000).astype(np.uint16))
        write_tiff(masks / f"f{seed}.tif", labels.astype(np.uint16))
    return images, masks


def test_train_then_evaluate_json(folders, tmp_path, capsys):
    images, masks = folders
    out = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--crop",
                "48",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and out.exists()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out),
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert {"precision", "recall", "f1", "ap", "seg", "pixel_iou"} <= set(report["summary"])
    assert len(report["per_image"]) == 3
    # fine-tune from it: version goes up, parent recorded
    tuned = tmp_path / "tuned.safetensors"
    assert (
        main(
            [
                "train",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--out",
                str(tuned),
                "--epochs",
                "1",
                "--crop",
                "48",
                "--init",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(tuned)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["metadata"]["version"] == 2 and info["metadata"]["parent"] == str(out)


def test_predict_and_count_write_the_contract_files(disk_model, tmp_path, capsys):
    image, labels = disks_image([(30, 30), (30, 48), (90, 90)], [9, 9, 8])
    inputs = tmp_path / "in"
    write_tiff(inputs / "cells.tif", (image * 255).clip(0, 255).astype(np.uint8))
    stack = np.stack([image, np.roll(image, 10, axis=1)])
    tifffile.imwrite(inputs / "movie.tif", (stack * 255).clip(0, 255).astype(np.uint8))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(disk_model), "--out", str(out), str(inputs)]) == 0
    lab = read_image(out / "cells_labels.tif")
    classes = read_image(out / "cells_classes.tif")
    assert lab.dtype == np.uint16 and lab.shape == image.shape and lab.max() == 3
    assert classes.dtype == np.uint8 and set(np.unique(classes)) <= {0, 1, 2}
    assert read_image(out / "movie_labels.tif").shape == (2, 128, 128)
    table = tmp_path / "counts.csv"
    objects = tmp_path / "objects.csv"
    assert (
        main(
            [
                "count",
                "--model",
                str(disk_model),
                "--csv",
                str(table),
                "--objects",
                str(objects),
                str(inputs / "cells.tif"),
                str(inputs / "movie.tif"),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(table.open()))
    assert [(r["image"], r["frame"], r["count"]) for r in rows] == [
        ("cells.tif", "0", "3"),
        ("movie.tif", "0", "3"),
        ("movie.tif", "1", "3"),
    ]
    object_rows = list(csv.DictReader(objects.open()))
    assert len(object_rows) == 9 and float(object_rows[0]["mean_intensity"]) > 100


def test_predict_native_scale_with_flip_averaging(disk_model, tmp_path):
    image, _ = disks_image([(30, 30), (30, 48), (90, 90)], [9, 9, 8])
    write_tiff(tmp_path / "in" / "cells.tif", (image * 255).clip(0, 255).astype(np.uint8))
    argv = ["predict", "--model", str(disk_model), "--diameter", "native", "--tta"]
    assert main([*argv, "--out", str(tmp_path / "out"), str(tmp_path / "in")]) == 0
    assert read_image(tmp_path / "out" / "cells_labels.tif").max() == 3


def test_weightmap_command(tmp_path):
    _, labels = disks_image([(30, 30), (30, 52)], [9, 9], shape=(64, 64))
    write_tiff(tmp_path / "mask.tif", labels.astype(np.uint16))
    assert main(["weightmap", str(tmp_path / "mask.tif"), "--out", str(tmp_path / "w.tif")]) == 0
    weights = read_image(tmp_path / "w.tif")
    assert weights.shape == labels.shape and weights.dtype == np.float32
    assert weights[30, 41] > weights[5, 5] + 3  # gap between the disks is stressed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--model", "no-such-model", "--out", "{tmp}/o", "{tmp}"], "no shipped model"),
        (["predict", "--model", "{bad_model}", "--out", "{tmp}/o", "{tmp}"], "not a readable"),
        (
            ["count", "--model", "{bad_model}", "--csv", "{tmp}/c.csv", "{tmp}/missing.tif"],
            "missing.tif",
        ),
        (["train", "--images", "{tmp}", "--masks", "{tmp}/nowhere", "--out", "{tmp}/m"], "nowhere"),
        (["weightmap", "{tmp}/corrupt.png", "--out", "{tmp}/w.tif"], "corrupt.png"),
        (
            ["predict", "--model", "nuclei", "--diameter", "big", "--out", "{tmp}/o", "{tmp}"],
            "'auto' or 'native'",
        ),
    ],
)
def test_bad_input_exits_1_with_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    (tmp_path / "img.png").write_bytes(b"")
    argv = [a.format(tmp=tmp_path, bad_model=tmp_path / "bad.safetensors") for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("segloop: error:") and message in err[-1]


def test_console_script_exit_code(tmp_path):
    exe = Path(sys.executable).with_name("segloop")
    if not exe.exists():
        exe = shutil.which("segloop") or pytest.skip("console script not installed")
    done = subprocess.run([exe, "info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert done.returncode == 1 and "segloop: error:" in done.stderr
    done = subprocess.run([sys.executable, "-m", "segloop.cli", "bogus"], capture_output=True)
    assert done.returncode == 2


@pytest.mark.slow
def test_predict_on_dask_local_cluster(disk_model, tmp_path):
    pytest.importorskip("distributed")
    inputs = tmp_path / "in"
    for seed in range(2):
        image, _ = random_disks(seed)
        write_tiff(inputs / f"img{seed}.tif", (image * 255).clip(0, 255).astype(np.uint8))
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--model",
                str(disk_model),
                "--out",
                str(out),
                "--dask",
                "local:1",
                str(inputs),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "img0_classes.tif",
        "img0_labels.tif",
        "img1_classes.tif",
        "img1_labels.tif",
    ]


@pytest.fixture
def class_folders(tmp_path):
    """Left half bright = class 1, right half dark = class 2, sparse strokes (0 = void)."""
    images, masks = tmp_path / "cimages", tmp_path / "cmasks"
    rng = np.random.default_rng(0)
    for index in range(2):
        image = np.where(np.arange(48)[None, :] < 24, 0.8, 0.2) + rng.normal(0, 0.05, (48, 48))
        strokes = np.zeros((48, 48), np.uint8)
        strokes[4:44:8, 2:20] = 1
        strokes[4:44:8, 28:46] = 2
        write_tiff(images / f"c{index}.tif", (image * 1000).clip(0, 65535).astype(np.uint16))
        write_tiff(masks / f"c{index}.tif", strokes)
    return images, masks


def _train_classes(images, masks, out, *extra):
    argv = ["train", "--images", str(images), "--masks", str(masks), "--out", str(out)]
    return main([*argv, "--target", "classes", "--epochs", "1", "--crop", "32", *extra])


def test_train_classes_stores_names_and_colours(class_folders, tmp_path, capsys):
    images, masks = class_folders
    out = tmp_path / "classes.safetensors"
    names = ["bright", "dark"]
    assert (
        _train_classes(
            images, masks, out, "--class-names", "bright, dark", "--class-colors", "#FF0000,#0000ff"
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    meta = json.loads(capsys.readouterr().out)["metadata"]
    assert meta["target"] == "classes" and meta["class_names"] == names
    assert meta["class_colors"] == ["#ff0000", "#0000ff"]
    # default names/colours when none are given
    plain = tmp_path / "plain.safetensors"
    assert _train_classes(images, masks, plain) == 0
    capsys.readouterr()
    main(["info", str(plain)])
    assert json.loads(capsys.readouterr().out)["metadata"]["class_names"] == ["class 1", "class 2"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--class-names", "a,b,c"], "3 class names"),
        (["--class-colors", "red,blue"], "#rrggbb"),
    ],
)
def test_train_classes_rejects_bad_names_before_training(
    class_folders, tmp_path, capsys, extra, message
):
    images, masks = class_folders
    out = tmp_path / "bad.safetensors"
    assert _train_classes(images, masks, out, *extra) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("segloop: error:") and message in err[-1]
    assert not out.exists()


def test_train_with_a_distance_head_new_and_from_init(folders, class_folders, tmp_path, capsys):
    images, masks = folders
    base = ["train", "--images", str(images), "--masks", str(masks), "--epochs", "1"]
    new = tmp_path / "new.safetensors"
    assert main([*base, "--crop", "48", "--out", str(new), "--distance-head"]) == 0
    by_default = tmp_path / "default.safetensors"  # a new instance model has one anyway
    assert main([*base, "--crop", "48", "--out", str(by_default)]) == 0
    grown = tmp_path / "grown.safetensors"
    plain = tmp_path / "plain.safetensors"
    assert main([*base, "--crop", "48", "--out", str(plain), "--no-distance-head"]) == 0
    args = [*base, "--crop", "48", "--out", str(grown), "--init", str(plain), "--distance-head"]
    assert main(args) == 0
    capsys.readouterr()
    for path, head in ((new, True), (by_default, True), (grown, True), (plain, False)):
        assert main(["info", str(path)]) == 0
        assert json.loads(capsys.readouterr().out)["config"].get("distance_head", False) is head
    args = [*base, "--out", str(tmp_path / "x.safetensors"), "--init", str(plain)]
    assert main([*args, "--no-distance-head"]) == 1
    assert "--no-distance-head is for a new instance model" in capsys.readouterr().err
    out = tmp_path / "p"
    assert (
        main(["predict", "--model", str(grown), "--out", str(out), "--probabilities", str(images)])
        == 0
    )
    assert len(list(out.glob("*_labels.tif"))) == 3
    distance = read_image(out / "f0_distance.tif")
    assert distance.shape == (64, 64) and distance.dtype == np.float32
    assert read_image(out / "f0_probabilities.tif").shape == (3, 64, 64)
    plain_out = tmp_path / "plain_out"  # no distance head: no distance file
    args = ["predict", "--model", str(plain), "--out", str(plain_out), "--probabilities"]
    assert main([*args, str(images)]) == 0
    assert (plain_out / "f0_probabilities.tif").exists()
    assert not list(plain_out.glob("*_distance.tif"))
    class_images, class_masks = class_folders
    bad = tmp_path / "bad.safetensors"
    assert _train_classes(class_images, class_masks, bad, "--distance-head") == 1
    assert "--distance-head needs an instance model" in capsys.readouterr().err
    assert not bad.exists()


def test_count_in_micrometres_with_provenance(disk_model, tmp_path):
    from segloop.core.provenance import read_tiff_provenance, side_file

    image, _ = disks_image([(30, 30), (30, 48), (90, 90)], [9, 9, 8])
    inputs = tmp_path / "in"
    pixels = (image * 255).clip(0, 255).astype(np.uint8)
    # an ImageJ TIFF that records 0.5 µm pixels
    inputs.mkdir()
    tifffile.imwrite(inputs / "ij.tif", pixels, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "micron"})  # fmt: skip
    write_tiff(inputs / "plain.tif", pixels)
    objects, table = tmp_path / "objects.csv", tmp_path / "counts.csv"
    argv = ["count", "--model", str(disk_model), "--csv", str(table), "--objects", str(objects)]
    assert main([*argv, str(inputs / "ij.tif"), str(inputs / "plain.tif")]) == 0
    rows = list(csv.DictReader(objects.open()))
    by_image = {r["image"]: r for r in rows}
    ij, plain = by_image["ij.tif"], by_image["plain.tif"]
    assert float(ij["area_um2"]) == pytest.approx(float(ij["area"]) * 0.25)
    assert plain["area_um2"] == "nan"  # no pixel size known for this one
    for column in ("perimeter", "eccentricity", "solidity", "min_intensity", "max_intensity"):
        assert column in ij
    counts = {r["image"]: r for r in csv.DictReader(table.open())}
    assert (
        counts["ij.tif"]["pixel_size_um"] == "0.5" and counts["plain.tif"]["pixel_size_um"] == "nan"
    )
    record = json.loads(side_file(objects).read_text())["segloop"]
    assert record["command"] == "segloop count" and record["model"]["file"] == str(disk_model)
    assert [f["pixel_size_um"] for f in record["files"]] == [[0.5, 0.5], None]
    # --pixel-size overrides the files; predict's TIFFs carry provenance and resolution
    out = tmp_path / "out"
    predict = ["predict", "--model", str(disk_model), "--pixel-size", "0.25", "--out", str(out)]
    assert main([*predict, str(inputs / "plain.tif")]) == 0
    found = read_tiff_provenance(out / "plain_labels.tif")
    assert found["pixel_size_um"] == [0.25, 0.25] and found["source"] == "plain.tif"
    assert found["settings"]["tile"] is None and "segloop_version" in found


def test_diameter_in_micrometres_equals_the_same_diameter_in_pixels(disk_model, tmp_path):
    image, _ = disks_image([(30, 30), (30, 48), (90, 90)], [9, 9, 8])
    inputs = tmp_path / "in"
    write_tiff(inputs / "cells.tif", (image * 255).clip(0, 255).astype(np.uint8))
    base = ["predict", "--model", str(disk_model), str(inputs / "cells.tif")]
    assert (
        main([*base, "--diameter", "9um", "--pixel-size", "0.5", "--out", str(tmp_path / "a")]) == 0
    )
    assert main([*base, "--diameter", "18", "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(
        read_image(tmp_path / "a" / "cells_labels.tif"),
        read_image(tmp_path / "b" / "cells_labels.tif"),
    )


def test_diameter_in_micrometres_without_a_pixel_size_is_a_clear_error(
    disk_model, tmp_path, capsys
):
    image, _ = disks_image([(30, 30)], [9])
    write_tiff(tmp_path / "cells.tif", (image * 255).clip(0, 255).astype(np.uint8))
    argv = [
        "predict",
        "--model",
        str(disk_model),
        "--diameter",
        "9um",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, str(tmp_path / "cells.tif")]) == 1
    err = capsys.readouterr().err
    assert "--pixel-size" in err and "cells.tif" in err and "Traceback" not in err
    bad = ["predict", "--model", str(disk_model), "--pixel-size", "-1", "--out", "o", "x.tif"]
    assert main(bad) == 1  # bad option values exit 1, as every other option
    assert "--pixel-size" in capsys.readouterr().err


def test_train_shift_augment_is_recorded_and_excludes_no_augment(folders, tmp_path, capsys):
    from segloop.core.modelio import load_model

    images, masks = folders
    out = tmp_path / "shift.safetensors"
    base = ["train", "--images", str(images), "--masks", str(masks), "--out", str(out)]
    assert main([*base, "--epochs", "1", "--crop", "48", "--shift-augment"]) == 0
    augment = load_model(out).metadata["training"]["config"]["augment"]
    assert augment["scale_range"] == [0.6, 1.6] and augment["invert_probability"] == 0.2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*base, "--epochs", "1", "--shift-augment", "--no-augment"])
    assert "not allowed with" in capsys.readouterr().err


def test_train_dice_weight_is_recorded_and_checked(folders, tmp_path, capsys):
    from segloop.core.modelio import load_model
    from segloop.core.recipe import DEFAULTS

    images, masks = folders
    out = tmp_path / "dice.safetensors"
    base = ["train", "--images", str(images), "--masks", str(masks), "--epochs", "1"]
    base += ["--crop", "48", "--out", str(out)]
    assert main(base) == 0  # a new model: the recipe's weight for training from scratch
    scratch = DEFAULTS.dice_weight_scratch
    assert load_model(out).metadata["training"]["config"]["dice_weight"] == scratch
    assert main([*base, "--dice-weight", "0.5"]) == 0
    assert load_model(out).metadata["training"]["config"]["dice_weight"] == 0.5
    tuned = tmp_path / "tuned.safetensors"
    assert main([*base[:-1], str(tuned), "--init", str(out)]) == 0  # the recipe's weight
    assert load_model(tuned).metadata["training"]["config"]["dice_weight"] == DEFAULTS.dice_weight
    capsys.readouterr()
    assert main([*base, "--dice-weight", "-1"]) == 1
    assert "--dice-weight must be in [0, 100]" in capsys.readouterr().err


def test_train_diameter_takes_pixels_and_refuses_a_physical_length(folders, tmp_path, capsys):
    from segloop.core.modelio import load_model

    images, masks = folders
    out = tmp_path / "d.safetensors"
    base = ["train", "--images", str(images), "--masks", str(masks), "--out", str(out)]
    assert main([*base, "--epochs", "1", "--crop", "48", "--diameter", "18px"]) == 0
    assert load_model(out).metadata["diameter"] == 18.0
    capsys.readouterr()
    assert main([*base, "--epochs", "1", "--diameter", "12um"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in pixels" in err[0] and "12um" in err[0]


def test_the_parser_does_not_import_torch():
    """`segloop --help`, `models` or `weightmap` must not pay torch's import (seconds)."""
    code = (
        "import sys\n"
        "from segloop.cli import build_parser\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_train_init_auto_starts_from_the_best_shipped_model(folders, tmp_path, capsys, monkeypatch):
    from segloop.core import start_choice
    from segloop.core.metadata import read_metadata
    from segloop.core.modelio import shipped_models

    scored = []
    choose = start_choice.choose_start_iter

    def recording(corrections, *rest, **options):
        scored.extend(item.name for item in corrections)
        return choose(corrections, *rest, **options)

    monkeypatch.setattr(start_choice, "choose_start_iter", recording)
    images, masks = folders
    out = tmp_path / "auto.safetensors"
    args = ["train", "--images", str(images), "--masks", str(masks), "--epochs", "1"]
    assert main([*args, "--val-fraction", "0.4", "--init", "auto", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    choice = summary["start_choice"]
    assert set(choice["scores"]) == set(shipped_models())
    best = max(choice["scores"].values(), key=lambda score: score["seg"])
    assert choice["scores"][choice["chosen"]]["seg"] == best["seg"]
    assert f"starting from {choice['chosen']}" in captured.err
    metadata = read_metadata(out)
    assert metadata["start_choice"] == choice
    assert Path(metadata["parent"]).name.startswith(choice["chosen"])
    # only the training pairs choose: the validation pair (40 % of 3) is held out first
    assert len(scored) == 2 and set(scored) < {"f0.tif", "f1.tif", "f2.tif"}
    assert set(scored) <= set(metadata["training"]["images"])
    # a model trained from this one does not inherit the choice
    again = tmp_path / "again.safetensors"
    assert main([*args, "--init", str(out), "--out", str(again)]) == 0
    capsys.readouterr()
    assert "start_choice" not in read_metadata(again)
    refused = ["--invert", "always", "--init", "auto", "--out", str(tmp_path / "i.safetensors")]
    assert main([*args, *refused]) == 1
    assert "leave out --invert" in capsys.readouterr().err
    bad = ["--target", "classes", "--init", "auto", "--out", str(tmp_path / "c.safetensors")]
    assert main([*args, *bad]) == 1
    assert "--init auto picks among the shipped instance models" in capsys.readouterr().err


def test_colour_option_is_parsed_for_every_segmenting_command(capsys):
    from segloop.cli import _segment_options, build_parser

    parser = build_parser()
    for command in (["predict", "--out", "o"], ["count", "--csv", "c.csv"], ["evaluate"]):
        extra = ["--images", "i", "--masks", "m"] if command[0] == "evaluate" else ["x.tif"]
        args = parser.parse_args([*command, "--model", "nuclei", "--colour", "hematoxylin", *extra])
        assert _segment_options(args).colour == "hematoxylin"
        args = parser.parse_args([*command, "--model", "nuclei", *extra])
        assert _segment_options(args).colour is None  # the model's choice
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "--out", "o", "--model", "nuclei", "--colour", "red", "x"])
    assert "invalid choice" in capsys.readouterr().err
