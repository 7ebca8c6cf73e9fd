import numpy as np
import pytest
import torch

from segloop.core.evaluation import POSTPROCESS_GRID, LabelledImage
from segloop.core.metrics import match_instances
from segloop.core.modelio import load_model, new_bundle
from segloop.core.models import ModelConfig
from segloop.core.segment import segment
from segloop.core.training import TrainConfig, split_validation, train, train_iter

from ..conftest import disks_image, random_disks


def tiny_data(n=4):
    return [
        LabelledImage(*random_disks(seed, n=6, shape=(64, 64)), name=str(seed)) for seed in range(n)
    ]


def tiny_bundle():
    return new_bundle(ModelConfig(depth=2, base_channels=4), "tiny")


def test_fixed_seed_gives_identical_weights():
    weights = []
    for _ in range(2):
        bundle = tiny_bundle()
        train(
            bundle,
            tiny_data(),
            TrainConfig(epochs=2, crop=48, batch_size=2, seed=3, tune_postprocess=False),
        )
        weights.append(bundle.network.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_progress_reports_step_epoch_loss_and_validation(tmp_path):
    events = []
    gen = train_iter(
        tiny_bundle(),
        tiny_data(),
        TrainConfig(epochs=3, crop=48, batch_size=2, tune_postprocess=False),
    )
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    steps = [e.data for e in events if e.stage == "train"]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert all(np.isfinite(s["loss"]) for s in steps)
    assert steps[-1]["epoch"] == pytest.approx(3.0)
    assert any("validation" in e.data for e in events)
    assert result.steps == len(steps) and not result.stopped


def test_stop_request_keeps_a_saved_model(tmp_path):
    out = tmp_path / "m.safetensors"
    calls = []
    result = train(
        tiny_bundle(),
        tiny_data(),
        TrainConfig(epochs=50, crop=48, batch_size=2, val_interval_s=0),
        out_path=out,
        should_stop=lambda: len(calls) > 5 or calls.append(1),
    )
    assert result.stopped and result.steps < 50
    loaded = load_model(out)
    assert loaded.metadata["training"]["stopped"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_training_on_disks_beats_untrained_and_splits_touching(disk_model):
    bundle = load_model(disk_model)
    untrained = new_bundle(bundle.config, "untrained")
    trained_f1, untrained_f1 = [], []
    for seed in range(100, 104):
        image, labels = random_disks(seed)
        trained_f1.append(match_instances(labels, segment(bundle, image).instances).f1)
        untrained_f1.append(match_instances(labels, segment(untrained, image).instances).f1)
    assert np.mean(trained_f1) > 0.85
    assert np.mean(trained_f1) > np.mean(untrained_f1) + 0.5
    # two touching disks and a separate one: three objects, not two
    image, labels = disks_image([(40, 40), (40, 58), (90, 90)], [10, 10, 8])
    found = segment(bundle, image).instances
    assert found.max() == 3
    assert match_instances(labels, found).tp == 3


def test_fine_tune_on_ignored_pixels_changes_nothing_but_labelled_ones():
    # Labels everywhere ignored except one small region: loss still finite, training runs.
    image, labels = random_disks(0, shape=(64, 64))
    ignore = np.ones_like(labels, bool)
    ignore[:16, :16] = False
    data = [LabelledImage(image, labels, "a", ignore=ignore)]
    result = train(
        tiny_bundle(),
        data,
        TrainConfig(epochs=2, crop=48, batch_size=2, val_fraction=0, tune_postprocess=False),
    )
    assert all(np.isfinite(h["loss"]) for h in result.history)


def test_split_validation_is_seeded_and_disjoint():
    data = tiny_data(10)
    train_a, val_a = split_validation(data, 0.2, seed=1)
    train_b, val_b = split_validation(data, 0.2, seed=1)
    assert [d.name for d in val_a] == [d.name for d in val_b] and len(val_a) == 2
    assert not {d.name for d in train_a} & {d.name for d in val_a}


def test_bad_training_input_is_reported():
    with pytest.raises(ValueError, match="minutes"):
        TrainConfig()
    empty = [LabelledImage(np.zeros((64, 64), np.float32), np.zeros((64, 64), np.int32), "e")]
    with pytest.raises(ValueError, match="no objects"):
        train(tiny_bundle(), empty, TrainConfig(epochs=1))
    mismatch = [LabelledImage(np.zeros((64, 64), np.float32), np.ones((32, 32), np.int32), "m")]
    with pytest.raises(ValueError, match="m: image shape"):
        train(tiny_bundle(), mismatch, TrainConfig(epochs=1))


def test_auto_target_diameter_rescales_only_outside_the_native_range():
    from segloop.core.training import resolve_target_diameter

    small = [LabelledImage(*random_disks(0, radius=(3, 5)), name="s")]
    medium = [LabelledImage(*random_disks(0, radius=(8, 12)), name="m")]
    fresh = tiny_bundle()
    assert resolve_target_diameter("auto", fresh, small) == 30.0
    assert resolve_target_diameter("auto", fresh, medium) is None
    assert resolve_target_diameter(17.0, fresh, medium) == 17.0
    fresh.metadata.update(rescaled=True, diameter=24.0)
    assert resolve_target_diameter("auto", fresh, medium) == 24.0


def test_distance_head_learns_the_distance_and_splits_touching():
    from segloop.core.targets import normalized_distance

    data = [LabelledImage(*random_disks(seed), name=str(seed)) for seed in range(10)]
    bundle = new_bundle(ModelConfig(depth=3, base_channels=8, distance_head=True), "dist")
    config = TrainConfig(epochs=100, crop=96, batch_size=4, val_interval_s=1e9, learning_rate=3e-3)
    train(bundle, data, config)
    tuned = bundle.metadata["validation"][-1]  # post-processing tuned on the val images
    assert tuned["tuned_f1"] > 0.8 and tuned["tuned_count_error"] < 0.2
    assert bundle.postprocess["min_peak"] in POSTPROCESS_GRID["min_peak"]
    image, labels = random_disks(200)
    result = segment(bundle, image)
    assert result.probabilities.shape == (3, *labels.shape)
    assert result.distance.shape == labels.shape
    truth = normalized_distance(labels)
    assert np.corrcoef(truth.ravel(), result.distance.ravel())[0, 1] > 0.8
    assert match_instances(labels, result.instances).f1 > 0.8
    image, labels = disks_image([(40, 40), (40, 58), (90, 90)], [10, 10, 8])
    found = segment(bundle, image).instances
    assert match_instances(labels, found).tp == 3


def test_validation_over_several_domains_is_their_macro_average(disk_model):
    from segloop.core.evaluation import LabelledImage
    from segloop.core.progress import run_to_end
    from segloop.core.training import _validate

    bundle = load_model(disk_model)
    easy = [LabelledImage(*random_disks(seed), f"easy{seed}", domain="a") for seed in (1, 2, 3)]
    image, labels = random_disks(9)
    hard = [LabelledImage(np.full_like(image, 0.1), labels, "blank", domain="b")]  # no signal
    config = TrainConfig(epochs=1)
    score, metrics = run_to_end(_validate(bundle, easy + hard, config, None))
    assert metrics["f1[a]"] > 0.8 and metrics["f1[b]"] == 0.0
    assert score == metrics["macro_f1"] == pytest.approx((metrics["f1[a]"] + 0.0) / 2)
    assert metrics["f1"] > score  # pooled, the three easy images outweigh the blank one
    pooled, only = run_to_end(_validate(bundle, easy, config, None))
    assert "macro_f1" not in only and pooled == only["f1"]


def _object_share_of_crops(object_crops: float, n_batches: int = 6) -> list[float]:
    """Share of object pixels in the target of each crop, for one small disk in a large
    empty correction (as an E. coli frame with a few rods)."""
    from segloop.core.augment import AugmentConfig
    from segloop.core.models import tile_geometry
    from segloop.core.samples import _batch, make_sample

    image, labels = disks_image([(150, 40)], [6], shape=(192, 192))
    bundle = tiny_bundle()
    config = TrainConfig(
        epochs=1, crop=32, batch_size=4, object_crops=object_crops, augment=AugmentConfig.none()
    )
    sample = make_sample(LabelledImage(image, labels, "sparse"), bundle, config)
    geometry = tile_geometry(bundle.config, config.crop)
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(n_batches):
        _, targets, _, _ = _batch([sample], [0] * 4, geometry, config, rng, geometry.margin)
        shares += [float((t > 0).float().mean()) for t in targets]
    return shares


def test_object_crops_centre_crops_on_the_objects():
    centred = _object_share_of_crops(1.0)
    assert all(share > 0 for share in centred)  # every crop holds part of the object
    uniform = _object_share_of_crops(0.0)
    assert sum(share > 0 for share in uniform) < len(uniform) // 2  # most miss it
    with pytest.raises(ValueError, match="object_crops"):
        TrainConfig(epochs=1, object_crops=1.5)


def test_training_drops_a_size_model_fitted_to_the_old_weights():
    bundle = tiny_bundle()
    bundle.metadata["size_model"] = {"weights": [0.0], "bias": 3.0, "levels": 3, "crop": 256}
    config = TrainConfig(epochs=1, crop=48, batch_size=2, val_fraction=0, tune_postprocess=False)
    train(bundle, tiny_data(2), config)
    assert "size_model" not in bundle.metadata


@pytest.mark.parametrize("distance_head", [False, True])
def test_error_pixels_are_the_labelled_pixels_the_network_gets_wrong(distance_head):
    from segloop.core.predict import predict_probabilities
    from segloop.core.samples import error_pixels

    config = ModelConfig(depth=2, base_channels=4, distance_head=distance_head)
    bundle = new_bundle(config, "tiny")
    image = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    predicted = predict_probabilities(bundle, image)[: bundle.config.n_classes].argmax(0)
    target = predicted.astype(np.int64)
    assert error_pixels(image, target, bundle) is None  # all right: nothing to centre on
    target[5:10, 20:24] = (predicted[5:10, 20:24] + 1) % bundle.config.n_classes
    target[30:, :] = -1  # unlabelled pixels are never errors
    wrong = error_pixels(image, target, bundle)
    expected = np.zeros(target.shape, bool)
    expected[5:10, 20:24] = True
    assert np.array_equal(np.sort(wrong), np.flatnonzero(expected))


def test_error_crops_centre_crops_on_the_errors():
    from segloop.core.augment import AugmentConfig
    from segloop.core.models import tile_geometry
    from segloop.core.samples import _batch, make_sample

    image, labels = disks_image([(150, 40)], [6], shape=(192, 192))
    bundle = tiny_bundle()
    config = TrainConfig(
        epochs=1, crop=32, batch_size=4, error_crops=1.0, augment=AugmentConfig.none()
    )
    sample = make_sample(LabelledImage(image, labels, "one disk"), bundle, config)
    assert sample.errors is not None  # an untrained network gets pixels wrong
    assert sample.errors.max() < sample.target.size
    sample.errors = np.flatnonzero(labels > 0)  # say the network misses just the disk
    geometry = tile_geometry(bundle.config, config.crop)
    rng = np.random.default_rng(0)
    for _ in range(4):
        _, targets, _, _ = _batch([sample], [0] * 4, geometry, config, rng, geometry.margin)
        assert all((t > 0).any() for t in targets)
    with pytest.raises(ValueError, match="error_crops"):
        TrainConfig(epochs=1, error_crops=-0.1)
