"""napari reader: TIFF (LZW, multi-page), PNG and JPEG files, and folders of frames.

A folder of same-sized images becomes one 2-D + t stack (frames in natural name order).
A multichannel image (a TIFF's ``C`` axis, or a last axis of 2 or 5-7 channels) opens as
one Image layer per channel, named ``<name> ch0``, ``<name> ch1``...
Integer images whose file name ends in ``labels``, ``masks``, ``instances`` or ``classes``
(e.g. those written by the segloop labels writer) open as Labels layers; a palette PNG
mask gives its ids (palette indices), not colours.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.imageio import IMAGE_SUFFIXES, image_axes, list_images
from segloop.core.units import read_pixel_size

from . import adapters

LayerData = tuple[np.ndarray, dict[str, Any], str]
LABEL_STEMS = ("label", "labels", "mask", "masks", "instances", "classes")


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_layers` if segloop can read ``path`` (a file or folder), else None."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(_readable(Path(p)) for p in paths):
        return None
    return read_layers


def _readable(path: Path) -> bool:
    if path.is_dir():
        try:
            return bool(list_images([path]))
        except (OSError, ValueError):
            return False
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read one file/folder (or several) into napari layer data tuples."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    return [_layer(Path(p)) for p in paths]


def _layer(path: Path) -> LayerData:
    name = path.name if path.is_dir() else path.stem
    # a palette PNG mask (or a folder of them) gives its indices, not colours
    data, channel_axis = adapters.read_path_channels(path, palette_indices=_labels_name(name))
    if channel_axis is not None:  # one Image layer per channel, as napari's own reader
        names = [f"{name} ch{i}" for i in range(data.shape[channel_axis])]
        physical = _physical(path, data.ndim - 1)
        return data, {"name": names, "channel_axis": channel_axis, **physical}, "image"
    if _looks_like_labels(name, data):
        return data, {"name": name, **_physical(path, data.ndim)}, "labels"
    try:
        rgb = image_axes(data).endswith("C")
    except ValueError:
        rgb = False
    ndim = data.ndim - (1 if rgb else 0)
    return data, {"name": name, "rgb": rgb, **_physical(path, ndim)}, "image"


def _physical(path: Path, ndim: int) -> dict[str, Any]:
    """``scale`` and ``units`` (µm on y and x) from the pixel size the file records."""
    source = path if path.is_file() else next(iter(list_images([path])), None)
    size = read_pixel_size(source) if source is not None else None
    if size is None or ndim < 2:
        return {}
    lead = ndim - 2
    return {
        "scale": (1.0,) * lead + tuple(size),
        "units": ("pixel",) * lead + ("micrometer", "micrometer"),
    }


def _labels_name(name: str) -> bool:
    """Whether a file or folder name says it holds labels (``cells_masks``, ``a labels``)."""
    return name.lower().replace("-", "_").replace(" ", "_").split("_")[-1] in LABEL_STEMS


def _looks_like_labels(name: str, data: np.ndarray) -> bool:
    colour = data.ndim == 3 and data.shape[-1] in (3, 4)  # an RGB(A) picture of labels
    return (
        _labels_name(name)
        and np.issubdtype(data.dtype, np.integer)
        and data.ndim in (2, 3)
        and not colour
    )
