import math
from types import SimpleNamespace

import numpy as np
import pytest

from segloop.core.models import build_network
from segloop.core.models.config import ModelConfig
from segloop.core.size_model import (
    CROP,
    _crops,
    estimate_size,
    fit_size_model,
    predict_diameter,
    style_features,
)


def _small_unet():
    return build_network(ModelConfig(arch="unet", depth=4, base_channels=4, padding="same"))


def test_the_regression_recovers_a_log_linear_size_relation():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 6)) * [1, 2, 3, 1, 1, 5] + 4.0
    true_weights = np.array([0.3, -0.1, 0.05, 0.0, 0.2, 0.0])
    diameters = np.exp(features @ true_weights + 1.0)
    fitted = fit_size_model(features, diameters, ridge=1e-6)
    assert np.allclose(fitted["weights"], true_weights, atol=1e-4)
    row = features[7]
    assert predict_diameter(fitted, row) == pytest.approx(diameters[7], rel=1e-3)


def test_frames_without_objects_are_left_out_and_too_few_raise():
    features = np.ones((3, 2))
    with pytest.raises(ValueError, match="at least two"):
        fit_size_model(features, np.array([np.nan, np.nan, 5.0]))
    fitted = fit_size_model(np.array([[1.0, 0], [2, 1], [3, 0]]), np.array([np.nan, 4, 8]))
    assert len(fitted["weights"]) == 2


def test_crops_are_central_and_at_most_three_per_side():
    frame = np.arange(1000 * 700, dtype=np.float32).reshape(1000, 700)
    crops = _crops(frame, 16)
    assert len(crops) == 3 * 2 and all(c.shape == (CROP, CROP) for c in crops)
    assert crops[0][0, 0] == frame[(1000 - 3 * CROP) // 2, (700 - 2 * CROP) // 2]
    (small,) = _crops(np.ones((50, 300), np.float32), 16)
    assert small.shape == (64, 304)


def test_style_features_have_one_value_per_channel_of_the_last_three_levels():
    network = _small_unet()
    frame = np.random.default_rng(0).random((80, 120)).astype(np.float32)
    network.train()
    features = style_features(network, frame)
    assert features.shape == (8 + 16 + 32,)
    assert np.all(np.isfinite(features))
    assert network.training  # the mode is given back


def test_estimate_is_none_without_a_fitting_size_model():
    network = _small_unet()
    frame = np.zeros((64, 64), np.float32)
    assert estimate_size(SimpleNamespace(metadata={}, network=network), frame) is None
    wrong = {"weights": [0.0] * 3, "bias": 0.0, "levels": 3, "crop": CROP}
    bundle = SimpleNamespace(metadata={"size_model": wrong}, network=network)
    assert estimate_size(bundle, frame) is None
    right = {"weights": [0.0] * 56, "bias": math.log(42.0), "levels": 3, "crop": CROP}
    bundle.metadata["size_model"] = right
    assert estimate_size(bundle, frame) == pytest.approx(42.0)
