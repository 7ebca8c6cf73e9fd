from pathlib import Path

import numpy as np
import pytest

import segloop
from segloop.core.metrics import match_instances
from segloop.core.modelio import load_model
from segloop.core.segment import SegmentOptions, segment, segment_iter

from ..conftest import disks_image, random_disks


def test_stack_is_segmented_frame_by_frame(disk_model):
    bundle = load_model(disk_model)
    frames = [random_disks(seed, n=5)[0] for seed in range(3)]
    frames[1] = np.full_like(frames[1], 0.1)  # an empty frame
    result = segment(bundle, np.stack(frames))
    assert result.instances.shape == (3, 128, 128)
    assert result.probabilities.shape == (3, 3, 128, 128)
    assert result.instances[1].max() == 0
    assert result.instances[0].max() >= 3


def test_rgb_input_is_converted(disk_model):
    image, labels = disks_image([(30, 30), (80, 80)], [9, 9])
    rgb = np.repeat((image * 200).clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    result = segment(load_model(disk_model), rgb)
    assert result.instances.shape == labels.shape and result.instances.max() == 2


@pytest.mark.parametrize("diameter", [None, 9.0, 30.0, "auto"])
def test_rescaled_prediction_returns_the_exact_input_grid(rescaled_disk_model, diameter):
    image, _ = disks_image([(30, 30), (70, 50)], [8, 8], shape=(101, 77))
    result = segment(load_model(rescaled_disk_model), image, diameter=diameter)
    assert result.instances.shape == (101, 77)
    assert result.classes.shape == (101, 77)
    assert result.probabilities.shape == (3, 101, 77)


def test_bad_images_raise_clear_errors(disk_model):
    bundle = load_model(disk_model)
    with pytest.raises(ValueError, match="NaN|nan|finite"):
        segment(bundle, np.full((64, 64), np.nan, np.float32))
    with pytest.raises(ValueError):
        segment(bundle, np.zeros((0, 64), np.float32))
    with pytest.raises(ValueError):
        segment(bundle, np.zeros((2, 3, 4, 5, 6), np.float32))


def test_device_used_is_reported(disk_model):
    gen = segment_iter(load_model(disk_model), random_disks(0)[0], SegmentOptions(device="cpu"))
    with pytest.raises(StopIteration) as stop:
        while True:
            next(gen)
    assert stop.value.value.device.startswith("cpu")


@pytest.mark.parametrize("radius", [5, 40])
def test_auto_diameter_finds_small_and_large_cells(rescaled_disk_model, radius):
    bundle = load_model(rescaled_disk_model)
    assert bundle.metadata["rescaled"] and bundle.diameter == 24.0
    size = max(96, radius * 9)
    step = size // 3
    centres = [(step * i + step // 2, step * j + step // 2) for i in range(3) for j in range(3)]
    centres = centres[: 4 if radius == 40 else 9]
    image, labels = disks_image(centres, [radius] * len(centres), shape=(size, size))
    result = segment(bundle, image, diameter="auto")
    assert result.instances.shape == labels.shape
    assert result.instances.max() == len(centres)
    assert result.diameters[0] == pytest.approx(2 * radius, rel=0.25)
    assert match_instances(labels, result.instances).f1 == 1.0


def test_model_default_diameter_and_explicit_native(rescaled_disk_model):
    bundle = load_model(rescaled_disk_model)
    image, labels = disks_image([(60, 60), (60, 180), (180, 120)], [40, 40, 40], (240, 240))
    native = segment(bundle, image)  # no stored default: training scale, no rescaling
    assert native.scale_factors == [pytest.approx(bundle.native_scale_factor)]
    bundle.metadata["predict"] = {"diameter": "auto"}
    measured = segment(bundle, image)
    assert measured.scale_factors[0] == pytest.approx(24.0 / 80.0, rel=0.25)
    assert match_instances(labels, measured.instances).f1 == 1.0
    assert segment(bundle, image, diameter="native").scale_factors == native.scale_factors
    with pytest.raises(ValueError, match="'auto' or 'native'"):
        segment(bundle, image, diameter="big")
    with pytest.raises(ValueError, match="positive"):
        segment(bundle, image, diameter=-3.0)


def test_flip_averaging_follows_the_model_default(disk_model, monkeypatch):
    import segloop.core.passes as passes_module

    seen = []
    original = passes_module.predict_probabilities_iter

    def spy(*args):
        seen.append(args[-1])
        return original(*args)

    monkeypatch.setattr(passes_module, "predict_probabilities_iter", spy)
    bundle = load_model(disk_model)
    image = random_disks(0)[0]
    segment(bundle, image)
    bundle.metadata["predict"] = {"tta": True}
    with_tta = segment(bundle, image)
    segment(bundle, image, tta=False)
    assert seen == [False, True, False]
    assert with_tta.instances.max() >= 3


@pytest.mark.parametrize("zoom", [1.0, 5.0])
def test_shipped_nuclei_auto_size_holds_on_a_real_sample_zoomed_5x(zoom):
    """Nuclei five times the training size: one measuring pass mismeasures the pieces the
    network cuts them into, so 'auto' keeps measuring until the sizes agree; the result
    matches the native-scale one (packaged DSB2018 sample, CC0)."""
    from segloop.core.datasets import load_labels
    from segloop.core.imageio import read_image
    from segloop.core.scale import rescale_labels, rescale_raw_image

    data = Path(segloop.__file__).parent / "data"
    image = read_image(data / "dsb2018_fluorescence.png")
    labels = load_labels(data / "dsb2018_fluorescence_masks.png")
    image, labels = rescale_raw_image(image, zoom), rescale_labels(labels, zoom)
    bundle = load_model("nuclei")
    result = segment(bundle, image, diameter="auto")
    f1 = match_instances(labels, result.instances).f1
    assert f1 > 0.8
    assert result.diameters[0] == pytest.approx(19.5 * zoom, rel=0.3)
    if zoom > 1:
        assert match_instances(labels, segment(bundle, image, diameter="native").instances).f1 < 0.3


def test_coarse_probes_find_nuclei_fifteen_times_the_training_size(monkeypatch):
    """At 15x the first pass sees only flat nucleus interiors and finds nothing it can
    measure (or a few texture pieces of a size it knows); the coarse probes (an option,
    off by default) find the nuclei (packaged DSB2018 sample, CC0, its top-left 96 px
    zoomed 15x)."""
    from skimage.segmentation import relabel_sequential

    import segloop.core.auto_size as auto_size_module
    from segloop.core.datasets import load_labels
    from segloop.core.imageio import read_image
    from segloop.core.scale import rescale_labels, rescale_raw_image

    data = Path(segloop.__file__).parent / "data"
    image = read_image(data / "dsb2018_fluorescence.png")[:96, :96]
    labels = relabel_sequential(load_labels(data / "dsb2018_fluorescence_masks.png")[:96, :96])[0]
    image, labels = rescale_raw_image(image, 15.0), rescale_labels(labels, 15.0)
    bundle = load_model("nuclei")
    # without probes (and without the learned size estimate) nothing is found
    monkeypatch.setattr(auto_size_module, "AUTO_SIZE_MODEL", False)
    assert match_instances(labels, segment(bundle, image, diameter="auto").instances).f1 < 0.3
    monkeypatch.setattr(auto_size_module, "AUTO_PROBES", 2)
    result = segment(bundle, image, diameter="auto")
    assert match_instances(labels, result.instances).f1 > 0.7
    assert result.diameters[0] == pytest.approx(19.5 * 15, rel=0.3)


def test_the_learned_size_estimate_finds_nuclei_fifteen_times_the_training_size(monkeypatch):
    """The shipped nuclei model's size estimate (its encoder's activations, fitted on its
    training images rescaled 0.3x-8x) sees nuclei 15x the training size from the
    texture the first pass cuts into pieces, and 'auto' starts from the scale it gives
    (packaged DSB2018 sample, CC0, its top-left 96 px zoomed 15x)."""
    from skimage.segmentation import relabel_sequential

    import segloop.core.auto_size as auto_size_module
    from segloop.core.datasets import load_labels
    from segloop.core.imageio import read_image
    from segloop.core.scale import rescale_labels, rescale_raw_image

    data = Path(segloop.__file__).parent / "data"
    image = read_image(data / "dsb2018_fluorescence.png")[:96, :96]
    labels = relabel_sequential(load_labels(data / "dsb2018_fluorescence_masks.png")[:96, :96])[0]
    image, labels = rescale_raw_image(image, 15.0), rescale_labels(labels, 15.0)
    bundle = load_model("nuclei")
    assert "size_model" in bundle.metadata
    result = segment(bundle, image)  # the shipped default: diameter 'auto'
    assert match_instances(labels, result.instances).f1 > 0.7
    assert result.diameters[0] == pytest.approx(19.5 * 15, rel=0.3)
    monkeypatch.setattr(auto_size_module, "AUTO_SIZE_MODEL", False)
    assert match_instances(labels, segment(bundle, image).instances).f1 < 0.3


def test_the_size_estimate_starts_auto_only_outside_the_trained_sizes(monkeypatch):
    """The decision, with the passes' objects given: the estimate is used when it is
    outside the trained sizes and more than 2x larger than the first pass's objects
    (pieces); a smaller estimate is not used (AUTO_SIZE_SMALLER is off)."""
    from types import SimpleNamespace

    import segloop.core.auto_size as auto_size_module

    shape = (400, 400)
    first_labels = _disk_labels(shape, 5, 40)  # objects of ~10 px at the first pass
    ran = []

    def fake_predict(bundle, frame, factor, *args):
        ran.append(factor)
        return factor
        yield

    monkeypatch.setattr(auto_size_module, "predict_at_scale", fake_predict)
    monkeypatch.setattr(auto_size_module, "postprocess", lambda *a: (None, first_labels))
    bundle = SimpleNamespace(diameter=20.0, metadata={"diameter_range": [10.0, 40.0]})
    empty = np.zeros(shape, np.int32)  # a first pass that found nothing
    cases = [(None, False), (25.0, False), (120.0, True), (15.0, False), (8.0, False), (4.0, False)]
    cases = [(first_labels, *case) for case in cases]
    cases += [(empty, 120.0, True), (empty, 36.0, True), (empty, 4.0, False)]  # not enlarged
    for labels, estimate, used in cases:
        first = (1.0, None, None, labels)
        ran.clear()
        monkeypatch.setattr(auto_size_module, "estimate_size", lambda b, f, e=estimate: e)
        if estimate is not None:
            bundle.metadata["size_model"] = {}
        gen = auto_size_module._size_start(bundle, np.zeros(shape), None, None, None, "s", first)
        with pytest.raises(StopIteration) as stop:
            next(gen)
        start = stop.value.value
        assert (start is not first) == used, (estimate, labels.max())
        if used:
            assert ran == [pytest.approx(20.0 / estimate)] and start[0] == ran[0]


def _disk_labels(shape, radius, step):
    """Labels of disks of ``radius`` on a grid of ``step`` pixels."""
    from skimage.draw import disk

    labels = np.zeros(shape, np.int32)
    centres = range(step // 2, shape[0] - radius, step)
    for n, (y, x) in enumerate(((y, x) for y in centres for x in centres), start=1):
        labels[disk((y, x), radius, shape=shape)] = n
    return labels


@pytest.mark.parametrize(
    ("case", "first_radius", "first_step", "probe_radius", "believed"),
    [
        ("pieces of huge nuclei", 8, 300, 135, True),
        ("a confluent sheet seen as blobs", 15, 32, 135, False),
        ("objects the first pass saw whole", 8, 300, 30, False),
    ],
)
def test_a_coarse_probe_is_believed_only_where_the_first_pass_saw_pieces(
    monkeypatch, case, first_radius, first_step, probe_radius, believed
):
    """The decision of 'auto''s coarse probes, with the passes' objects given: a probe is
    the fixed point's start only for objects of a trained size at its scale, too large
    for the first pass to see whole, covering much more than the first pass's objects."""
    from types import SimpleNamespace

    import segloop.core.auto_size as auto_size_module

    shape = (900, 900)
    first_labels = _disk_labels(shape, first_radius, first_step)
    probe_labels = _disk_labels(shape, probe_radius, 2 * probe_radius + 60)

    def fake_predict(bundle, frame, factor, *args):
        return factor  # the "probabilities" are the factor the pass ran at
        yield

    def fake_postprocess(bundle, factor, options, area_scale):
        # the 1/3 probe finds nothing; the 1/9 (and, in the last case, 1/3) one the probe's
        labels = probe_labels if factor < 0.2 or probe_radius < 100 else np.zeros(shape, int)
        return None, labels

    monkeypatch.setattr(auto_size_module, "AUTO_PROBES", 2)
    monkeypatch.setattr(auto_size_module, "predict_at_scale", fake_predict)
    monkeypatch.setattr(auto_size_module, "postprocess", fake_postprocess)
    bundle = SimpleNamespace(diameter=20.0, metadata={"diameter_range": [10.0, 40.0]})
    if probe_radius < 100:  # objects of 60 px: of a trained size at the 1/3 probe only
        bundle.metadata["diameter_range"] = [15.0, 35.0]
    first = (1.0, None, None, first_labels)
    gen = auto_size_module._coarse_start(bundle, np.zeros(shape), None, None, None, "s", first)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    start = stop.value.value
    assert (start is not first) == believed, case
    if believed:
        assert start[0] == pytest.approx(1 / 9) and start[3] is probe_labels


def test_auto_target_is_the_models_choice_unless_overridden(monkeypatch):
    from types import SimpleNamespace

    import segloop.core.auto_size as auto_size_module

    def bundle(predict):
        return SimpleNamespace(predict_defaults={"diameter": "auto", "tta": False, **predict})

    assert auto_size_module.auto_target(bundle({})) == 1.0
    assert auto_size_module.auto_target(bundle({"auto_target": 1.3})) == 1.3
    assert load_model("nuclei").predict_defaults["auto_target"] == 1.3  # chosen on its val
    monkeypatch.setattr(auto_size_module, "AUTO_TARGET", 1.0)
    assert auto_size_module.auto_target(bundle({"auto_target": 1.3})) == 1.0
