"""Overlap-tile prediction of class probabilities for images of any size.

Memory is bounded by the tile batch plus the output canvas: the network never sees more
than ``batch`` tiles at once, whatever the image size.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch

from .device import ComputeSettings, compute_settings, prepare_network
from .memory import activation_bytes, canvas_bytes, check_fits
from .modelio import ModelBundle
from .progress import Progress, StopCheck, check_stop, run_to_end
from .tiling import pad_image, plan_tiles

DEFAULT_TILE = {"same": 512, "valid": 388}

#: The eight symmetries of the square (flips and 90-degree rotations): ``(k, flip)``
#: rotates by ``k`` quarter turns after an optional left-right flip.
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def _transform(tiles: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Apply one symmetry of the square to a (N, C, S, S) batch."""
    tiles = torch.flip(tiles, dims=(-1,)) if flip else tiles
    return torch.rot90(tiles, k, dims=(-2, -1)) if k else tiles


def _untransform(tiles: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Inverse of :func:`_transform`."""
    tiles = torch.rot90(tiles, -k, dims=(-2, -1)) if k else tiles
    return torch.flip(tiles, dims=(-1,)) if flip else tiles


def _activate(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Softmax over the class channels; sigmoid of a distance channel after them."""
    probs = torch.softmax(logits[:, :n_classes], dim=1)
    if logits.shape[1] == n_classes:
        return probs
    return torch.cat([probs, torch.sigmoid(logits[:, n_classes:])], dim=1)


def _tile_probabilities(
    network, tiles: torch.Tensor, settings, tta: bool, n_classes: int
) -> np.ndarray:
    """Outputs of one batch of square tiles; with ``tta`` the mean over the 8 symmetries."""
    transforms = DIHEDRAL if tta else DIHEDRAL[:1]
    total = None
    with torch.inference_mode(), settings.autocast():
        for k, flip in transforms:
            logits = network(settings.to_device(_transform(tiles, k, flip).contiguous()))
            probs = _untransform(_activate(logits.float(), n_classes), k, flip)
            total = probs if total is None else total + probs
    return (total / len(transforms)).cpu().numpy()


def default_tile(bundle: ModelBundle) -> int:
    """Default output tile side for a model's padding mode."""
    return DEFAULT_TILE[bundle.config.padding]


def count_tiles(bundle: ModelBundle, shape: tuple[int, int], tile: int | None = None) -> int:
    """Number of network tiles :func:`predict_probabilities_iter` runs for ``shape``."""
    return len(plan_tiles(bundle.config, shape, tile or default_tile(bundle)).starts)


def check_prediction_fits(bundle: ModelBundle, plan, batch: int, tta: bool = False) -> None:
    """Refuse a tiled prediction whose canvas plus network activations cannot fit.

    Raises
    ------
    InsufficientMemoryError
        Naming the image size, the tile side and the batch.
    """
    (top, bottom), (left, right) = plan.pad
    height, width = plan.shape[0] + top + bottom, plan.shape[1] + left + right
    needed = canvas_bytes(height, width, bundle.config.n_outputs) + activation_bytes(
        bundle.config, plan.input_size, max(1, batch)
    )
    check_fits(
        needed,
        f"predicting a {plan.shape[0]}x{plan.shape[1]} image in {plan.output_size}-px tiles "
        f"({plan.input_size}-px network input), batch {batch}",
        "use a smaller tile or batch, or a smaller image",
    )


def predict_probabilities_iter(
    bundle: ModelBundle,
    image: np.ndarray,
    tile: int | None = None,
    batch: int = 4,
    settings: ComputeSettings | None = None,
    should_stop: StopCheck = None,
    stage: str = "predict",
    tta: bool = False,
) -> Generator[Progress, None, np.ndarray]:
    """Yield progress per tile batch; return the network's outputs (n_outputs, H, W).

    The outputs are the softmax class probabilities, followed for models with a distance
    head (``config.distance_head``) by the predicted normalised distance (sigmoid).

    Parameters
    ----------
    image : ndarray
        Normalised float image, (H, W) or (C, H, W) with C = the model's input channels.
    tile : int, optional
        Output tile side; default 512 (same-padded) or 388 (valid-padded).
    batch : int
        Tiles per forward pass.
    settings : ComputeSettings, optional
        Device and precision; default :func:`compute_settings("auto")`.
    should_stop : callable, optional
        Polled between batches; when it returns True, :class:`Cancelled` is raised.
    tta : bool
        Test-time augmentation: average the probabilities of the 8 flips/rotations of
        each tile (8 times the compute).
    """
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] != bundle.config.in_channels:
        raise ValueError(
            f"model expects {bundle.config.in_channels} channel(s) of 2-D data, "
            f"got an array of shape {image.shape}"
        )
    settings = settings or compute_settings("auto")
    network = prepare_network(bundle.network, settings).eval()
    plan = plan_tiles(bundle.config, image.shape[1:], tile or default_tile(bundle))
    check_prediction_fits(bundle, plan, batch, tta)
    padded = pad_image(np.asarray(image, dtype=np.float32), plan)
    canvas = np.zeros((bundle.config.n_outputs, *plan.canvas_shape), np.float32)
    weights = np.zeros(plan.canvas_shape, np.float32)
    size_in, size_out = plan.input_size, plan.output_size
    total = len(plan.starts)
    yield Progress(stage, 0, total, f"{total} tiles of {size_out}px")
    for first in range(0, total, max(1, batch)):
        check_stop(should_stop)
        starts = plan.starts[first : first + batch]
        tiles = np.stack([padded[:, y : y + size_in, x : x + size_in] for y, x in starts])
        probs = _tile_probabilities(
            network, torch.from_numpy(tiles), settings, tta, bundle.config.n_classes
        )
        for (y, x), prob in zip(starts, probs, strict=True):
            canvas[:, y : y + size_out, x : x + size_out] += prob * plan.window
            weights[y : y + size_out, x : x + size_out] += plan.window
        yield Progress(stage, min(first + batch, total), total)
    c = plan.context
    height, width = plan.shape
    result = canvas[:, c : c + height, c : c + width] / weights[c : c + height, c : c + width]
    return np.ascontiguousarray(result, dtype=np.float32)


def predict_probabilities(bundle: ModelBundle, image: np.ndarray, **kwargs) -> np.ndarray:
    """Plain-function form of :func:`predict_probabilities_iter`."""
    return run_to_end(predict_probabilities_iter(bundle, image, **kwargs))
