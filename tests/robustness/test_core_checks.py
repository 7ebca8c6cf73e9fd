"""Core-level guards: bad training/model/weight-map parameters are refused with a message
naming the parameter, and an interrupted training never replaces the file at out_path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segloop.core.evaluation import LabelledImage
from segloop.core.memory import InsufficientMemoryError, check_fits, format_bytes
from segloop.core.modelio import load_model, new_bundle, save_model
from segloop.core.models import ModelConfig, build_network
from segloop.core.training import TrainConfig, checkpoint_path, train_iter
from segloop.core.weightmap import weight_map

from ..conftest import random_disks


@pytest.mark.parametrize(
    "options, name",
    [
        ({"minutes": math.nan}, "minutes"),
        ({"minutes": math.inf}, "minutes"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1, "batch_size": 0}, "batch_size"),
        ({"epochs": 1, "crop": 0}, "crop"),
        ({"epochs": 1, "crop": 48.5}, "crop"),
        ({"epochs": 1, "learning_rate": math.nan}, "learning_rate"),
        ({"epochs": 1, "w0": -1.0}, "w0"),
        ({"epochs": 1, "sigma": math.inf}, "sigma"),
        ({"epochs": 1, "target_diameter": 0.0}, "target_diameter"),
        ({"epochs": 1, "target_diameter": "big"}, "target_diameter"),
    ],
)
def test_train_config_refuses_bad_values(options, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**options)


@pytest.mark.parametrize(
    "config, name",
    [
        ({"base_channels": 16.0}, "base_channels"),
        ({"base_channels": 4096}, "base_channels"),
        ({"depth": 64}, "depth"),
        ({"depth": True}, "depth"),
        ({"n_classes": 70_000}, "n_classes"),
        ({"batch_norm": "yes"}, "batch_norm"),
        ({"arch": "segnet", "depth": 2, "convs_per_level": (2, 2, 3)}, "convs_per_level"),
    ],
)
def test_model_config_refuses_bad_values(config, name):
    with pytest.raises(ValueError, match=name):
        ModelConfig(**config)


def test_network_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    monkeypatch.setenv("SEGLOOP_MEMORY_LIMIT", str(2**30))
    with pytest.raises(InsufficientMemoryError, match="base_channels 512"):
        build_network(ModelConfig(base_channels=512, depth=6))


def test_check_fits_compares_with_the_limit(monkeypatch):
    monkeypatch.setenv("SEGLOOP_MEMORY_LIMIT", str(100 * 2**20))
    check_fits(50 * 2**20, "half")
    with pytest.raises(InsufficientMemoryError, match=r"--tile 9 needs about 90.0 MiB"):
        check_fits(90 * 2**20, "--tile 9")
    assert format_bytes(3 * 2**30) == "3.0 GiB"


@pytest.mark.parametrize("w0, sigma", [(-1, 5), (1e39, 5), (math.inf, 5), (10, math.inf), (10, 0)])
def test_weight_map_refuses_bad_parameters(w0, sigma):
    with pytest.raises(ValueError, match="w0" if w0 != 10 else "sigma"):
        weight_map(np.zeros((8, 8), np.int32), w0=w0, sigma=sigma)


def _data(n=3):
    return [
        LabelledImage(*random_disks(seed, n=4, shape=(48, 48)), name=f"{seed}") for seed in range(n)
    ]


def test_interrupted_training_leaves_out_path_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "m.safetensors"
    old_bundle = new_bundle(ModelConfig(depth=3, base_channels=4), "old")
    save_model(old_bundle, out)
    old = out.read_bytes()
    bundle = new_bundle(ModelConfig(depth=3, base_channels=4), "new")
    config = TrainConfig(epochs=50, crop=48, batch_size=2, val_interval_s=0, tune_postprocess=False)
    steps = []

    def interrupt_on_step_4():
        steps.append(1)
        if len(steps) > 3:
            raise KeyboardInterrupt
        return False

    gen = train_iter(bundle, _data(), config, out_path=out, should_stop=interrupt_on_step_4)
    with pytest.raises(KeyboardInterrupt):
        for _ in gen:
            pass
    assert out.read_bytes() == old
    side = checkpoint_path(out)
    assert side == tmp_path / "m.checkpoint.safetensors"
    assert load_model(side).metadata["training"]["checkpoint"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, side.name])


def test_one_pixel_objects_are_not_rescaled_without_bound():
    image, _ = random_disks(0, shape=(48, 48))
    labels = np.zeros((48, 48), np.int32)
    labels[10, 10] = 1
    bundle = new_bundle(ModelConfig(depth=3, base_channels=4), "m")
    config = TrainConfig(epochs=1, crop=48, target_diameter="auto", tune_postprocess=False)
    gen = train_iter(bundle, [LabelledImage(image, labels, "dot.tif")], config)
    with pytest.raises(ValueError, match=r"dot.tif: .* 26.6x"):
        for _ in gen:
            pass
