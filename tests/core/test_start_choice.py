"""Choosing the start model of a fine-tune from the corrections (``--init auto``)."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.core.evaluation import LabelledImage
from segloop.core.finetune import FinetuneRequest, finetune_iter, recipe_config
from segloop.core.modelio import new_bundle, save_model, shipped_models
from segloop.core.models import ModelConfig
from segloop.core.progress import run_to_end
from segloop.core.project import Project
from segloop.core.start_choice import AUTO_START, choose_start_iter, scorable

from ..conftest import random_disks


def nuclei_like(seed):
    image, labels = random_disks(seed, n=8, shape=(128, 128))
    return LabelledImage(image, labels, f"frame{seed}")


def test_the_model_that_segments_the_corrections_best_is_chosen(tmp_path):
    """Bright disks on black are what the shipped nuclei model knows; an untrained
    network of the same kind finds nothing and must lose."""
    untrained = save_model(
        new_bundle(ModelConfig(depth=2, base_channels=4), "blank"), tmp_path / "b"
    )
    events = []
    gen = choose_start_iter([nuclei_like(0)], ["nuclei", str(untrained)])
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        choice = stop.value
    assert choice.name == "nuclei"
    assert choice.scores["nuclei"]["seg"] > choice.scores[str(untrained)]["seg"] + 0.3
    assert choice.to_dict()["chosen"] == "nuclei"
    assert any("scoring nuclei" in e.message for e in events)
    assert set(run_to_end(choose_start_iter([nuclei_like(1)])).scores) <= set(shipped_models())


def test_sparse_or_empty_corrections_cannot_choose():
    image, labels = random_disks(0, shape=(64, 64))
    sparse = LabelledImage(image, labels, "s", ignore=labels == 0)
    empty = LabelledImage(image, np.zeros_like(labels), "e")
    assert scorable([sparse, empty]) == []
    with pytest.raises(ValueError, match="dense correction"):
        run_to_end(choose_start_iter([sparse, empty], ["nuclei"]))


def test_a_fine_tune_from_auto_records_its_choice(tmp_path):
    project = Project(tmp_path / "p")
    for seed in range(2):
        item = nuclei_like(seed)
        project.add_correction(item.image, item.labels, item.name)
    options = {"epochs": 2, "crop": 64, "batch_size": 2, "val_interval_s": 1e9}
    request = FinetuneRequest(start=AUTO_START, config=recipe_config(**options), score_base=False)
    result = run_to_end(finetune_iter(project, request))
    record = result.version.finetune
    assert record["start_choice"]["chosen"] == record["base"] == "nuclei"
    assert set(record["start_choice"]["scores"]) >= {"nuclei"}
    assert project.info.get("base_model") is None  # "auto" names no model of the drafts


def test_candidates_are_scored_at_the_scale_fine_tuning_trains_them_at():
    from segloop.core.modelio import load_model
    from segloop.core.start_choice import tuning_scale

    ecoli, cells = load_model("ecoli"), load_model("cells")  # native / rescaled
    assert tuning_scale(ecoli, 30.0) == "native"  # inside its native range: as it is
    assert tuning_scale(ecoli, 110.0) == 110.0  # DIC-sized cells: rescaled, as in training
    assert tuning_scale(cells, 20.0) == 20.0  # a rescaled model always rescales
    assert tuning_scale(cells, None) == "native"


def test_stop_while_choosing_saves_nothing_and_raises_nothing(tmp_path):
    from segloop.core.progress import RunControl

    project = Project(tmp_path / "p")
    item = nuclei_like(0)
    project.add_correction(item.image, item.labels, item.name)
    options = {"epochs": 2, "crop": 64, "batch_size": 2, "val_interval_s": 1e9}
    request = FinetuneRequest(start=AUTO_START, config=recipe_config(**options), score_base=False)
    control = RunControl()
    gen = finetune_iter(project, request, control)
    try:
        while True:
            event = next(gen)
            if event.stage == "choose start":
                control.stop()
    except StopIteration as stop:
        result = stop.value
    assert result.version is None and result.stopped
    assert project.versions() == []
