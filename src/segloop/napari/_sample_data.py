"""Sample data: two CC0 images of the 2018 Data Science Bowl with their nucleus masks, one
E. coli phase-contrast crop and one phase-contrast fibroblast crop (Usiigaci, MIT) with
their cell masks.

See ``segloop/data/README.md`` for the sources and attributions.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import Any

import numpy as np

from segloop.core.imageio import read_image

LayerData = tuple[np.ndarray, dict[str, Any], str]
SAMPLES = {
    "fluorescence": "dsb2018_fluorescence",
    "histology": "dsb2018_histology",
    "ecoli": "ecoli_phase",
    "fibroblasts": "usiigaci_phase",
}
#: Layer name prefix per sample.
KINDS = {
    "fluorescence": "nuclei",
    "histology": "nuclei",
    "ecoli": "E. coli",
    "fibroblasts": "cells",
}


def _read(file_name: str) -> np.ndarray:
    with as_file(files("segloop") / "data" / file_name) as path:
        return read_image(path)


def sample_layers(key: str) -> list[LayerData]:
    """Image layer plus hidden ground-truth Labels layer of sample ``key``."""
    stem = SAMPLES[key]
    image = _read(f"{stem}.png")
    masks = _read(f"{stem}_masks.png").astype(np.int32)
    kind = KINDS[key]
    image_kwargs: dict[str, Any] = {"name": f"{kind} {key}", "rgb": image.ndim == 3}
    if image.ndim == 2:  # dim fluorescence / 16-bit phase: stretch the display, not the data
        low, high = np.percentile(image, [0.5, 99.8])
        image_kwargs["contrast_limits"] = (float(low), float(max(high, low + 1)))
    masks_kwargs = {"name": f"{kind} {key} masks", "visible": False, "opacity": 0.5}
    return [(image, image_kwargs, "image"), (masks, masks_kwargs, "labels")]


def fluorescence() -> list[LayerData]:
    """Fluorescent nuclei, 256 x 256, 57 nuclei (DSB2018 ``693bc645…``)."""
    return sample_layers("fluorescence")


def histology() -> list[LayerData]:
    """H&E-stained tissue, 256 x 320 RGB, 45 nuclei (DSB2018 ``7773ac91…``)."""
    return sample_layers("histology")


def ecoli() -> list[LayerData]:
    """E. coli colony in phase contrast, 320 x 320 uint16, 17 cells (van Vliet 2018, t9)."""
    return sample_layers("ecoli")


def fibroblasts() -> list[LayerData]:
    """NIH/3T3 fibroblasts in phase contrast, 512 x 512 uint16, 34 cells (Usiigaci, MIT)."""
    return sample_layers("fibroblasts")
