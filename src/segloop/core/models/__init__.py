"""Network definitions, their configurations and tile geometry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import PRESETS, ModelConfig, preset
from .geometry import TileGeometry, output_size, receptive_field, tile_geometry

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "PRESETS",
    "ModelConfig",
    "TileGeometry",
    "build_network",
    "output_size",
    "preset",
    "receptive_field",
    "tile_geometry",
]


def build_network(config: ModelConfig) -> nn.Module:
    """Instantiate the torch module described by ``config``.

    Raises
    ------
    InsufficientMemoryError
        Before allocating, when the weights alone would not fit in memory.
    """
    from ..memory import FLOAT32, check_fits, parameter_count

    check_fits(
        FLOAT32 * parameter_count(config),
        f"a network with base_channels {config.base_channels} and depth {config.depth}",
        "use fewer channels or levels",
    )
    if config.arch == "unet":
        from .unet import UNet

        return UNet(config)
    if config.arch == "segnet":
        from .segnet import SegNet

        return SegNet(config)
    raise ValueError(f"unknown architecture {config.arch!r}")
