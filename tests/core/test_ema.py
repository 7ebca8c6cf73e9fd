import pytest
import torch

from segloop.core.ema import WeightAverage, averaged_weights
from segloop.core.training import TrainConfig, train

from .test_training import tiny_bundle, tiny_data


def small_network():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))


def test_the_average_follows_the_weights_with_warm_up():
    network = small_network()
    start = network[0].weight.detach().clone()
    average = WeightAverage(network, decay=0.9)
    with torch.no_grad():
        network[0].weight.add_(1.0)
    average.update(network)  # step 0: decay min(0.9, 1/10) = 0.1
    expected = 0.1 * start + 0.9 * (start + 1.0)
    assert torch.allclose(average.state["0.weight"], expected)
    network[1].num_batches_tracked.fill_(7)
    for _ in range(50):
        average.update(network)
    assert torch.allclose(average.state["0.weight"], start + 1.0, atol=1e-3)
    assert int(average.state["1.num_batches_tracked"]) == 7  # integers follow the network


def test_averaged_weights_are_swapped_in_and_back_even_on_error():
    network = small_network()
    average = WeightAverage(network, decay=0.5)
    average.state["0.weight"].fill_(3.0)
    trained = network[0].weight.detach().clone()
    with pytest.raises(RuntimeError), averaged_weights(network, average):
        assert torch.all(network[0].weight == 3.0)
        raise RuntimeError("cancelled mid-validation")
    assert torch.equal(network[0].weight, trained)
    with averaged_weights(network, None) as same:  # no average: nothing changes
        assert same is network and torch.equal(network[0].weight, trained)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_a_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError):
        WeightAverage(small_network(), decay)


def test_training_keeps_the_average_not_the_last_step():
    results = {}
    for decay in (0.0, 0.95):
        bundle = tiny_bundle()
        config = TrainConfig(
            epochs=4,
            crop=48,
            batch_size=2,
            seed=1,
            val_fraction=0.0,
            tune_postprocess=False,
            ema_decay=decay,
        )
        train(bundle, tiny_data(), config)
        results[decay] = bundle.network.state_dict()
        assert bundle.metadata["training"]["config"]["ema_decay"] == decay
    # same seed, same steps: only the kept weights differ (the average lags the steps)
    differs = [k for k in results[0.0] if not torch.equal(results[0.0][k], results[0.95][k])]
    assert differs
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(epochs=1, ema_decay=1.0)
