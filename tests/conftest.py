"""Shared fixtures: synthetic images with known objects, and the shared data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def disks_image(centres, radii, shape=(128, 128), noise=0.05, seed=0):
    """Bright disks on a dark background: (image float32, instance labels int32)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for index, (centre, radius) in enumerate(zip(centres, radii, strict=True), start=1):
        rr, cc = disk(centre, radius, shape=shape)
        labels[rr, cc] = index
    image = (labels > 0) * 0.8 + 0.1 + rng.normal(0, noise, shape)
    return image.astype(np.float32), labels


def random_disks(seed, n=10, shape=(128, 128), radius=(5, 10)):
    """Non-overlapping-ish random disks (later ones overwrite earlier ones)."""
    rng = np.random.default_rng(seed)
    radii = rng.integers(radius[0], radius[1], n)
    centres = [tuple(rng.integers(r, s - r) for s in shape) for r in radii]
    return disks_image(centres, radii, shape, seed=seed)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def _train_disk_model(folder, target_diameter):
    from segloop.core.evaluation import LabelledImage
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import ModelConfig
    from segloop.core.training import TrainConfig, train

    data = [LabelledImage(*random_disks(seed), name=str(seed)) for seed in range(10)]
    bundle = new_bundle(ModelConfig(depth=3, base_channels=8), "disks")
    config = TrainConfig(
        epochs=150,
        crop=96,
        batch_size=4,
        val_interval_s=1e9,
        learning_rate=3e-3,
        target_diameter=target_diameter,
    )
    train(bundle, data, config)
    return save_model(bundle, folder / "disks.safetensors")


@pytest.fixture(scope="session")
def disk_model(tmp_path_factory):
    """A small U-Net trained ~25 s on synthetic disks (radius 5-10) at native scale;
    saved to a file (path returned)."""
    return _train_disk_model(tmp_path_factory.mktemp("models"), None)


@pytest.fixture(scope="session")
def rescaled_disk_model(tmp_path_factory):
    """The same, trained with every image rescaled so objects are 24 px across."""
    return _train_disk_model(tmp_path_factory.mktemp("models"), 24.0)
