import numpy as np
import pytest
import torch

from segloop.core.device import DeviceError, compute_settings, resolve_device
from segloop.core.modelio import ModelBundle, new_bundle
from segloop.core.models import ModelConfig, build_network, preset
from segloop.core.predict import predict_probabilities, predict_probabilities_iter
from segloop.core.progress import Cancelled, run_to_end
from segloop.core.tiling import plan_tiles


def fp32():
    return compute_settings("cpu", fast=False)


@pytest.mark.parametrize("shape", [(37, 53), (200, 90), (300, 300)])
@pytest.mark.parametrize("name", ["unet", "unet-classic", "segnet"])
def test_tiles_cover_every_pixel(name, shape):
    plan = plan_tiles(preset(name), shape, tile=64)
    covered = np.zeros(plan.canvas_shape, np.float32)
    for y, x in plan.starts:
        covered[y : y + plan.output_size, x : x + plan.output_size] += plan.window
    c = plan.context
    assert (covered[c : c + shape[0], c : c + shape[1]] > 0).all()


def test_valid_net_tiling_matches_whole_image_forward_exactly():
    # depth 2 -> one pool; tiles start at multiples of the (even) output size, so a tiled
    # prediction must equal one forward pass over the mirrored image (paper's scheme).
    config = ModelConfig(depth=2, base_channels=4, padding="valid", batch_norm=False)
    torch.manual_seed(0)
    bundle = ModelBundle(config, build_network(config).eval())
    image = np.random.default_rng(0).random((1, 60, 44)).astype(np.float32)
    tiled = predict_probabilities(bundle, image, tile=16, settings=fp32())
    margin = plan_tiles(config, (60, 44), 16).margin
    padded = np.pad(image, ((0, 0), (margin, margin + 40), (margin, margin + 40)), mode="reflect")
    with torch.no_grad():
        whole = torch.softmax(bundle.network(torch.from_numpy(padded[None])), 1)[0].numpy()
    np.testing.assert_allclose(tiled, whole[:, :60, :44], atol=1e-5)


def test_same_net_blending_has_no_seams_for_a_translation_invariant_map():
    # A network whose weights make it ignore position: all conv kernels zero but the head
    # bias. Then every tile predicts the same constant and the blended result must too.
    bundle = new_bundle(preset("unet"), "x")
    with torch.no_grad():
        for p in bundle.network.parameters():
            p.zero_()
        bundle.network.head.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    bundle.network.eval()
    probs = predict_probabilities(bundle, np.zeros((200, 333), np.float32), tile=64)
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0).numpy()
    np.testing.assert_allclose(probs, expected[:, None, None] * np.ones((1, 200, 333)), atol=1e-3)


class BatchSpy(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.largest = inner, 0

    def forward(self, x):
        self.largest = max(self.largest, x.shape[0])
        return self.inner(x)


def test_memory_is_bounded_by_the_tile_batch():
    bundle = new_bundle(ModelConfig(depth=2, base_channels=4), "x")
    spy = BatchSpy(bundle.network)
    bundle.network = spy
    probs = predict_probabilities(bundle, np.zeros((300, 300), np.float32), tile=64, batch=2)
    assert probs.shape == (3, 300, 300)
    assert spy.largest == 2
    assert np.allclose(probs.sum(0), 1, atol=1e-4)


def test_progress_and_cancel():
    bundle = new_bundle(ModelConfig(depth=2, base_channels=4), "x")
    events = []
    run_to_end(
        predict_probabilities_iter(bundle, np.zeros((128, 128), np.float32), tile=32, batch=1),
        events.append,
    )
    assert events[0].done == 0 and events[-1].done == events[-1].total == len(events) - 1
    calls = []
    gen = predict_probabilities_iter(
        bundle,
        np.zeros((128, 128), np.float32),
        tile=32,
        batch=1,
        should_stop=lambda: len(calls) > 2 or calls.append(1),
    )
    with pytest.raises(Cancelled):
        run_to_end(gen)


def test_wrong_channels_is_a_clear_error():
    bundle = new_bundle(ModelConfig(depth=2, base_channels=4), "x")
    with pytest.raises(ValueError, match="expects 1 channel"):
        predict_probabilities(bundle, np.zeros((3, 64, 64), np.float32))


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="not available"):
            resolve_device("cuda")
    description = compute_settings("cpu").describe()
    assert description.startswith("cpu (") and "channels_last" in description


@pytest.mark.parametrize("k,flip", [(1, False), (2, False), (3, True), (0, True)])
def test_flip_averaging_is_equivariant(k, flip):
    # The mean over all 8 symmetries of the square commutes with each of them, whatever
    # the network: rotating/flipping the input must rotate/flip the averaged output.
    from segloop.core.predict import _tile_probabilities, _transform

    torch.manual_seed(0)
    config = ModelConfig(depth=2, base_channels=4, distance_head=True)
    network = build_network(config).eval()
    tiles = torch.rand(2, 1, 32, 32)
    averaged = _tile_probabilities(network, tiles, fp32(), True, config.n_classes)
    moved = _tile_probabilities(network, _transform(tiles, k, flip), fp32(), True, 3)
    expected = _transform(torch.from_numpy(averaged), k, flip).numpy()
    np.testing.assert_allclose(moved, expected, atol=1e-5)
    assert averaged.shape == (2, 4, 32, 32)  # 3 class probabilities and the distance
    np.testing.assert_allclose(averaged[:, :3].sum(axis=1), 1.0, atol=1e-5)
    plain = _tile_probabilities(network, tiles, fp32(), False, config.n_classes)
    assert np.abs(plain - averaged).max() > 1e-3  # an untrained net is not symmetric


def test_flip_averaging_through_predict():
    bundle = new_bundle(ModelConfig(depth=2, base_channels=4), "x")
    image = np.random.default_rng(1).random((70, 90)).astype(np.float32)
    plain = predict_probabilities(bundle, image, tile=64, settings=fp32())
    averaged = predict_probabilities(bundle, image, tile=64, settings=fp32(), tta=True)
    assert averaged.shape == plain.shape == (3, 70, 90)
    np.testing.assert_allclose(averaged.sum(0), 1.0, atol=1e-4)
    assert not np.allclose(averaged, plain, atol=1e-3)
