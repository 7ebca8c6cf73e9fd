"""Colour corrections: how they become grey (luma or hematoxylin) is chosen on them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from segloop.core import colour_choice
from segloop.core.colour_choice import choose_colour_iter, is_colour
from segloop.core.evaluation import LabelledImage
from segloop.core.finetune import build_request, finetune_iter
from segloop.core.imageio import prepare_image, to_grayscale
from segloop.core.modelio import load_model, new_bundle, save_model
from segloop.core.models import ModelConfig
from segloop.core.progress import run_to_end
from segloop.core.project import Project

from ..conftest import random_disks

PINK, PURPLE, WHITE = (235, 140, 190), (95, 55, 150), (245, 235, 240)


def he_like(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """H&E-like RGB: purple nuclei (the disks) on pink cytoplasm and white gaps."""
    _, labels = random_disks(seed, n=6, shape=(64, 64))
    rgb = np.empty((64, 64, 3), np.uint8)
    rgb[:] = PINK
    rgb[:8] = WHITE
    rgb[labels > 0] = PURPLE
    return rgb, labels


def test_hematoxylin_makes_nuclei_the_brightest():
    rgb, labels = he_like(0)
    grey = to_grayscale(rgb, colour="hematoxylin")
    assert grey.shape == labels.shape and grey.dtype == np.float32
    nuclei, cytoplasm, gap = grey[labels > 0].mean(), grey[8:][labels[8:] == 0].mean(), grey[0, 0]
    assert nuclei > max(cytoplasm, gap) + 0.05
    luma = to_grayscale(rgb)  # nuclei dark, as in the image
    assert luma[labels > 0].mean() < luma[8:][labels[8:] == 0].mean()
    # 8-bit values in other types give the same channel
    assert np.allclose(to_grayscale(rgb.astype(np.uint16) * 257, colour="hematoxylin"), grey)
    assert np.allclose(to_grayscale(rgb.astype(np.float32), colour="hematoxylin"), grey)
    same = np.repeat(rgb[..., :1], 3, axis=-1)  # grey stored as RGB: luma is exact
    assert np.array_equal(to_grayscale(same), rgb[..., 0])
    stack = np.stack([rgb, rgb])
    assert prepare_image(stack, colour="hematoxylin").shape == (2, 64, 64)
    with pytest.raises(ValueError, match="colour must be one of"):
        to_grayscale(rgb, colour="eosin")


def test_is_colour():
    rgb, _ = he_like(1)
    assert is_colour(rgb)
    assert not is_colour(rgb[..., 0])
    assert not is_colour(np.repeat(rgb[..., :1], 3, axis=-1))


def _fake_scores(monkeypatch, by_mode, seen):
    def evaluate(bundle, items, options, should_stop=None):
        seen.append(bundle.preprocess["colour"])
        seg = by_mode[bundle.preprocess["colour"]]
        return SimpleNamespace(seg=seg, matches=SimpleNamespace(f1=seg))
        yield  # a generator, as evaluate_iter

    monkeypatch.setattr(colour_choice, "evaluate_iter", evaluate)


def _tiny():
    return new_bundle(ModelConfig(depth=2, base_channels=4), "tiny")


@pytest.mark.parametrize(
    ("by_mode", "chosen"),
    [
        ({"luma": 0.2, "hematoxylin": 0.5}, "hematoxylin"),
        ({"luma": 0.5, "hematoxylin": 0.2}, "luma"),
        ({"luma": 0.4, "hematoxylin": 0.4}, "luma"),  # a tie keeps the start's
    ],
)
def test_the_better_conversion_on_the_corrections_is_kept(monkeypatch, by_mode, chosen):
    seen: list[str] = []
    _fake_scores(monkeypatch, by_mode, seen)
    bundle = _tiny()
    corrections = [LabelledImage(*he_like(seed), name=str(seed)) for seed in range(2)]
    record = run_to_end(choose_colour_iter(bundle, corrections))
    assert sorted(seen) == ["hematoxylin", "luma"]
    assert record["chosen"] == chosen == bundle.preprocess["colour"]
    assert {m: s["seg"] for m, s in record["scores"].items()} == by_mode


def test_grey_or_class_corrections_choose_nothing(monkeypatch):
    seen: list[str] = []
    _fake_scores(monkeypatch, {"luma": 0.0, "hematoxylin": 1.0}, seen)
    bundle = _tiny()
    rgb, labels = he_like(2)
    grey = [LabelledImage(rgb[..., 0], labels, "grey")]
    assert run_to_end(choose_colour_iter(bundle, grey)) is None
    classes = new_bundle(ModelConfig(depth=2, base_channels=4, n_classes=3), "c", target="classes")
    assert run_to_end(choose_colour_iter(classes, [LabelledImage(rgb, labels, "c")])) is None
    assert seen == [] and bundle.preprocess["colour"] == "luma"


def test_a_stopped_choice_leaves_the_start_conversion(monkeypatch):
    def failing(bundle, items, options, should_stop=None):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(colour_choice, "evaluate_iter", failing)
    bundle = _tiny()
    with pytest.raises(KeyboardInterrupt):
        run_to_end(choose_colour_iter(bundle, [LabelledImage(*he_like(3), name="x")]))
    assert bundle.preprocess["colour"] == "luma"


def test_a_fine_tune_on_colour_corrections_records_the_choice(tmp_path):
    start = new_bundle(ModelConfig(depth=2, base_channels=4), "base")
    start.metadata["training"] = {}  # a trained model (a new network chooses nothing)
    base = save_model(start, tmp_path / "b")
    project = Project(tmp_path / "project", base_model=str(base))
    for seed in range(2):
        project.add_correction(*he_like(seed), name=f"he{seed}")
    stored = project.load_corrections()
    assert all(item.image.shape == (64, 64, 3) for item in stored)  # kept in colour
    request = build_request(str(base), epochs=1, crop=48, batch_size=2)
    result = run_to_end(finetune_iter(project, request))
    version = load_model(result.version.path)
    record = version.metadata["colour_choice"]
    assert set(record["scores"]) == {"luma", "hematoxylin"}
    assert version.preprocess["colour"] == record["chosen"]


def test_prediction_and_training_follow_the_model_conversion():
    from segloop.core.samples import prepared_frame
    from segloop.core.segment import segment

    bundle = _tiny()
    rgb, _ = he_like(4)
    luma = segment(bundle, rgb).probabilities
    luma_frame = prepared_frame(rgb, bundle, "x")
    chosen = segment(bundle, rgb, colour="hematoxylin").probabilities  # the run's option
    assert not np.allclose(chosen, luma)
    bundle.metadata["preprocess"]["colour"] = "hematoxylin"
    assert np.allclose(segment(bundle, rgb).probabilities, chosen)  # the model's default
    assert np.allclose(segment(bundle, rgb, colour="luma").probabilities, luma)
    expected = prepare_image(rgb, invert="never", colour="hematoxylin")
    assert np.array_equal(prepared_frame(rgb, bundle, "x"), expected)
    assert not np.array_equal(expected, luma_frame)


def test_hematoxylin_ignores_the_grey_shortcut_and_scales_floats_as_8_bit():
    white = np.full((16, 16, 3), 255, np.uint8)
    assert np.allclose(to_grayscale(white, colour="hematoxylin"), 0.0, atol=1e-3)
    black = np.zeros((16, 16, 3), np.uint8)
    assert to_grayscale(black, colour="hematoxylin").min() > 0.5  # dense stain, not 0
    rgb, _ = he_like(5)
    as_float = rgb.astype(np.float32)
    as_float[0, 0] = 300.0  # one value out of range does not rescale the rest
    grey = to_grayscale(rgb, colour="hematoxylin")
    assert np.allclose(to_grayscale(as_float, colour="hematoxylin")[1:], grey[1:])


def test_a_colour_frame_replaces_its_grey_copy_from_an_older_project(tmp_path):
    project = Project(tmp_path / "p")
    rgb, labels = he_like(6)
    ident = project.add_correction(to_grayscale(rgb), labels, "he")  # as segloop stored it
    assert project.add_correction(rgb, labels, "he") == ident  # not "he-2"
    assert project.correction_ids() == [ident]
    assert project.load_corrections()[0].image.shape == (64, 64, 3)
    assert len(project.history(ident)) == 1  # the grey copy is kept in the history
    other, _ = he_like(7)
    assert project.add_correction(other, labels, "he") != ident  # another image: beside it


def test_colour_corrections_after_many_grey_ones_still_choose(monkeypatch):
    seen: list[str] = []
    _fake_scores(monkeypatch, {"luma": 0.1, "hematoxylin": 0.3}, seen)
    bundle = _tiny()
    grey = [LabelledImage(he_like(s)[0][..., 0], he_like(s)[1], f"g{s}") for s in range(5)]
    corrections = [*grey, LabelledImage(*he_like(9), name="colour")]
    assert run_to_end(choose_colour_iter(bundle, corrections))["chosen"] == "hematoxylin"


def test_another_float_image_under_the_same_name_is_stored_beside_it(tmp_path):
    project = Project(tmp_path / "p")
    rgb, labels = he_like(10)
    unrelated = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    first = project.add_correction(unrelated, labels, "he")
    assert project.add_correction(rgb, labels, "he") != first
    assert project.history(first) == []


def test_provenance_names_the_model_conversion():
    from segloop.core.provenance import model_record

    bundle = _tiny()
    assert model_record(bundle)["colour"] == "luma"
    bundle.metadata["preprocess"]["colour"] = "hematoxylin"
    assert model_record(bundle)["colour"] == "hematoxylin"
