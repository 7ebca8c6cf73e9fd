"""Input/output tile geometry of every network configuration.

Valid-padded U-Nets shrink their input (572 -> 388 for the classic net) and need
sizes that stay even before every max-pool; same-padded nets keep the size but need it
divisible by the total pooling factor. Tiling and training ask this module, never guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig


@dataclass(frozen=True)
class TileGeometry:
    """Square tile sizes for one configuration.

    Attributes
    ----------
    input_size : int
        Side of the tile fed to the network.
    output_size : int
        Side of the prediction it returns.
    margin : int
        ``(input_size - output_size) // 2``: context lost on each side (0 when same-padded).
    """

    input_size: int
    output_size: int

    @property
    def margin(self) -> int:
        return (self.input_size - self.output_size) // 2


def size_multiple(config: ModelConfig) -> int:
    """Factor the input side of a same-padded network must be divisible by."""
    pools = config.depth if config.arch == "segnet" else config.depth - 1
    return 2**pools


def output_size(config: ModelConfig, input_size: int) -> int | None:
    """Output side for an input side, or ``None`` if the network cannot take that size."""
    if input_size < 1:
        return None
    if config.padding == "same":
        return input_size if input_size % size_multiple(config) == 0 else None
    size = input_size
    for _ in range(config.depth - 1):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4
    if size <= 0:
        return None
    for _ in range(config.depth - 1):
        size = size * 2 - 4
    return size if size > 0 else None


def tile_geometry(config: ModelConfig, min_output: int) -> TileGeometry:
    """Smallest valid tile whose output side is at least ``min_output``."""
    if min_output < 1:
        raise ValueError("tile size must be positive")
    if config.padding == "same":
        multiple = size_multiple(config)
        side = -(-min_output // multiple) * multiple
        return TileGeometry(side, side)
    size = min_output
    while True:
        out = output_size(config, size)
        if out is not None and out >= min_output:
            return TileGeometry(size, out)
        size += 1


def receptive_field(config: ModelConfig) -> int:
    """Side in pixels of the input window that can influence one output pixel.

    Computed layer by layer (3x3 conv adds ``2 * jump``, a 2x2 max-pool adds ``jump``
    and doubles it, an up-sampling step halves it). The same value holds for the
    valid- and same-padded variants of one depth.
    """
    convs = config.convs_per_level or (2,) * config.depth
    field, jump = 1, 1
    pools = config.depth if config.arch == "segnet" else config.depth - 1
    for level in range(config.depth):
        field += 2 * jump * convs[level]
        if level < pools:
            field += jump
            jump *= 2
    if config.arch == "segnet":
        for level in reversed(range(config.depth)):
            jump //= 2
            field += 2 * jump * convs[level]
    else:
        for _ in range(config.depth - 1):
            jump //= 2
            field += 2 * jump * 2
    return field
