import numpy as np
import pytest
import torch

from segloop.core.device import compute_settings
from segloop.core.evaluation import LabelledImage
from segloop.core.modelio import new_bundle
from segloop.core.models import ModelConfig, tile_geometry
from segloop.core.pseudo_labels import (
    consistency_loss,
    pseudo_batch,
    pseudo_targets,
    strong_view,
    unlabelled_crops,
)
from segloop.core.training import TrainConfig, train

from ..conftest import random_disks


def _data():
    return [
        LabelledImage(*random_disks(seed, n=6, shape=(64, 64)), name=str(seed)) for seed in range(2)
    ]


def _frames():
    return [random_disks(seed, n=6, shape=(64, 64))[0] for seed in (10, 11)]


def test_the_strong_view_changes_intensities_not_where_things_are():
    frame = np.zeros((1, 32, 32), np.float32)
    frame[0, 8:14, 20:26] = 1.0
    strong = strong_view(frame, np.random.default_rng(0))
    assert strong.shape == frame.shape and strong.dtype == np.float32
    assert not np.allclose(strong, frame)
    inside, outside = strong[0, 8:14, 20:26].mean(), strong[0, 20:, :10].mean()
    assert inside > outside + 0.3  # the square is still bright, still there


def test_unlabelled_crops_pair_a_plain_and_a_strong_view_of_the_same_place():
    frames = [random_disks(3, n=5, shape=(40, 50))[0][None].astype(np.float32)]
    plain, strong, inside = unlabelled_crops(frames, 3, 32, np.random.default_rng(1))
    assert plain.shape == strong.shape == (3, 1, 32, 32) and inside.shape == (3, 32, 32)
    assert bool(inside.all())  # the frame is larger than the crop: no padding
    for a, b in zip(plain.numpy(), strong.numpy(), strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.5
    again = unlabelled_crops(frames, 3, 32, np.random.default_rng(1))
    assert torch.equal(again[0], plain) and torch.equal(again[1], strong)


def test_padding_of_small_frames_is_never_a_target():
    frames = [np.zeros((1, 20, 24), np.float32)]
    _plain, _strong, inside = unlabelled_crops(frames, 2, 32, np.random.default_rng(0))
    assert [int(m.sum()) for m in inside] == [20 * 24, 20 * 24]
    network = new_bundle(ModelConfig(depth=2, base_channels=4), "tiny").network.train()
    geometry = tile_geometry(ModelConfig(depth=2, base_channels=4), 32)
    batch = pseudo_batch(
        network, frames, 2, geometry, 3, 0.0, compute_settings("cpu"), np.random.default_rng(0)
    )
    assert [int((t >= 0).sum()) for t in batch.target] == [20 * 24, 20 * 24]


class _Fixed(torch.nn.Module):
    """A batch-norm layer (whose statistics must not move) and fixed logits."""

    def __init__(self, logits):
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(1)
        self.logits = logits

    def forward(self, x):
        assert torch.is_grad_enabled() is False
        return self.norm(x).mean() * 0 + self.logits.expand(len(x), -1, -1, -1)


def test_pseudo_targets_keep_only_confident_pixels_and_leave_the_network_as_it_was():
    logits = torch.zeros(1, 4, 2, 2)
    logits[0, 1, 0, 0] = 10.0  # confident interior
    logits[0, 0, 1, 1] = 10.0  # confident background
    network = _Fixed(logits).train()
    target, distance = pseudo_targets(
        network, torch.randn(2, 1, 2, 2) + 5, 3, 0.9, compute_settings("cpu")
    )
    assert network.training
    assert float(network.norm.running_mean) == 0.0  # predicted in eval mode
    assert target.shape == (2, 2, 2)
    assert target[0].tolist() == [[1, -1], [-1, 0]]
    assert distance.shape == (2, 2, 2) and torch.allclose(distance, torch.full_like(distance, 0.5))


def test_consistency_loss_is_zero_without_confident_pixels_and_learns_with_them():
    logits = torch.zeros(1, 4, 2, 2, requires_grad=True)
    nothing = torch.full((1, 2, 2), -1)
    assert float(consistency_loss(logits, nothing, None, 3).detach()) == 0.0
    target = torch.tensor([[[1, -1], [-1, 0]]])
    loss = consistency_loss(logits, target, torch.full((1, 2, 2), 0.8), 3)
    loss.backward()
    assert float(loss.detach()) > 0 and logits.grad[0, 1, 0, 0] < 0  # pushes towards the target
    assert logits.grad[0, :, 0, 1].abs().sum() == 0  # unconfident pixels teach nothing


def _run(frames, weight):
    torch.manual_seed(0)
    bundle = new_bundle(ModelConfig(depth=2, base_channels=4), "tiny")
    config = TrainConfig(
        epochs=3, crop=48, batch_size=2, seed=1, tune_postprocess=False, val_fraction=0,
        unlabelled_weight=weight, pseudo_threshold=0.0,
    )  # fmt: skip
    from segloop.core.progress import run_to_end
    from segloop.core.training import train_iter

    return run_to_end(train_iter(bundle, _data(), config, [], unlabelled=frames))


def test_unlabelled_frames_change_training_only_when_weighted():
    plain = [row["loss"] for row in _run([], 0.0).history]
    ignored = [row["loss"] for row in _run(_frames(), 0.0).history]
    used = _run(_frames(), 1.0).history
    assert ignored == plain  # frames without weight draw nothing and add nothing
    assert all(np.isfinite(row["loss"]) and row["pseudo_loss"] > 0 for row in used)
    assert all(row["loss"] > row["pseudo_loss"] for row in used)  # plus the corrections' part


def test_unlabelled_frames_need_an_instance_model():
    bundle = new_bundle(ModelConfig(depth=2, base_channels=4, n_classes=3), "tiny", "classes")
    data = [LabelledImage(*random_disks(0, n=4, shape=(64, 64)), name="0")]
    config = TrainConfig(epochs=1, crop=48, batch_size=2, unlabelled_weight=1.0)
    with pytest.raises(ValueError, match="instance models"):
        train(bundle, data, config, unlabelled=_frames())
    with pytest.raises(ValueError, match="unlabelled_weight"):
        TrainConfig(epochs=1, unlabelled_weight=-1.0)
