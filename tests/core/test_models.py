import pytest
import torch

from segloop.core.models import (
    ModelConfig,
    build_network,
    output_size,
    preset,
    receptive_field,
    tile_geometry,
)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_classic_unet_geometry_and_size():
    config = preset("unet-classic", n_classes=2)
    assert output_size(config, 572) == 388
    net = build_network(config)
    assert 30.5e6 < n_params(net) < 31.5e6  # paper's network: ~31.0 M parameters
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_fast_unet_is_small_and_same_padded():
    config = preset("unet")
    net = build_network(config)
    assert 1.5e6 < n_params(net) < 2.5e6
    with torch.no_grad():
        out = net(torch.zeros(2, 1, 64, 96))
    assert out.shape == (2, 3, 64, 96)


@pytest.mark.parametrize("name", ["unet", "unet-classic", "segnet"])
def test_tile_geometry_gives_sizes_the_network_accepts(name):
    config = preset(name)
    for wanted in (40, 100, 131):
        geo = tile_geometry(config, wanted)
        assert geo.output_size >= wanted
        assert output_size(config, geo.input_size) == geo.output_size
        assert geo.margin * 2 == geo.input_size - geo.output_size


def test_valid_geometry_rejects_odd_pool_sizes():
    config = preset("unet-classic")
    assert output_size(config, 573) is None
    assert output_size(config, 100) is None  # too small for 5 levels


def test_receptive_field_matches_perturbation():
    config = ModelConfig(depth=3, base_channels=4, padding="same", batch_norm=False)
    torch.manual_seed(0)
    net = build_network(config).double()
    rf = receptive_field(config)
    size = 96
    x = torch.randn(1, 1, size, size, dtype=torch.float64)
    base = net(x)[0, 0, size // 2, size // 2]
    reach = 0
    for offset in range(1, size // 2):
        y = x.clone()
        y[0, 0, size // 2 + offset, size // 2] += 10.0
        if abs(net(y)[0, 0, size // 2, size // 2] - base) > 1e-9:
            reach = offset
    # the centre pixel is influenced up to (rf - 1) / 2 pixels away, never further
    assert reach <= (rf - 1) // 2
    assert reach >= (rf - 1) // 2 - 4


def test_config_round_trip_and_validation():
    config = preset("segnet", n_classes=4)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="padding"):
        ModelConfig(padding="reflect")


def test_distance_head_adds_one_output_and_stays_out_of_old_files():
    plain = preset("unet")
    assert "distance_head" not in plain.to_dict()  # files without the head are unchanged
    with_head = ModelConfig(depth=2, base_channels=4, distance_head=True)
    assert with_head.n_outputs == 4 and plain.n_outputs == 3
    assert ModelConfig.from_dict(with_head.to_dict()) == with_head
    for config in (
        with_head,
        ModelConfig(arch="segnet", depth=2, base_channels=4, distance_head=True),
    ):
        out = build_network(config)(torch.zeros(1, 1, 32, 32))
        assert out.shape[1] == 4
