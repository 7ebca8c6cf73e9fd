import numpy as np
import pytest

from segloop.core.uncertainty import entropy_uncertainty, max_probability_uncertainty


def _probs() -> np.ndarray:
    """(3, 1, 4) probabilities: certain, uniform, two-way tie, mostly class 2."""
    pixels = [
        [1.0, 0.0, 0.0],
        [1 / 3, 1 / 3, 1 / 3],
        [0.5, 0.5, 0.0],
        [0.1, 0.1, 0.8],
    ]
    return np.array(pixels, np.float32).T[:, None, :]


def test_max_probability_on_hand_made_pixels():
    out = max_probability_uncertainty(_probs())
    assert out.shape == (1, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.0, 2 / 3, 0.5, 0.2], atol=1e-6)


def test_entropy_is_normalised_to_one():
    out = entropy_uncertainty(_probs())
    assert out.shape == (1, 4) and out.dtype == np.float32
    two_way = np.log(2) / np.log(3)
    mostly = -(2 * 0.1 * np.log(0.1) + 0.8 * np.log(0.8)) / np.log(3)
    np.testing.assert_allclose(out[0], [0.0, 1.0, two_way, mostly], atol=1e-6)


def test_two_classes_entropy_reaches_one_at_a_tie():
    probs = np.array([[[0.5, 0.0]], [[0.5, 1.0]]], np.float64)
    np.testing.assert_allclose(entropy_uncertainty(probs)[0], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(max_probability_uncertainty(probs)[0], [0.5, 0.0])


def test_stacks_give_one_map_per_frame():
    stack = np.stack([_probs(), _probs()[::-1]])  # (T, C, H, W)
    for measure in (entropy_uncertainty, max_probability_uncertainty):
        out = measure(stack)
        assert out.shape == (2, 1, 4)
        np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # class order does not matter
        assert 0.0 <= out.min() and out.max() <= 1.0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="C, H, W"):
        entropy_uncertainty(np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="2 classes"):
        max_probability_uncertainty(np.ones((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="floating"):
        entropy_uncertainty(np.ones((2, 4, 4), np.int32))
