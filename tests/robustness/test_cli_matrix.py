"""Bad-input matrix of the ``segloop`` command line (cheap cases, run in-process).

Every case must end with exit status 1, exactly one ``segloop: error:`` line that names
the option or file at fault, no traceback, and no file created or changed in the test
folder. See tests/robustness/test_faults.py for signals, disk full and file-size limits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from segloop.core.imageio import write_tiff

from .conftest import (
    assert_one_line_error,
    run_cli,
    snapshot,
    strict_json,
    write_image,
    write_pairs,
)


def predict(tmp, model, *options, image=None):
    image = image or write_image(tmp / "in" / "cells.tif")
    return ["predict", "--model", model, "--out", tmp / "out", *options, image]


def train(tmp, model, *options, pairs=None):
    """Train argv; one short epoch unless the case sets a budget (a missing check then
    fails fast instead of training for the default 10 minutes)."""
    images, masks = pairs or write_pairs(tmp)
    budget = [] if {"--minutes", "--epochs"} & set(options) else ["--epochs", "1"]
    argv = ["train", "--images", images, "--masks", masks, "--crop", "48", *budget, *options]
    return [*argv, "--out", tmp / "m.safetensors"]


def weightmap(tmp, model, *options):
    _images, masks = write_pairs(tmp, n=1)
    return ["weightmap", masks / "f0.tif", "--out", tmp / "w.tif", *options]


def raw_image(tmp, array, name="bad.tif"):
    path = tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def model_with_config(tmp, **config):
    """A model file whose stored config has the given (bad) values."""
    from safetensors.torch import save_file

    from segloop.core.modelio import FORMAT

    base = {"arch": "unet", "depth": 3, "base_channels": 4, "padding": "same"}
    header = {"format": FORMAT, "config": json.dumps({**base, **config}), "metadata": "{}"}
    import torch

    path = tmp / "bad_config.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata=header)
    return path


def pairs_with(tmp, image=None, mask=None, image_name="a.tif", mask_name="a.tif"):
    images, masks = tmp / "images", tmp / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    default_image = np.random.default_rng(0).random((48, 48)) * 1000
    tifffile.imwrite(images / image_name, default_image if image is None else image)
    if mask is None:
        mask = np.zeros((48, 48), np.uint16)
        mask[10:20, 10:20] = 1
        mask[30:40, 30:40] = 2
    tifffile.imwrite(masks / mask_name, mask)
    return images, masks


def one_pixel_mask():
    mask = np.zeros((48, 48), np.uint16)
    mask[20, 20] = 1
    return mask


def class_mask(top):
    mask = np.zeros((48, 48), np.uint32)
    mask[:10, :10] = 1
    mask[20:30, 20:30] = top
    return mask


def huge_ids():
    mask = np.zeros((48, 48), np.uint32)
    mask[5:15, 5:15] = 2**31 + 5
    mask[25:35, 25:35] = 7
    return mask


def ambiguous_pairs(tmp):
    images, masks = write_pairs(tmp, names=["s1_t01.tif", "s2_t01.tif"])
    (masks / "s2_t01.tif").unlink()
    return images, masks


def different_pages(tmp):
    path = tmp / "in" / "pages.tif"
    path.parent.mkdir(parents=True)
    tifffile.imwrite(path, np.zeros((48, 48), np.uint8))
    tifffile.imwrite(path, np.zeros((32, 40), np.uint8), append=True)
    tifffile.imwrite(path, np.zeros((48, 48), np.uint8), append=True)
    return path


def truncated(tmp):
    path = tmp / "in" / "cut.tif"
    path.parent.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 1000, (128, 128)).astype(np.uint16)
    tifffile.imwrite(path, data, compression="zlib")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def non_model_out(tmp, model):
    (tmp / "notes.safetensors").write_text("my notes, not a model")
    return [*train(tmp, model)[:-1], tmp / "notes.safetensors"]


def file_as_folder(tmp, model):
    (tmp / "plain").write_text("a file")
    return [*train(tmp, model)[:-1], tmp / "plain" / "m.safetensors"]


def predict_out_is_file(tmp, model):
    (tmp / "o.txt").write_text("x")
    return ["predict", "--model", model, "--out", tmp / "o.txt", write_image(tmp / "in" / "a.tif")]


def init_corrupt(tmp, model):
    (tmp / "bad.safetensors").write_bytes(b"junk")
    return train(tmp, model, "--init", tmp / "bad.safetensors")


def empty_image_file(tmp, model):
    (tmp / "in").mkdir()
    (tmp / "in" / "e.png").write_bytes(b"")
    return predict(tmp, model, image=tmp / "in" / "e.png")


NAN_IMAGE = np.where(np.eye(48, dtype=bool), np.nan, 1.0).astype(np.float32)

# id -> (argv builder(tmp, model), text the error line must contain)
CASES = {
    # predict / count options
    "tile-huge": (lambda t, m: predict(t, m, "--tile", "100000"), "--tile"),
    "tile-negative": (lambda t, m: predict(t, m, "--tile", "-5"), "--tile"),
    "tile-zero": (lambda t, m: predict(t, m, "--tile", "0"), "--tile"),
    "tile-text": (lambda t, m: predict(t, m, "--tile", "big"), "--tile"),
    "batch-zero": (lambda t, m: predict(t, m, "--batch", "0"), "--batch"),
    "diameter-tiny": (lambda t, m: predict(t, m, "--diameter", "0.01"), "--diameter"),
    "diameter-inf": (lambda t, m: predict(t, m, "--diameter", "inf"), "--diameter"),
    "diameter-nan": (lambda t, m: predict(t, m, "--diameter", "nan"), "--diameter"),
    "diameter-word": (lambda t, m: predict(t, m, "--diameter", "big"), "--diameter"),
    "dask-local-0": (lambda t, m: predict(t, m, "--dask", "local:0"), "--dask"),
    "dask-local-abc": (lambda t, m: predict(t, m, "--dask", "local:abc"), "--dask"),
    "dask-garbage": (lambda t, m: predict(t, m, "--dask", "no scheduler"), "--dask"),
    "device-unknown": (lambda t, m: predict(t, m, "--device", "tpu"), "--device"),
    "unknown-threshold-2": (
        lambda t, m: predict(t, m, "--unknown-threshold", "2"),
        "--unknown-threshold",
    ),
    "min-size-negative": (lambda t, m: predict(t, m, "--min-size", "-1"), "--min-size"),
    "count-csv-is-folder": (
        lambda t, m: ["count", "--model", m, "--csv", t, write_image(t / "in" / "a.tif")],
        "--csv",
    ),
    "predict-out-is-file": (predict_out_is_file, "o.txt"),
    # train options
    "minutes-nan": (lambda t, m: train(t, m, "--minutes", "nan"), "--minutes"),
    "minutes-inf": (lambda t, m: train(t, m, "--minutes", "inf"), "--minutes"),
    "minutes-zero": (lambda t, m: train(t, m, "--minutes", "0"), "--minutes"),
    "epochs-zero": (lambda t, m: train(t, m, "--epochs", "0"), "--epochs"),
    "train-batch-zero": (lambda t, m: train(t, m, "--batch", "0"), "--batch"),
    "crop-zero": (lambda t, m: train(t, m, "--crop", "0"), "--crop"),
    "lr-negative": (lambda t, m: train(t, m, "--lr", "-1"), "--lr"),
    "train-diameter-tiny": (lambda t, m: train(t, m, "--diameter", "0.01"), "--diameter"),
    "train-diameter-inf": (lambda t, m: train(t, m, "--diameter", "inf"), "--diameter"),
    "seed-negative": (lambda t, m: train(t, m, "--seed", "-1"), "--seed"),
    "val-fraction-1.5": (lambda t, m: train(t, m, "--val-fraction", "1.5"), "--val-fraction"),
    # weightmap options
    "w0-negative": (lambda t, m: weightmap(t, m, "--w0", "-1"), "--w0"),
    "w0-huge": (lambda t, m: weightmap(t, m, "--w0", "1e39"), "--w0"),
    "w0-inf": (lambda t, m: weightmap(t, m, "--w0", "inf"), "--w0"),
    "sigma-inf": (lambda t, m: weightmap(t, m, "--sigma", "inf"), "--sigma"),
    "sigma-zero": (lambda t, m: weightmap(t, m, "--sigma", "0"), "--sigma"),
    "weightmap-out-is-folder": (
        lambda t, m: weightmap(t, m)[:2] + ["--out", t / "masks"],
        "--out",
    ),
    # train outputs, checked before training
    "train-out-not-a-model": (non_model_out, "notes.safetensors"),
    "train-out-parent-is-file": (file_as_folder, "plain"),
    "train-out-is-folder": (lambda t, m: [*train(t, m)[:-1], t / "images"], "--out"),
    # training data
    "val-images-without-masks": (
        lambda t, m: train(t, m, "--val-images", write_pairs(t)[0]),
        "--val-masks",
    ),
    "masks-is-a-file": (
        lambda t, m: train(t, m, pairs=(write_pairs(t)[0], t / "masks" / "f0.tif")),
        "f0.tif is not a folder",
    ),
    "class-colors-bad": (
        lambda t, m: train(
            t,
            m,
            "--target",
            "classes",
            "--class-colors",
            "red",
            pairs=pairs_with(t, mask=class_mask(2)),
        ),
        "--class-colors",
    ),
    "pairing-ambiguous": (lambda t, m: train(t, m, pairs=ambiguous_pairs(t)), "s2_t01"),
    "class-ids-70000": (
        lambda t, m: train(
            t, m, "--target", "classes", pairs=pairs_with(t, mask=class_mask(70000))
        ),
        "70000",
    ),
    "one-pixel-object": (
        lambda t, m: train(t, m, pairs=pairs_with(t, mask=one_pixel_mask())),
        "a.tif",
    ),
    "mask-ids-2**31": (lambda t, m: train(t, m, pairs=pairs_with(t, mask=huge_ids())), "a.tif"),
    "mask-float-fraction": (
        lambda t, m: train(t, m, pairs=pairs_with(t, mask=np.full((48, 48), 0.5, np.float32))),
        "a.tif",
    ),
    "mask-shape-mismatch": (
        lambda t, m: train(t, m, pairs=pairs_with(t, mask=np.ones((40, 48), np.uint16))),
        "a.tif",
    ),
    "train-image-2-channels": (
        lambda t, m: train(t, m, pairs=pairs_with(t, image=np.zeros((48, 48, 2), np.uint16))),
        "a.tif",
    ),
    "train-image-nan": (lambda t, m: train(t, m, pairs=pairs_with(t, image=NAN_IMAGE)), "a.tif"),
    "init-corrupt-model": (init_corrupt, "bad.safetensors"),
    # input images of predict
    "image-2-channels": (
        lambda t, m: predict(t, m, image=raw_image(t, np.zeros((48, 48, 2), np.uint8))),
        "bad.tif",
    ),
    "image-7-channels": (
        lambda t, m: predict(t, m, image=raw_image(t, np.zeros((48, 48, 7), np.uint8))),
        "bad.tif",
    ),
    "image-1d": (lambda t, m: predict(t, m, image=raw_image(t, np.zeros(64, np.uint8))), "bad.tif"),
    "image-4d": (
        lambda t, m: predict(t, m, image=raw_image(t, np.zeros((2, 2, 32, 32), np.uint8))),
        "bad.tif",
    ),
    "image-5d": (
        lambda t, m: predict(t, m, image=raw_image(t, np.zeros((2, 2, 2, 32, 32), np.uint8))),
        "bad.tif",
    ),
    "image-1x1": (
        lambda t, m: predict(t, m, image=raw_image(t, np.zeros((1, 1), np.uint8))),
        "bad.tif",
    ),
    "image-nan": (lambda t, m: predict(t, m, image=raw_image(t, NAN_IMAGE)), "bad.tif"),
    "image-truncated": (lambda t, m: predict(t, m, image=truncated(t)), "cut.tif"),
    "pages-differ-in-size": (lambda t, m: predict(t, m, image=different_pages(t)), "pages.tif"),
    "image-empty-file": (empty_image_file, "e.png"),
    # model files
    "config-float-channels": (
        lambda t, m: ["info", model_with_config(t, base_channels=16.5)],
        "bad_config.safetensors",
    ),
    "config-channels-1e6": (
        lambda t, m: predict(t, model_with_config(t, base_channels=1e6)),
        "bad_config.safetensors",
    ),
    "config-channels-4096": (
        lambda t, m: predict(t, model_with_config(t, base_channels=4096)),
        "bad_config.safetensors",
    ),
    "config-depth-64": (
        lambda t, m: predict(t, model_with_config(t, depth=64)),
        "bad_config.safetensors",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_error_and_changes_nothing(case, tmp_path, tiny_model, capsys):
    build, needle = CASES[case]
    argv = build(tmp_path, tiny_model)
    before = snapshot(tmp_path)
    code, _out, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, needle)
    assert snapshot(tmp_path) == before


def test_multi_page_tiff_written_by_separate_calls_keeps_every_frame(tmp_path, tiny_model, capsys):
    path = tmp_path / "in" / "three.tif"
    write_image(path)
    frame = tifffile.imread(path)
    for _ in range(2):
        tifffile.imwrite(path, frame, append=True)
    code, out, err = run_cli(predict(tmp_path, tiny_model, image=path), capsys)
    assert code == 0, err
    labels = tifffile.imread(tmp_path / "out" / "three_labels.tif")
    assert labels.shape == (3, 48, 48)


def test_ctc_pairing_by_number_still_works(tmp_path):
    from segloop.core.datasets import pair_files

    images, masks = write_pairs(tmp_path, names=["t001.tif", "t002.tif"])
    for name in ("t001.tif", "t002.tif"):
        (masks / name).rename(masks / f"man_seg{name[1:]}")
    pairs = pair_files(images, masks)
    assert [(i.name, m.name) for i, m in pairs] == [
        ("t001.tif", "man_seg001.tif"),
        ("t002.tif", "man_seg002.tif"),
    ]


def test_evaluate_json_is_valid_without_objects(tmp_path, tiny_model, capsys):
    images, masks = write_pairs(tmp_path, n=1)
    write_tiff(masks / "f0.tif", np.zeros((48, 48), np.uint16))  # nothing to score
    argv = ["evaluate", "--model", tiny_model, "--images", images, "--masks", masks, "--json"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    report = strict_json(out)
    assert report["summary"]["seg"] is None  # undefined without reference objects: null


def test_huge_image_is_refused_up_front(tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.setenv("SEGLOOP_MEMORY_LIMIT", str(64 * 2**20))  # a 64 MiB machine
    image = write_image(tmp_path / "in" / "big.tif", size=1024)
    before = snapshot(tmp_path)
    code, _out, err = run_cli(predict(tmp_path, tiny_model, image=image), capsys)
    line = assert_one_line_error(code, err, "big.tif")
    assert "memory" in line and "1024x1024" in line
    assert snapshot(tmp_path) == before


def test_large_tile_is_refused_naming_tile_and_batch(tmp_path, capsys, monkeypatch):
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import preset

    model = save_model(new_bundle(preset("unet"), "u"), tmp_path / "model" / "u.safetensors")
    monkeypatch.setenv("SEGLOOP_MEMORY_LIMIT", str(256 * 2**20))
    image = write_image(tmp_path / "in" / "a.tif", size=400)
    before = snapshot(tmp_path)
    code, _out, err = run_cli(predict(tmp_path, model, "--tile", "4096", image=image), capsys)
    line = assert_one_line_error(code, err, "tile")
    assert "batch" in line and "memory" in line
    assert snapshot(tmp_path) == before


def test_small_diameter_rescale_is_refused_naming_diameter(
    tmp_path, tiny_model, capsys, monkeypatch
):
    monkeypatch.setenv("SEGLOOP_MEMORY_LIMIT", str(512 * 2**20))
    image = write_image(tmp_path / "in" / "a.tif", size=256)
    before = snapshot(tmp_path)
    code, _out, err = run_cli(predict(tmp_path, tiny_model, "--diameter", "1", image=image), capsys)
    line = assert_one_line_error(code, err, "diameter")
    assert "5120x5120" in line
    assert snapshot(tmp_path) == before
