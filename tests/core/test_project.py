import numpy as np
import pytest

from segloop.core.metrics import match_instances
from segloop.core.modelio import load_model, new_bundle, save_model
from segloop.core.models import ModelConfig
from segloop.core.progress import run_to_end
from segloop.core.project import Project, fine_tune_iter
from segloop.core.segment import segment
from segloop.core.training import TrainConfig

from ..conftest import random_disks


def dark_disks(seed, **kw):
    """A new 'modality': dark disks on a bright background."""
    image, labels = random_disks(seed, **kw)
    return 1.0 - image, labels


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
        project.add_correction(image, np.zeros_like(labels), "blank")
    with pytest.raises(ValueError, match="same size"):
        project.add_correction(image, labels[:10], "cut")


def test_sparse_correction_ignores_unlabelled_pixels(tmp_path):
    project = Project(tmp_path / "p")
    image, labels = random_disks(0, shape=(64, 64))
    project.add_correction(image, labels, "sparse", sparse=True)
    item = project.load_corrections()[0]
    np.testing.assert_array_equal(item.ignore, labels == 0)


def test_fine_tune_improves_held_back_frame_and_saves_versions(tmp_path):
    base = new_bundle(ModelConfig(depth=3, base_channels=8), "base")
    base_path = save_model(base, tmp_path / "base.safetensors")
    project = Project(tmp_path / "p", base_model=str(base_path))
    for seed in range(4):
        project.add_correction(*dark_disks(seed), name=f"frame{seed}")
    held_image, held_labels = dark_disks(50)
    before = match_instances(held_labels, segment(load_model(base_path), held_image).instances)
    config = TrainConfig(epochs=60, crop=96, batch_size=4, learning_rate=3e-3, val_interval_s=1e9)
    info, result = run_to_end(fine_tune_iter(project, base_path, config))
    assert info.path.name == "v1.safetensors" and info.path.exists()
    after = match_instances(held_labels, segment(load_model(info.path), held_image).instances)
    assert after.f1 > before.f1 + 0.3
    meta = info.metadata["finetune"]
    assert len(meta["trained_on"]) + len(meta["validated_on"]) == 4
    assert (
        meta["metrics"]["after"]["corrections"]["f1"]
        > meta["metrics"]["before"]["corrections"]["f1"]
    )
    # the next run becomes v2, starting from v1; both are listed
    config = TrainConfig(epochs=1, crop=96, batch_size=4, tune_postprocess=False)
    info2, _ = run_to_end(fine_tune_iter(project, info.path, config))
    assert [v.version for v in project.versions()] == [1, 2]
    assert info2.metadata["parent"] == str(info.path)


def test_fine_tune_scale_rescales_only_out_of_range_corrections():
    from segloop.core.project import fine_tune_scale

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
    config = TrainConfig(epochs=1, crop=64, batch_size=2, target_diameter="auto")
    info, _ = run_to_end(fine_tune_iter(project, base_path, config, val_ids=[]))
    version = load_model(info.path)
    assert version.metadata["rescaled"] and version.diameter == pytest.approx(12.0)
    assert version.metadata["native_diameter"] == pytest.approx(60.0, rel=0.15)
    assert version.native_scale_factor == pytest.approx(12.0 / 60.0, rel=0.15)
