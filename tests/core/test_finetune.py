"""The correct-and-retrain service: recipe, versions, Stop/Cancel, replay, re-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.core.evaluation import LabelledImage
from segloop.core.finetune import (
    DEFAULTS,
    SCRATCH,
    FinetuneRequest,
    build_request,
    fine_tune_scale,
    finetune_iter,
    recipe_config,
    replay_sample,
    split_corrections,
)
from segloop.core.metrics import match_instances
from segloop.core.modelio import load_model, new_bundle, save_model
from segloop.core.models import ModelConfig
from segloop.core.progress import Cancelled, RunControl, run_to_end
from segloop.core.project import Project
from segloop.core.segment import segment
from segloop.core.training import median_diameter

from ..conftest import random_disks


def dark_disks(seed, **kw):
    """A new 'modality': dark disks on a bright background."""
    image, labels = random_disks(seed, **kw)
    return 1.0 - image, labels


@pytest.fixture
def base_path(tmp_path):
    return save_model(new_bundle(ModelConfig(depth=3, base_channels=8), "base"), tmp_path / "b.st")


def _project(tmp_path, n=2, base=None):
    project = Project(tmp_path / "p", base_model=base)
    for seed in range(n):
        project.add_correction(*dark_disks(seed, shape=(96, 96)), name=f"frame{seed}")
    return project


def _request(start, **config):
    options = {"epochs": 2, "crop": 64, "batch_size": 2, "val_interval_s": 1e9, **config}
    return FinetuneRequest(start=start, config=recipe_config(**options), score_base=False)


def test_recipe_defaults_come_from_one_place():
    config = recipe_config()
    assert config.minutes == DEFAULTS.minutes and config.epochs is None
    assert config.learning_rate == DEFAULTS.learning_rate
    assert config.crop == DEFAULTS.crop and config.val_interval_s == DEFAULTS.val_interval_s
    assert recipe_config(epochs=3).minutes is None
    assert config.dice_weight == DEFAULTS.dice_weight > 0  # fine-tunes add a Dice term
    assert recipe_config(scratch=True).dice_weight == DEFAULTS.dice_weight_scratch
    request = build_request("nuclei", augment=False, seed=4)
    assert request.replay_fraction == DEFAULTS.replay_fraction
    assert request.config.seed == 4 and not request.config.augment.elastic


def test_split_rule():
    items = [LabelledImage(np.zeros((4, 4)), np.ones((4, 4), int), f"c{i}") for i in range(6)]
    assert split_corrections(items[:1]) == (items[:1], [])
    assert split_corrections(items) == (items, [])  # the recipe holds nothing out
    train, val = split_corrections(items, seed=1, fraction=0.2)
    assert (
        len(val) == 1 and len(train) == 5 and not set(c.name for c in val) & {c.name for c in train}
    )
    train, val = split_corrections(items, val_ids=["c2", "c4"])
    assert [c.name for c in val] == ["c2", "c4"] and len(train) == 4
    assert split_corrections(items, val_ids=[]) == (items, [])
    with pytest.raises(ValueError, match="held out"):
        split_corrections(items[:1], val_ids=["c0"])


def test_fine_tune_improves_held_back_frame_and_saves_versions(tmp_path, base_path):
    project = Project(tmp_path / "p", base_model=str(base_path))
    for seed in range(4):
        project.add_correction(*dark_disks(seed), name=f"frame{seed}")
    held_image, held_labels = dark_disks(50)
    before = match_instances(held_labels, segment(load_model(base_path), held_image).instances)
    request = _request(str(base_path), epochs=60, crop=96, batch_size=4, learning_rate=3e-3)
    request.val_ids = ["frame3"]
    result = run_to_end(finetune_iter(project, request))
    info = result.version
    assert info.path.name == "v1.safetensors" and info.path.exists()
    after = match_instances(held_labels, segment(load_model(info.path), held_image).instances)
    assert after.f1 > before.f1 + 0.3
    record = info.metadata["finetune"]
    assert len(record["trained_on"]) == 3 and len(record["validated_on"]) == 1
    assert record["base"] == str(base_path) and record["recipe"]["learning_rate"] == 3e-3
    metrics = record["metrics"]
    assert metrics["after"]["corrections"]["f1"] > metrics["before"]["corrections"]["f1"]
    # post-processing was re-tuned on the held-out correction
    assert any("tuned_f1" in v for v in info.metadata["validation"])
    # the next run becomes v2, starting from v1; both are listed
    result2 = run_to_end(finetune_iter(project, _request(str(info.path), epochs=1)))
    assert [v.version for v in project.versions()] == [1, 2]
    assert result2.version.metadata["parent"] == str(info.path)


def test_train_from_scratch_into_a_project(tmp_path):
    project = _project(tmp_path, n=2)
    request = _request(SCRATCH, epochs=2)
    request.arch = "unet"
    result = run_to_end(finetune_iter(project, request))
    record = result.version.metadata["finetune"]
    assert record["base"] == "scratch:unet" and record["base_version"] == 0
    assert record["metrics"]["before"] == {}
    assert load_model(result.version.path).config.n_classes == 3


def test_class_model_from_scratch_uses_the_painted_ids(tmp_path):
    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    classes = np.where(labels > 0, 1 + labels % 3, 0)
    project.add_correction(image, classes, "strokes", sparse=True)
    request = _request(SCRATCH, epochs=1)
    request.target, request.class_names = "classes", ["a", "b", "c"]
    version = run_to_end(finetune_iter(project, request)).version
    assert version.metadata["class_names"] == ["a", "b", "c"]
    assert load_model(version.path).config.n_classes == 3


def _drive(run, on_event):
    while True:
        try:
            event = next(run)
        except StopIteration as done:
            return done.value
        on_event(event)


def test_stop_keeps_the_best_so_far_and_saves_a_version(tmp_path, base_path):
    project = _project(tmp_path)
    control = RunControl()
    seen = []

    def on_event(event):
        if event.stage == "train":
            seen.append(event)
            if len(seen) == 3:
                control.stop()

    request = _request(str(base_path), epochs=50)
    result = _drive(finetune_iter(project, request, control), on_event)
    assert result.stopped and result.steps == 3
    assert result.version.metadata["finetune"]["stopped"] is True
    assert result.version.path.exists()


def test_stop_before_the_first_step_saves_nothing(tmp_path, base_path):
    project = _project(tmp_path)
    control = RunControl()
    control.stop()
    result = run_to_end(finetune_iter(project, _request(str(base_path)), control))
    assert result.version is None and result.steps == 0
    assert project.versions() == []


@pytest.mark.parametrize("when", ["evaluate", "train"])
def test_cancel_keeps_nothing(tmp_path, base_path, when):
    project = _project(tmp_path)
    control = RunControl()

    def on_event(event):
        if event.stage == when:
            control.cancel()

    with pytest.raises(Cancelled):
        _drive(finetune_iter(project, _request(str(base_path), epochs=50), control), on_event)
    assert project.versions() == []
    assert not list((project.root / "models").iterdir())


def test_replay_sample_of_the_shipped_model():
    bundle = load_model("nuclei")
    assert len(replay_sample(bundle, 3, 1.0, seed=0)) == 3
    assert len(replay_sample(bundle, 3, 0.5, seed=0)) == 2
    assert replay_sample(bundle, 3, 0.0, seed=0) == []
    names = [item.name for item in replay_sample(bundle, 2, 1.0, seed=5)]
    assert names == [item.name for item in replay_sample(bundle, 2, 1.0, seed=5)]


def test_nothing_held_out_tunes_post_processing_on_the_corrections(tmp_path, base_path):
    project = _project(tmp_path, n=2)
    result = run_to_end(finetune_iter(project, _request(str(base_path), epochs=2)))
    record = result.version.metadata["finetune"]
    assert record["validated_on"] == [] and sorted(record["trained_on"]) == ["frame0", "frame1"]
    assert record["recipe"]["tuned_on_training"] is True
    assert any("tuned_f1" in v for v in result.version.metadata["validation"])
    # in-sample: the start model's settings stay unless the tuned ones outline better
    assert record["recipe"]["tune_keep_current"] is True
    assert record["recipe"]["tune_keep_margin"] == DEFAULTS.tune_keep_margin > 0
    tuned = next(v for v in result.version.metadata["validation"] if "tuned_f1" in v)
    start = load_model(base_path).postprocess
    kept = {k: result.version.metadata["postprocess"][k] == v for k, v in start.items()}
    assert tuned["tuned_kept_current"] == all(kept.values())
    held_out = _request(str(base_path), epochs=2)
    held_out.val_ids = ["frame1"]
    validated = run_to_end(finetune_iter(project, held_out)).version.metadata["finetune"]
    assert validated["recipe"]["tune_keep_current"] is False
    assert validated["recipe"]["tune_keep_margin"] == 0.0
    request = _request(str(base_path), epochs=2)
    request.tune_on_training = False
    untuned = run_to_end(finetune_iter(project, request)).version.metadata
    assert not any("tuned_f1" in v for v in untuned["validation"])


def test_fine_tune_records_replay(tmp_path):
    project = _project(tmp_path, n=1)
    request = _request("nuclei", epochs=1)
    request.replay_fraction = 2.0
    result = run_to_end(finetune_iter(project, request))
    record = result.version.metadata["finetune"]
    assert record["replay_images"] == 2 and record["recipe"]["replay_fraction"] == 2.0
    assert record["trained_on"] == ["frame0"] and record["validated_on"] == []
    request = _request("nuclei", epochs=1)  # the default: half an image per correction
    record = run_to_end(finetune_iter(project, request)).version.metadata["finetune"]
    assert record["replay_images"] == 1 and record["recipe"]["replay_fraction"] == 0.5


def test_same_request_and_seed_give_the_same_version(tmp_path, base_path):
    weights = []
    for run in range(2):
        project = _project(tmp_path / f"run{run}")
        result = run_to_end(finetune_iter(project, _request(str(base_path), epochs=3, seed=7)))
        weights.append(load_model(result.version.path).network.state_dict())
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_fine_tune_scale_rescales_only_out_of_range_corrections():
    native = new_bundle(ModelConfig(depth=3, base_channels=8), "native")
    native.metadata.update(diameter=18.0, rescaled=False, training={})
    assert fine_tune_scale(native, "auto", 38.0) == "auto"  # inside 12-45 px: native
    assert fine_tune_scale(native, "auto", 110.0) == 18.0  # big DIC cells -> model size
    assert fine_tune_scale(native, "auto", 6.0) == 18.0
    assert fine_tune_scale(native, None, 110.0) is None  # explicit choices are kept
    assert fine_tune_scale(native, 25.0, 110.0) == 25.0
    rescaled = new_bundle(ModelConfig(depth=3, base_channels=8), "rescaled")
    rescaled.metadata.update(diameter=30.0, rescaled=True)
    assert fine_tune_scale(rescaled, "auto", 20.0) == "auto"  # train_iter keeps 30 px


def test_fine_tuned_version_rescales_new_images_like_its_corrections(tmp_path):
    base = new_bundle(ModelConfig(depth=3, base_channels=8), "base")
    base.metadata.update(diameter=12.0, rescaled=False, training={})
    base_path = save_model(base, tmp_path / "base.safetensors")
    project = Project(tmp_path / "p", base_model=str(base_path))
    for seed in range(2):  # disks of radius 30: ~60 px, far outside the native range
        image, labels = random_disks(seed, n=3, shape=(192, 192), radius=(28, 32))
        project.add_correction(image, labels, name=f"big{seed}")
    request = _request(str(base_path), epochs=1, crop=64, target_diameter="auto")
    request.val_ids = []
    version = load_model(run_to_end(finetune_iter(project, request)).version.path)
    assert version.metadata["rescaled"] and version.diameter == pytest.approx(12.0)
    assert version.metadata["native_diameter"] == pytest.approx(60.0, rel=0.15)
    assert version.native_scale_factor == pytest.approx(12.0 / 60.0, rel=0.15)


def test_a_new_instance_model_has_a_distance_head_and_a_class_model_none():
    from segloop.core.finetune import new_model

    instances = [LabelledImage(np.zeros((8, 8)), np.eye(8, dtype=int), "c0")]
    classes = [LabelledImage(np.zeros((8, 8)), (np.eye(8, dtype=int) + 1), "c1")]
    made = new_model(FinetuneRequest(start="scratch"), instances, "new")
    assert made.config.distance_head and made.config.n_classes == 3
    made = new_model(FinetuneRequest(start="scratch", target="classes"), classes, "cls")
    assert not made.config.distance_head


def _fake_reports(monkeypatch, f1_by_mode):
    """evaluate_iter stand-in for check_predict_size: a report with the given F1 per
    SegmentOptions.diameter."""
    import segloop.core.size_check as size_check_module

    def fake(bundle, data, options, should_stop=None, true_diameter=False):
        yield from ()
        matches = type("Matches", (), {"f1": f1_by_mode[options.diameter]})()
        return type("Report", (), {"matches": matches})()

    monkeypatch.setattr(size_check_module, "evaluate_iter", fake)


@pytest.mark.parametrize(
    ("f1_auto", "f1_native", "chosen"), [(0.40, 0.63, "native"), (0.60, 0.68, "auto")]
)
def test_size_check_switches_to_the_corrections_scale_only_when_clearly_better(
    monkeypatch, f1_auto, f1_native, chosen
):
    from segloop.core.finetune import check_predict_size

    _fake_reports(monkeypatch, {"auto": f1_auto, "native": f1_native})
    bundle = new_bundle(ModelConfig(depth=3, base_channels=8), "v1")
    bundle.metadata["predict"] = {"diameter": "auto", "tta": False}
    check = [LabelledImage(*random_disks(0), name="frame0")]
    record = run_to_end(check_predict_size(bundle, check, 0.1))
    assert record["chosen"] == chosen and bundle.metadata["size_check"] == record
    assert record["f1_auto"] == f1_auto and record["images"] == ["frame0"]
    assert bundle.predict_defaults["diameter"] == (None if chosen == "native" else "auto")
    assert bundle.predict_defaults["tta"] is False  # the rest of the defaults is kept


def test_size_check_is_skipped_without_auto_or_corrections(monkeypatch):
    from segloop.core.finetune import check_predict_size

    _fake_reports(monkeypatch, {"auto": 0.0, "native": 1.0})
    bundle = new_bundle(ModelConfig(depth=3, base_channels=8), "v1")
    check = [LabelledImage(*random_disks(0), name="frame0")]
    assert run_to_end(check_predict_size(bundle, check, 0.1)) is None  # native already
    bundle.metadata["predict"] = {"diameter": "auto"}
    assert run_to_end(check_predict_size(bundle, [], 0.1)) is None
    assert run_to_end(check_predict_size(bundle, check, None)) is None
    assert "size_check" not in bundle.metadata and bundle.predict_defaults["diameter"] == "auto"


def test_fine_tuned_version_records_its_size_check_and_the_cli_file_gets_it(tmp_path):
    from segloop.core.finetune import adapt_iter

    base = new_bundle(ModelConfig(depth=3, base_channels=8), "base")
    base.metadata.update(diameter=14.0, rescaled=False, training={})
    base.metadata["predict"] = {"diameter": "auto"}
    base.metadata["size_check"] = {"chosen": "native", "images": ["the parent's"]}
    base_path = save_model(base, tmp_path / "base.safetensors")
    project = _project(tmp_path, n=2, base=str(base_path))
    result = run_to_end(finetune_iter(project, _request(str(base_path), epochs=2)))
    check = result.version.metadata["size_check"]
    assert sorted(check["images"]) == ["frame0", "frame1"]  # this run's, not the parent's
    assert check["chosen"] == ("native" if check["f1_native"] - check["f1_auto"] > 0.1 else "auto")
    # segloop train --init: the file holds the final metadata (corrections' diameter, check)
    bundle = load_model(base_path)
    items = project.load_corrections()
    out = tmp_path / "init.safetensors"
    config = recipe_config(epochs=2, crop=64, batch_size=2, val_interval_s=1e9)
    replay = [  # two replay images of far larger objects: they must not set the size
        LabelledImage(*random_disks(seed, n=3, shape=(192, 192), radius=(28, 32)), name=f"r{seed}")
        for seed in range(2)
    ]
    run_to_end(adapt_iter(bundle, items, items, config, replay, out_path=out))
    written = load_model(out).metadata
    assert written["native_diameter"] == pytest.approx(median_diameter(items))
    assert median_diameter(items + replay) > 1.5 * median_diameter(items)
    assert written["size_check"] == bundle.metadata["size_check"]


def test_frames_nobody_corrected_reach_the_run_and_its_record(tmp_path, base_path):
    project = _project(tmp_path)
    frames = [dark_disks(seed, shape=(96, 96))[0] for seed in (7, 8, 9)]
    request = _request(str(base_path), unlabelled_weight=1.0)
    request.unlabelled = frames
    result = run_to_end(finetune_iter(project, request))
    assert result.version.metadata["finetune"]["recipe"]["unlabelled_frames"] == 3
    assert all("pseudo_loss" in row for row in result.training.history)
    plain = run_to_end(finetune_iter(project, _request(str(base_path))))
    assert plain.version.metadata["finetune"]["recipe"]["unlabelled_frames"] == 0
    assert not any("pseudo_loss" in row for row in plain.training.history)
