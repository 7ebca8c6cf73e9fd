import numpy as np
import torch

from segloop.core.evaluation import LabelledImage
from segloop.core.modelio import new_bundle
from segloop.core.models import ModelConfig, build_network, preset
from segloop.core.segment import segment
from segloop.core.training import TrainConfig, train


def test_segnet_shape_and_vgg_layout():
    config = preset("segnet-classic", n_classes=4)
    net = build_network(config)
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13  # VGG16 encoder
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    small = build_network(preset("segnet"))
    with torch.no_grad():
        assert small(torch.zeros(1, 1, 64, 96)).shape == (1, 3, 64, 96)


def test_decoder_unpools_with_the_encoder_indices(monkeypatch):
    torch.manual_seed(0)
    net = build_network(preset("segnet")).train()  # batch statistics: a lively signal
    seen = []
    original = net.unpool.forward

    def spy(x, indices, output_size=None):
        seen.append(indices)
        return original(x, indices, output_size=output_size)

    monkeypatch.setattr(net.unpool, "forward", spy)
    pooled = []
    net.pool.register_forward_hook(lambda _m, _i, out: pooled.append(out[1]))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        reference = net(x)
    assert len(seen) == len(pooled) == 5
    for used, stored in zip(seen, reversed(pooled), strict=True):
        assert used is stored
    # permuting the stored indices changes the output: the decoder really depends on them
    monkeypatch.setattr(
        net.unpool,
        "forward",
        lambda x, indices, output_size=None: original(
            x, torch.flip(indices, dims=[-1]), output_size=output_size
        ),
    )
    with torch.no_grad():
        assert not torch.allclose(net(x), reference)


def striped_classes(seed, size=64):
    """Three intensity classes in vertical bands; masks: sparse strokes (0 = unlabelled)."""
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.int32)
    bounds = np.sort(rng.integers(12, size - 12, 2))
    classes[:, : bounds[0]] = 1
    classes[:, bounds[0] : bounds[1]] = 2
    classes[:, bounds[1] :] = 3
    levels = np.array([0, 0.1, 0.5, 0.9])
    image = levels[classes] + rng.normal(0, 0.03, classes.shape)
    strokes = np.zeros_like(classes)
    for class_id in (1, 2, 3):
        cols = np.flatnonzero(classes[0] == class_id)
        col = cols[len(cols) // 2]
        strokes[5:-5, col] = class_id  # one painted line per class
    return image.astype(np.float32), strokes, classes


def test_sparse_strokes_give_a_dense_class_map():
    data = [LabelledImage(*striped_classes(seed)[:2], name=str(seed)) for seed in range(4)]
    config = ModelConfig(depth=2, base_channels=8, n_classes=3)
    bundle = new_bundle(config, "classes", target="classes")
    train(
        bundle,
        data,
        TrainConfig(epochs=60, crop=48, batch_size=4, val_fraction=0, learning_rate=3e-3),
    )
    image, _strokes, truth = striped_classes(99)
    result = segment(bundle, image)
    assert set(np.unique(result.classes)) <= {1, 2, 3}
    accuracy = np.mean(result.classes == truth)
    assert accuracy > 0.9
    # pixels far from every stroke were never labelled, yet they get a class
    unknown = segment(bundle, image, unknown_threshold=0.999).classes
    assert (unknown == 0).any()
