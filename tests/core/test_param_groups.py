import pytest
import torch

from segloop.core.evaluation import LabelledImage
from segloop.core.modelio import new_bundle
from segloop.core.models import ModelConfig
from segloop.core.param_groups import (
    StartAnchor,
    encoder_of,
    parameter_groups,
    training_mode,
)
from segloop.core.progress import run_to_end
from segloop.core.train_validation import _validate
from segloop.core.training import TrainConfig, train

from ..conftest import random_disks


def _data():
    return [
        LabelledImage(*random_disks(seed, n=6, shape=(64, 64)), name=str(seed)) for seed in range(3)
    ]


def _train(arch: str, factor: float):
    bundle = new_bundle(ModelConfig(arch=arch, depth=2, base_channels=4), "tiny")
    before = {k: v.clone() for k, v in bundle.network.state_dict().items()}
    config = TrainConfig(
        epochs=3, crop=48, batch_size=2, seed=1, tune_postprocess=False, encoder_lr_factor=factor
    )
    train(bundle, _data(), config)
    return bundle, before


@pytest.mark.parametrize("arch", ["unet", "segnet"])
def test_a_frozen_encoder_keeps_its_weights_and_the_rest_learns(arch):
    bundle, before = _train(arch, 0.0)
    network = bundle.network
    encoder_names = {
        f"{name}.{p}"
        for name in ("down", "encoder")
        for p, _ in (getattr(network, name).named_parameters() if hasattr(network, name) else [])
    }
    after = network.state_dict()
    assert encoder_names
    for key in encoder_names:
        assert torch.equal(after[key], before[key]), key
    others = [k for k in after if k.endswith("weight") and k not in encoder_names]
    assert any(not torch.equal(after[k], before[k]) for k in others)
    # the freeze lasts only as long as the training
    assert all(p.requires_grad for p in network.parameters())


def test_a_slower_encoder_moves_its_weights_less_than_a_full_rate_one():
    moved = {}
    for factor in (1.0, 0.01):
        bundle, before = _train("unet", factor)
        encoder = encoder_of(bundle.network)
        moved[factor] = sum(
            float((p.detach() - before[f"down.{name}"]).abs().sum())
            for name, p in encoder.named_parameters()
        )
    assert 0 < moved[0.01] < 0.2 * moved[1.0]


def test_groups_carry_the_factor_and_cover_every_parameter_once():
    network = new_bundle(ModelConfig(depth=2, base_channels=4), "tiny").network
    groups = parameter_groups(network, 0.1)
    ids = [id(p) for group in groups for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in network.parameters())
    assert sorted(group["lr_factor"] for group in groups) == [0.1, 1.0]
    frozen = parameter_groups(network, 0.0)
    assert len(frozen) == 1 and len(frozen[0]["params"]) < len(ids)
    with pytest.raises(ValueError, match="encoder_lr_factor"):
        TrainConfig(epochs=1, encoder_lr_factor=1.5)


def test_the_encoder_thaws_when_training_is_closed_early_or_cancelled():
    from segloop.core.progress import Cancelled
    from segloop.core.training import train_iter

    for how in ("close", "cancel"):
        bundle = new_bundle(ModelConfig(depth=2, base_channels=4), "tiny")
        encoder = list(encoder_of(bundle.network).parameters())
        cancel = {"now": False}
        config = TrainConfig(epochs=50, crop=48, batch_size=2, encoder_lr_factor=0.0)
        run = train_iter(bundle, _data(), config, should_cancel=lambda c=cancel: c["now"])
        for event in run:
            if event.stage == "train":
                break
        assert not any(p.requires_grad for p in encoder)  # frozen while it trains
        if how == "close":
            run.close()
        else:
            cancel["now"] = True
            with pytest.raises(Cancelled):
                next(run)
        assert all(p.requires_grad for p in bundle.network.parameters()), how


def _batchnorm_state(network):
    return {
        name: (module.running_mean.clone(), module.running_var.clone(), module.weight.clone())
        for name, module in network.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d)
    }


def _tiny_unet():
    return new_bundle(ModelConfig(arch="unet", depth=2, base_channels=4), "tiny")


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_batchnorm_keeps_the_running_statistics_and_learns_the_rest(freeze):
    bundle = _tiny_unet()
    before = _batchnorm_state(bundle.network)
    assert before
    config = TrainConfig(
        epochs=3, crop=48, batch_size=2, seed=1, tune_postprocess=False, freeze_batchnorm=freeze
    )
    train(bundle, _data(), config)
    after = _batchnorm_state(bundle.network)
    stats_kept = [torch.equal(after[n][0], before[n][0]) for n in before]
    assert all(stats_kept) if freeze else not any(stats_kept)
    # the scale and shift learn either way
    assert any(not torch.equal(after[n][2], before[n][2]) for n in before)


@pytest.mark.parametrize("freeze", [True, False])
def test_validation_hands_the_network_back_with_its_batchnorm_mode(freeze):
    bundle = _tiny_unet()
    network = training_mode(bundle.network, freeze)
    config = TrainConfig(epochs=1, freeze_batchnorm=freeze)
    run_to_end(_validate(bundle, _data()[:1], config, None))
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.training for m in convs)
    assert all(m.training != freeze for m in norms)


def test_pseudo_label_predictions_keep_frozen_batchnorm_frozen():
    from segloop.core.device import compute_settings
    from segloop.core.pseudo_labels import pseudo_targets

    bundle = _tiny_unet()
    network = training_mode(bundle.network, True)
    before = _batchnorm_state(network)
    settings = compute_settings("cpu", training=True)
    pseudo_targets(network, torch.rand(2, 1, 32, 32), bundle.config.n_classes, 0.9, settings)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not any(m.training for m in norms)
    assert all(m.training for m in network.modules() if isinstance(m, torch.nn.Conv2d))
    after = _batchnorm_state(network)
    assert all(torch.equal(after[n][0], before[n][0]) for n in before)


def _distance_from_start(decay: float) -> float:
    bundle = _tiny_unet()
    before = {n: p.detach().clone() for n, p in bundle.network.named_parameters()}
    config = TrainConfig(
        epochs=4, crop=48, batch_size=2, seed=1, tune_postprocess=False, start_decay=decay
    )
    train(bundle, _data(), config)
    after = dict(bundle.network.named_parameters())
    return sum(float((after[n].detach().float() - before[n].float()).norm()) for n in before)


def test_the_start_anchor_keeps_the_weights_nearer_their_start():
    free, anchored = _distance_from_start(0.0), _distance_from_start(300.0)
    assert free > 0
    assert anchored < 0.8 * free


def test_an_anchor_that_takes_back_every_step_keeps_the_start_weights():
    bundle = _tiny_unet()
    anchor = StartAnchor(bundle.network, 1e9)  # lr * strength capped at 1: all taken back
    optimizer = torch.optim.AdamW(bundle.network.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in bundle.network.parameters()]
    bundle.network.train()
    loss = bundle.network(torch.rand(2, 1, 48, 48)).square().mean()
    loss.backward()
    optimizer.step()
    pairs = list(zip(bundle.network.parameters(), before, strict=True))
    assert any(not torch.equal(p, b) for p, b in pairs)
    anchor.pull(optimizer)
    assert all(torch.equal(p, b) for p, b in pairs)


def test_start_decay_must_not_be_negative():
    with pytest.raises(ValueError, match="start_decay"):
        TrainConfig(epochs=1, start_decay=-1.0)
    with pytest.raises(ValueError, match="strength"):
        StartAnchor(_tiny_unet().network, 0.0)
