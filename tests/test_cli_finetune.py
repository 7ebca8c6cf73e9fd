"""``segloop project`` / ``segloop finetune``: the Fine-tune widget's loop from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segloop.cli import main
from segloop.core.imageio import read_image, write_tiff
from segloop.core.modelio import load_model, new_bundle, save_model
from segloop.core.models import ModelConfig
from segloop.core.progress import RunControl, run_to_end

from .conftest import random_disks


@pytest.fixture
def base(tmp_path) -> Path:
    return save_model(new_bundle(ModelConfig(depth=3, base_channels=8), "base"), tmp_path / "b.st")


@pytest.fixture
def frames(tmp_path) -> tuple[Path, Path]:
    """A 3-frame stack (dark disks on bright) and its labels, as TIFF files."""
    pairs = [random_disks(seed, n=6, shape=(64, 64)) for seed in range(3)]
    image = tmp_path / "movie.tif"
    labels = tmp_path / "movie_labels.tif"
    write_tiff(image, np.stack([(1 - p[0]) * 1000 for p in pairs]).astype(np.uint16))
    write_tiff(labels, np.stack([p[1] for p in pairs]).astype(np.uint16))
    return image, labels


TRAIN_OPTIONS = ["--epochs", "2", "--crop", "48", "--batch", "2", "--seed", "3"]


def test_project_add_finetune_predict(tmp_path, base, frames, capsys):
    project = tmp_path / "project"
    image, labels = frames
    assert main(["project", "add", "--project", str(project), str(image), str(labels)]) == 0
    assert capsys.readouterr().out.split() == ["movie_t0", "movie_t1", "movie_t2"]
    assert main(["project", "list", "--project", str(project), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in listed] == ["movie_t0", "movie_t1", "movie_t2"]
    assert all(row["origin"] == "user" and row["history"] == 0 for row in listed)

    args = ["finetune", "--project", str(project), "--init", str(base), *TRAIN_OPTIONS]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    model = Path(summary["model"])
    assert summary["version"] == 1 and model == project / "models" / "v1.safetensors"
    assert sorted(summary["trained_on"] + summary["validated_on"]) == [
        "movie_t0",
        "movie_t1",
        "movie_t2",
    ]
    assert summary["validated_on"] == []  # the recipe holds nothing out unless asked
    args = [*args, "--val", "movie_t1"]
    assert main(args) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["version"] == 2 and held["validated_on"] == ["movie_t1"]
    assert held["metrics"]["after"]["corrections"]["n_images"] == 1
    assert main(["project", "versions", "--project", str(project), "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in versions] == [1, 2] and versions[0]["base"] == str(base)

    out = tmp_path / "out"
    assert main(["predict", "--model", str(model), "--out", str(out), str(image)]) == 0
    assert read_image(out / "movie_labels.tif").shape == (3, 64, 64)
    # a next round starts from v1 and becomes v3
    capsys.readouterr()
    assert main(["finetune", "--project", str(project), "--init", str(model), "--epochs", "1"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["version"] == 3 and load_model(third["model"]).metadata["parent"] == str(model)


def test_project_add_refuses_mismatched_and_empty_labels(tmp_path, frames, capsys):
    image, labels = frames
    small = tmp_path / "small.tif"
    write_tiff(small, np.zeros((3, 32, 32), np.uint16))
    project = str(tmp_path / "p")
    assert main(["project", "add", "--project", project, str(image), str(small)]) == 1
    assert "small.tif" in capsys.readouterr().err
    write_tiff(small, np.zeros((3, 64, 64), np.uint16))
    assert main(["project", "add", "--project", project, str(image), str(small)]) == 1
    assert "empty" in capsys.readouterr().err
    assert main(["project", "add", "--project", project, str(image), str(labels), "--frames", "9"])
    assert "frame 9" in capsys.readouterr().err
    rgb = tmp_path / "rgb.tif"
    write_tiff(rgb, np.zeros((64, 64, 3), np.uint8))
    assert main(["project", "add", "--project", project, str(rgb), str(rgb)]) == 1
    assert "not RGB colours" in capsys.readouterr().err
    nan = tmp_path / "nan.tif"
    write_tiff(nan, np.full((64, 64), np.nan, np.float32))
    write_tiff(small, np.ones((64, 64), np.uint16))
    assert main(["project", "add", "--project", project, str(nan), str(small)]) == 1
    assert "NaN" in capsys.readouterr().err


def test_cli_and_widget_runs_give_the_same_version(tmp_path, base, frames, capsys):
    """``segloop finetune`` and the Train button's worker run build the same request and
    train the same weights from the same corrections and seed."""
    from segloop.cli import build_parser
    from segloop.cli_finetune import finetune_request
    from segloop.core.project import Project
    from segloop.napari.finetune_adapters import Correction
    from segloop.napari.train_adapters import TrainRequest, train_run
    from segloop.napari.train_adapters import finetune_request as widget_request

    image, labels = frames
    cli_project = tmp_path / "cli"
    main(["project", "add", "--project", str(cli_project), str(image), str(labels)])
    capsys.readouterr()
    args = ["finetune", "--project", str(cli_project), "--init", str(base), *TRAIN_OPTIONS]
    assert main(args) == 0
    cli_version = Path(json.loads(capsys.readouterr().out)["model"])

    stack, masks = read_image(image), read_image(labels)
    request = TrainRequest(
        folder=tmp_path / "widget",
        model=str(base),
        minutes=None,
        epochs=2,
        crop=48,
        batch_size=2,
        seed=3,
        corrections=[
            Correction("movie", stack[t].copy(), masks[t].astype(np.int32), t) for t in range(3)
        ],
    )
    parsed = build_parser().parse_args(args)
    assert widget_request(request) == finetune_request(parsed, Project(cli_project))
    output = run_to_end(train_run(request, RunControl()))
    assert output.saved == ["movie_t0", "movie_t1", "movie_t2"]
    widget_state = load_model(output.version.path).network.state_dict()
    cli_state = load_model(cli_version).network.state_dict()
    for key, value in cli_state.items():
        assert torch.equal(value, widget_state[key]), key


def test_a_correction_file_gone_is_a_read_error_not_a_write_error(tmp_path, base, frames):
    """The Train button's worker says which side failed: a correction file deleted behind
    the project's back is not 'Cannot write the new version'."""
    from segloop.napari.adapters import UserError
    from segloop.napari.train_adapters import TrainRequest, train_run

    image, labels = frames
    project = tmp_path / "p"
    main(["project", "add", "--project", str(project), str(image), str(labels)])
    (project / "corrections" / "movie_t1.tif").unlink()
    request = TrainRequest(folder=project, model=str(base), minutes=None, epochs=1, crop=48)
    with pytest.raises(UserError, match="Cannot read the project") as error:
        run_to_end(train_run(request, RunControl()))
    assert "movie_t1.tif" in str(error.value)
    assert not list((project / "models").glob("*.safetensors"))


