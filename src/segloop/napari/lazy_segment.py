"""Segment widget on images larger than memory: dask, zarr and multiscale layers.

Such a layer is segmented chunk by chunk in the worker thread (the core's stitched
chunked segmentation) into an OME-Zarr label image under ``~/segloop-results``, and the
result is shown as a *lazy* Labels layer backed by that Zarr: napari reads only what it
draws, and label edits are written straight into the Zarr on disk, so they survive the
session. Cancel leaves no result behind (the Zarr is written under a temporary name).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segloop.core.progress import Progress, StopCheck, check_stop

from .adapters import UserError, layer_pixel_size

if TYPE_CHECKING:
    from napari.layers import Image

#: numpy layers larger than this on a side also go chunk by chunk (bounded memory).
LARGE_SIDE = 4096
#: Where lazy results are kept (one OME-Zarr per run).
RESULTS_DIR = Path.home() / "segloop-results"


def needs_chunks(layer: Image | None) -> bool:
    """True for multiscale layers, lazy (dask / zarr) data and very large numpy images."""
    if layer is None:
        return False
    if getattr(layer, "multiscale", False):
        return True
    data = layer.data
    if not isinstance(data, np.ndarray):
        return True
    spatial = data.shape[-3:-1] if layer.rgb else data.shape[-2:]
    return max(spatial) > LARGE_SIDE


def lazy_image_of(layer: Image):
    """The layer's full-resolution data as a :class:`segloop.bigimage.LazyImage`."""
    from segloop.bigimage import LazyImage

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    ndim = len(data.shape)
    if layer.rgb:
        axes = {3: "yxc", 4: "tyxc"}.get(ndim)
    else:
        axes = {2: "yx", 3: "tyx"}.get(ndim)
    if axes is None:
        raise UserError(
            f"Image layer '{layer.name}' has shape {tuple(data.shape)}: need 2-D or 2-D + t"
        )
    return LazyImage(data, axes, Path(layer.name), layer_pixel_size(layer))


@dataclass
class LazyOutput:
    """Where the stitched labels went, and what the run measured."""

    path: Path
    summaries: list[dict]
    seconds: float


def results_path(name: str, folder: Path | None = None) -> Path:
    """A new ``<name>_<time>_instances.zarr`` under :data:`RESULTS_DIR` (or ``folder``).

    Never the path of an earlier result (which may hold the user's edits): two runs in
    the same second get ``-1``, ``-2``… appended.
    """
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = (folder or RESULTS_DIR) / f"{safe}_{stamp}"
    path, number = Path(f"{base}_instances.zarr"), 0
    while path.exists() or path.with_name(path.name + ".partial").exists():
        number += 1
        path = Path(f"{base}-{number}_instances.zarr")
    return path


def lazy_segment_run(
    model: str,
    lazy,
    options,
    target: Path,
    chunk: int = 2048,
    should_stop: StopCheck = None,
) -> Generator[Progress, None, LazyOutput]:
    """Load the model, segment ``lazy`` chunk by chunk into the OME-Zarr ``target``.

    ``options`` is a ``SegmentOptions`` or a dict of its fields: a dict lets the GUI
    thread hand them over without importing the core's torch-backed modules.
    """
    from segloop.batch_chunked import segment_lazy_iter
    from segloop.bigimage import ZarrLabels
    from segloop.core.provenance import provenance
    from segloop.core.segment import SegmentOptions, input_colour

    from .adapters import load_bundle

    if isinstance(options, dict):
        options = SegmentOptions(**options)
    start = time.perf_counter()
    yield Progress("load model", 0, 1, f"loading {Path(model).name}")
    bundle = load_bundle(model)
    check_stop(should_stop)
    shape = (lazy.n_frames, lazy.height, lazy.width) if lazy.is_stack else (lazy.height, lazy.width)
    record = provenance(
        {"name": model},
        options,
        lazy.pixel_size,
        source=str(lazy.path),
        colour_used=input_colour(bundle, options),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    labels = ZarrLabels(target, shape, lazy.pixel_size, record)
    try:
        summaries = yield from segment_lazy_iter(
            bundle, lazy, options, labels.array, chunk=chunk, should_stop=should_stop
        )
        record["frames"] = summaries
        labels.group.attrs["segloop"] = record
        path = labels.finish()
    except BaseException:
        labels.abort()
        raise
    return LazyOutput(path, summaries, time.perf_counter() - start)


def open_result(path: Path) -> Any:
    """The stitched labels, opened for reading and writing (edits go to disk)."""
    import zarr

    return zarr.open_group(str(path), mode="r+")["0"]
