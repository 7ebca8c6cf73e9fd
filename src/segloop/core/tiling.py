"""Overlap-tile plans: which padded-image windows go through the network, where they land.

Valid-padded nets follow the U-Net paper exactly: the image is mirrored by the margin the
network loses, output tiles abut without overlap and each sees its full context.
Same-padded nets use overlapping tiles on a mirrored image, blended with a window that
ramps down linearly over the overlap, so no seams show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .models import ModelConfig, tile_geometry


@dataclass(frozen=True)
class TilePlan:
    """How to cover an image of ``shape`` with network tiles.

    Coordinates: the image is padded by ``pad`` (mirror). A tile's input window starts at
    ``(y, x)`` in the padded image; its output covers canvas ``[y, y + output_size)``
    where canvas = padded image minus ``margin`` on each side. The image itself sits at
    ``canvas[context : context + H, context : context + W]``.
    """

    shape: tuple[int, int]
    input_size: int
    output_size: int
    margin: int
    context: int
    pad: tuple[tuple[int, int], tuple[int, int]]
    starts: tuple[tuple[int, int], ...]
    window: np.ndarray

    @property
    def canvas_shape(self) -> tuple[int, int]:
        (top, bottom), (left, right) = self.pad
        return (
            self.shape[0] + top + bottom - 2 * self.margin,
            self.shape[1] + left + right - 2 * self.margin,
        )


def axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts covering ``[0, length)``; the last tile is aligned to the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(size: int, ramp: int) -> np.ndarray:
    """2-D weight: 1 in the middle, falling linearly over ``ramp`` pixels to the edges."""
    if ramp <= 0:
        return np.ones((size, size), np.float32)
    pos = np.arange(size, dtype=np.float32)
    edge = np.minimum(pos + 0.5, size - pos - 0.5) / ramp
    line = np.clip(edge, 1e-3, 1.0)
    return np.outer(line, line).astype(np.float32)


def plan_tiles(
    config: ModelConfig, shape: tuple[int, int], tile: int, overlap: int | None = None
) -> TilePlan:
    """Plan the tiles for a 2-D image of ``shape``.

    Parameters
    ----------
    tile : int
        Wanted output tile side (rounded up to a size the network accepts).
    overlap : int, optional
        Same-padded nets only: overlap between neighbouring tiles (default
        ``output_size // 8``, at least 16). Valid nets never overlap (paper's scheme).
    """
    height, width = int(shape[0]), int(shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"cannot tile an empty image of shape {shape}")
    if config.padding == "valid":
        # Never use tiles much larger than the image needs.
        geometry = tile_geometry(config, max(16, min(tile, max(height, width))))
        context, stride, ramp = 0, geometry.output_size, 0
    else:
        if overlap is None:
            overlap = max(16, tile // 8)
        context = overlap // 2
        whole = max(height, width) + 2 * context
        # One tile for the whole image when it is at most 25 % larger than asked for.
        geometry = tile_geometry(config, whole if whole <= tile * 1.25 else max(16, tile))
        overlap = min(overlap, geometry.output_size // 2)
        context, stride, ramp = overlap // 2, geometry.output_size - overlap, overlap
    size_in, size_out, margin = geometry.input_size, geometry.output_size, geometry.margin
    canvas_h = max(height + 2 * context, size_out)
    canvas_w = max(width + 2 * context, size_out)
    if config.padding == "valid":  # whole output tiles, no overlap
        canvas_h = -(-height // size_out) * size_out
        canvas_w = -(-width // size_out) * size_out
    pad = (
        (margin + context, canvas_h - height - context + margin),
        (margin + context, canvas_w - width - context + margin),
    )
    starts = tuple(
        (y, x)
        for y in axis_starts(canvas_h, size_out, stride)
        for x in axis_starts(canvas_w, size_out, stride)
    )
    return TilePlan(
        (height, width),
        size_in,
        size_out,
        margin,
        context,
        pad,
        starts,
        blend_window(size_out, ramp),
    )


def pad_image(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """Mirror-pad a (C, H, W) image as the plan says."""
    return np.pad(image, ((0, 0), *plan.pad), mode="reflect" if min(plan.shape) > 1 else "edge")