def test_train_init_runs_the_finetune_recipe(tmp_path, base, frames, capsys):
    """``segloop train --init`` on image/mask folders trains the same weights, checks
    post-processing the same way and stores the same post-processing as ``segloop
    finetune`` on a project holding the same pairs (issue #19: one recipe)."""
    from segloop.core.recipe import DEFAULTS

    image, labels = frames
    stack, masks = read_image(image), read_image(labels)
    images, label_dir = tmp_path / "images", tmp_path / "masks"
    for t in range(3):
        write_tiff(images / f"movie_t{t}.tif", stack[t])
        write_tiff(label_dir / f"movie_t{t}.tif", masks[t])
    project = tmp_path / "project"
    main(["project", "add", "--project", str(project), str(image), str(labels)])
    capsys.readouterr()
    assert main(["finetune", "--project", str(project), "--init", str(base), *TRAIN_OPTIONS]) == 0
    version = load_model(json.loads(capsys.readouterr().out)["model"])

    out = tmp_path / "trained.safetensors"
    args = ["train", "--images", str(images), "--masks", str(label_dir), "--out", str(out)]
    assert main([*args, "--init", str(base), *TRAIN_OPTIONS]) == 0
    assert json.loads(capsys.readouterr().out)["validation_in_sample"] is True
    trained = load_model(out)
    for key, value in version.network.state_dict().items():
        assert torch.equal(value, trained.network.state_dict()[key]), key
    assert trained.postprocess == version.postprocess
    config = trained.metadata["training"]["config"]
    assert config == version.metadata["training"]["config"]
    assert config["val_fraction"] == DEFAULTS.val_fraction
    assert config["val_interval_s"] == DEFAULTS.val_interval_s
    assert config["tune_grid"] == DEFAULTS.tune_grid
    checked = trained.metadata["validation"]  # on the training pairs, as the version was
    assert checked and len(checked) == len(version.metadata["validation"])
    assert checked[-1].get("tuned_f1") == version.metadata["validation"][-1].get("tuned_f1")


def test_train_options_default_to_the_recipe_with_init_and_win_when_given():
    """What ``train`` runs when options are left out: the recipe's with ``--init``, a new
    model's without (no training here: the options only)."""
    from segloop.cli import build_parser
    from segloop.cli_train import _fill_defaults, _train_config
    from segloop.core.finetune import recipe_config
    from segloop.core.recipe import DEFAULTS

    def options(*extra):
        args = ["train", "--images", "i", "--masks", "m", "--out", "o.safetensors", *extra]
        parsed = build_parser().parse_args(args)
        _fill_defaults(parsed)
        return _train_config(parsed)

    assert options("--init", "nuclei") == recipe_config()
    assert options("--init", "auto").minutes == DEFAULTS.minutes
    given = options("--init", "nuclei", "--crop", "64", "--lr", "0.01", "--val-fraction", "0.3")
    assert (given.crop, given.learning_rate, given.val_fraction) == (64, 0.01, 0.3)
    assert given.tune_grid == DEFAULTS.tune_grid
    new = options()
    assert (new.minutes, new.val_fraction, new.crop, new.tune_grid) == (10.0, 0.1, 256, "full")


def test_project_add_keeps_colour_frames_in_colour(tmp_path, capsys):
    """The fine-tune chooses how colour corrections become grey, so they are stored as
    they are (a (T, H, W, 3) stack frame by frame)."""
    from segloop.core.project import Project

    pairs = [random_disks(seed, n=4, shape=(48, 48)) for seed in range(2)]
    rgb = np.stack([np.stack([p[0] * 200, p[0] * 50, p[0] * 120], -1) for p in pairs])
    image, labels = tmp_path / "he.tif", tmp_path / "he_labels.tif"
    write_tiff(image, rgb.astype(np.uint8))
    write_tiff(labels, np.stack([p[1] for p in pairs]).astype(np.uint16))
    project = tmp_path / "p"
    assert main(["project", "add", "--project", str(project), str(image), str(labels)]) == 0
    stored = Project(project).load_corrections()
    assert [item.image.shape for item in stored] == [(48, 48, 3)] * 2
    assert np.array_equal(stored[1].image, rgb[1].astype(np.uint8))


def test_finetune_prints_the_colour_choice_of_colour_corrections(tmp_path, capsys):
    start = new_bundle(ModelConfig(depth=2, base_channels=4), "base")
    start.metadata["training"] = {}  # a trained start model (a new network chooses nothing)
    base = save_model(start, tmp_path / "b.st")
    pairs = [random_disks(seed, n=4, shape=(48, 48)) for seed in range(2)]
    rgb = np.stack(
        [np.stack([240 - p[0] * 160, 200 - p[0] * 150, 230 - p[0] * 80], -1) for p in pairs]
    )
    image, labels = tmp_path / "he.tif", tmp_path / "he_labels.tif"
    write_tiff(image, rgb.astype(np.uint8))
    write_tiff(labels, np.stack([p[1] for p in pairs]).astype(np.uint16))
    project = str(tmp_path / "p")
    main(["project", "add", "--project", project, str(image), str(labels)])
    capsys.readouterr()
    assert main(["finetune", "--project", project, "--init", str(base), *TRAIN_OPTIONS]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["colour_choice"]["scores"]) == {"luma", "hematoxylin"}
    chosen = load_model(summary["model"]).preprocess["colour"]
    assert summary["colour_choice"]["chosen"] == chosen


def test_project_add_reads_palette_masks_and_refuses_ids_it_would_wrap(tmp_path, capsys):
    """A palette PNG mask is stored as its ids (it was read as RGB colours and refused);
    ids above int32 (a uint64 labels TIFF) are refused, not wrapped onto other objects."""
    from PIL import Image

    from segloop.core.project import Project

    image, labels = random_disks(0, n=4, shape=(64, 64))
    picture = tmp_path / "a.tif"
    write_tiff(picture, (image * 255).astype(np.uint8))
    mask = Image.fromarray(labels.astype(np.uint8), mode="P")
    mask.putpalette(list(np.random.default_rng(0).integers(0, 255, 768).astype(int)))
    mask.save(tmp_path / "a_labels.png")
    project = tmp_path / "p"
    assert (
        main(
            [
                "project",
                "add",
                "--project",
                str(project),
                str(picture),
                str(tmp_path / "a_labels.png"),
            ]
        )
        == 0
    )
    (stored,) = Project(project).load_corrections()
    np.testing.assert_array_equal(stored.labels, labels)
    huge = labels.astype(np.uint64)
    huge[huge == 1] = 2**32 + 2  # would become 2 as int32
    write_tiff(tmp_path / "huge.tif", huge)
    argv = ["project", "add", "--project", str(project), "--name", "b", str(picture)]
    assert main([*argv, str(tmp_path / "huge.tif")]) == 1
    assert "label ids must be 0.." in capsys.readouterr().err
    assert Project(project).correction_ids() == ["a"]
