"""``segloop predict`` / ``count`` for images larger than memory: chunked, stitched, lazy.

A frame is segmented window by window (:mod:`segloop.core.chunked`), with one intensity
normalisation and one object size for the whole frame, both taken from a sample of it.
Windows are computed in this process or, with ``--dask``, as dask.distributed tasks (each
worker loads the model and opens the input once); stitching and writing stay here, in
raster order, with a bounded number of windows in flight. Labels and classes go to
OME-Zarr (``--out-format zarr``) or a tiled BigTIFF streamed from a temporary Zarr.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bigimage import LazyImage, ZarrLabels, is_zarr_path, labels_target, open_lazy, zarr_to_tiff
from .core.chunked import (
    DEFAULT_CHUNK,
    ChunkPlan,
    count_ids,
    default_halo,
    fixed_options,
    sampled_intensity_range,
    stitch_iter,
)
from .core.modelio import ModelBundle, load_model
from .core.progress import Progress, StopCheck, run_to_end
from .core.provenance import provenance, tiff_metadata
from .core.segment import SegmentOptions, input_colour, resolve_diameter, segment_iter

#: Side of the central window measured for ``--diameter auto``.
MEASURE_SIDE = 1024


@dataclass
class FramePlan:
    """One frame's cut and the fixed settings every window of it uses."""

    plan: ChunkPlan
    options: SegmentOptions


def frame_plan(
    bundle: ModelBundle,
    lazy: LazyImage,
    options: SegmentOptions,
    frame: int = 0,
    chunk: int = DEFAULT_CHUNK,
    halo: int | None = None,
) -> Generator[Progress, None, FramePlan]:
    """Normalisation from a sample, the object size (measured once for 'auto'), the cut."""
    low, high = bundle.preprocess["percentiles"]
    intensity, invert = sampled_intensity_range(
        lambda box: lazy.grey_window(box, frame, input_colour(bundle, options)),
        lazy.height,
        lazy.width,
        low,
        high,
        bundle.preprocess["invert"],
    )
    diameter = resolve_diameter(bundle, options.diameter)
    if diameter == "auto":
        diameter = yield from _measure_diameter(bundle, lazy, options, frame, intensity, invert)
    fixed = fixed_options(options, intensity, invert, diameter if diameter else "native")
    factor = bundle.diameter / diameter if bundle.diameter and isinstance(diameter, float) else 1.0
    halo = default_halo(bundle.diameter, factor) if halo is None else halo
    return FramePlan(ChunkPlan(lazy.height, lazy.width, chunk, halo), fixed)


def _measure_diameter(bundle, lazy, options, frame, intensity, invert):
    """'auto': segment a central window once and take the diameter it measured."""
    side = MEASURE_SIDE
    y0, x0 = max((lazy.height - side) // 2, 0), max((lazy.width - side) // 2, 0)
    box = (y0, min(y0 + side, lazy.height), x0, min(x0 + side, lazy.width))
    probe = fixed_options(options, intensity, invert, "auto")
    result = yield from segment_iter(bundle, lazy.window(box, frame), probe)
    measured = result.diameters[0]
    return float(measured) if measured else "native"


def _window_segmentation(bundle, data: np.ndarray, options: SegmentOptions):
    result = yield from segment_iter(bundle, data, options)
    return result.instances.astype(np.uint32), result.classes.astype(np.uint8)


def _core_of(window, core, array: np.ndarray) -> np.ndarray:
    wy0, _, wx0, _ = window
    cy0, cy1, cx0, cx1 = core
    return array[cy0 - wy0 : cy1 - wy0, cx0 - wx0 : cx1 - wx0]


class FrameView:
    """``out[t]`` of a (t, h, w) array as a 2-D array-like (zarr arrays have no views)."""

    def __init__(self, array, frame: int | None):
        self.array, self.frame = array, frame

    def __getitem__(self, key):
        return self.array[key] if self.frame is None else self.array[(self.frame, *key)]

    def __setitem__(self, key, value):
        if self.frame is None:
            self.array[key] = value
        else:
            self.array[(self.frame, *key)] = value


def segment_lazy_iter(
    bundle: ModelBundle,
    lazy: LazyImage,
    options: SegmentOptions,
    labels_out,
    classes_out=None,
    chunk: int = DEFAULT_CHUNK,
    halo: int | None = None,
    windows_for: Callable[[FramePlan, int], Iterator] | None = None,
    should_stop: StopCheck = None,
) -> Generator[Progress, None, list[dict]]:
    """Segment every frame of ``lazy`` window by window into ``labels_out`` (+ classes).

    Returns one dict per frame: objects, windows, halo, diameter, intensity range.
    ``windows_for(frame_plan, frame)``, when given, computes the windows elsewhere (dask)
    and yields ``((row, col), labels, classes_core)`` in raster order.
    """
    summaries = []
    for frame in range(lazy.n_frames):
        fp = yield from frame_plan(bundle, lazy, options, frame, chunk, halo)
        index = frame if lazy.is_stack else None
        out, classes = FrameView(labels_out, index), FrameView(classes_out, index)

        def segment_window(window, core, fp=fp, classes=classes, frame=frame):
            labels, window_classes = yield from _window_segmentation(
                bundle, lazy.window(window, frame), fp.options
            )
            if classes_out is not None:
                cy0, cy1, cx0, cx1 = core
                classes[cy0:cy1, cx0:cx1] = _core_of(window, core, window_classes)
            return labels

        source = None
        if windows_for is not None:
            source = _write_classes(windows_for(fp, frame), fp.plan, classes, classes_out)
        state = yield from stitch_iter(fp.plan, segment_window, out, should_stop, source)
        summaries.append(
            {
                "frame": frame,
                "objects": count_ids(fp.plan, out),
                "windows": len(list(fp.plan.cells())),
                "halo": fp.plan.halo,
                "chunk": fp.plan.chunk,
                "diameter": fp.options.diameter,
                "intensity_range": list(fp.options.intensity_range),
                "joined_across_chunks": state.objects_joined,
            }
        )
        yield Progress("frames", frame + 1, lazy.n_frames)
    return summaries


def _write_classes(results, plan: ChunkPlan, classes, classes_out):
    for cell, labels, classes_core in results:
        if classes_out is not None:
            cy0, cy1, cx0, cx1 = plan.core(*cell)
            classes[cy0:cy1, cx0:cx1] = classes_core
        yield cell, labels


# --------------------------------------------------------------------------- overlap


def threaded_windows(bundle: ModelBundle, lazy: LazyImage, at_once: int | None = None):
    """``windows_for`` computing up to ``at_once`` windows at once in threads.

    While one window is in post-processing (mostly one core), the next one's network
    pass uses the other; results are still consumed in raster order, so the stitched
    labels are the same as one window at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .batch import in_flight, in_order

    at_once = at_once or in_flight()

    def one(fp: FramePlan, frame: int, cell):
        core = fp.plan.core(*cell)
        window = fp.plan.window(core)
        labels, classes = run_to_end(
            _window_segmentation(bundle, lazy.window(window, frame), fp.options)
        )
        return labels, _core_of(window, core, classes).copy()

    def windows_for(fp: FramePlan, frame: int):
        with ThreadPoolExecutor(max_workers=at_once) as pool:
            results = in_order(
                lambda cell: pool.submit(one, fp, frame, cell), list(fp.plan.cells()), at_once
            )
            for cell, (labels, classes) in results:
                yield cell, labels, classes

    return windows_for


# --------------------------------------------------------------------------- dask


@functools.lru_cache(maxsize=4)
def _worker_model(model: str) -> ModelBundle:
    """The model, loaded once per worker process."""
    return load_model(model)


@functools.lru_cache(maxsize=8)
def _worker_image(path: str, level: int) -> LazyImage:
    """The input, opened once per worker process."""
    return open_lazy(path, level)


def window_task(model: str, path: str, level: int, frame: int, window, core, options):
    """A dask task: one window's labels and its core's classes."""
    bundle = _worker_model(model)
    lazy = _worker_image(path, level)
    labels, classes = run_to_end(_window_segmentation(bundle, lazy.window(window, frame), options))
    return labels, _core_of(window, core, classes).copy()


def dask_windows(client, model: str, lazy: LazyImage, in_flight: int | None = None):
    """``windows_for`` running windows as tasks on ``client``, at most ``in_flight`` at once."""
    from .batch import in_order

    workers = max(len(client.scheduler_info().get("workers", {})), 1)
    limit = in_flight or 2 * workers + 1

    def windows_for(fp: FramePlan, frame: int):
        def submit(cell):
            core = fp.plan.core(*cell)
            window = fp.plan.window(core)
            args = (model, str(lazy.path), lazy.level, frame, window, core, fp.options)
            return client.submit(window_task, *args, pure=False)

        for cell, (labels, classes) in in_order(submit, list(fp.plan.cells()), limit):
            yield cell, labels, classes

    return windows_for


# --------------------------------------------------------------------------- files


#: Stacks with more pixels than this are streamed frame by frame (memory stays bounded).
STREAM_STACK_PIXELS = 64 * 2**20


def output_stem(path: str | Path) -> str:
    """The name an input's outputs start with: the file name without its last suffix,
    or a Zarr folder's name up to its first dot (``a.ome.zarr`` -> ``a``). The one rule
    for naming outputs and for refusing inputs whose outputs would collide."""
    path = Path(path)
    return path.name.split(".")[0] if is_zarr_path(path) else path.stem


def wants_chunked(path: Path, chunk: int, out_format: str) -> bool:
    """Chunked path for Zarr input or output, frames larger than ``chunk`` and long stacks."""
    if out_format == "zarr" or is_zarr_path(path):
        return True
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable TIFF image ({exc})") from None
    spatial = shape[:2] if len(shape) == 2 or shape[-1] in (3, 4) else shape[-2:]
    return max(spatial) > chunk or int(np.prod(shape)) > STREAM_STACK_PIXELS


def predict_chunked(
    model: str,
    path: Path,
    out_dir: Path,
    options: SegmentOptions,
    out_format: str = "tiff",
    chunk: int = DEFAULT_CHUNK,
    halo: int | None = None,
    pixel_size=None,
    client=None,
    progress=None,
    level: int | str = 0,
    overlap: bool = True,
) -> tuple[list[Path], list[dict]]:
    """Segment one large input chunk by chunk; returns (written paths, frame summaries).

    ``overlap`` computes two windows at once in threads (see :func:`threaded_windows`);
    with ``client``, windows are dask tasks instead.
    """
    from .batch import file_options

    bundle = load_model(model)
    full = open_lazy(path, 0)
    base_size = pixel_size or full.pixel_size
    options = file_options(options, base_size, path)  # a diameter in µm -> level-0 pixels
    level, options = _pick_level(bundle, path, level, options, base_size)
    lazy = full if level == 0 else open_lazy(path, level)
    size = pixel_size or lazy.pixel_size
    shape = (lazy.n_frames, lazy.height, lazy.width) if lazy.is_stack else (lazy.height, lazy.width)
    record = provenance(bundle, options, size, source=Path(path).name, chunk=chunk)
    stem = output_stem(path)
    labels_path, classes_path = _targets(lazy, out_dir, stem, out_format)
    labels = ZarrLabels(labels_path, shape, size, record)
    classes = ZarrLabels(classes_path, shape, size, record, dtype=np.uint8)
    windows_for = None
    if client is not None:
        windows_for = dask_windows(client, str(model), lazy)
    elif overlap:
        windows_for = threaded_windows(bundle, lazy)
    try:
        summaries = run_to_end(
            segment_lazy_iter(
                bundle, lazy, options, labels.array, classes.array, chunk, halo, windows_for
            ),
            progress,
        )
        for summary in summaries:
            summary["level"] = level
        record["frames"] = summaries
        labels.group.attrs["segloop"] = record
        if out_format == "tiff":
            meta = tiff_metadata(record)
            written = [
                zarr_to_tiff(
                    labels.array, out_dir / f"{stem}_labels.tif", metadata=meta, pixel_size=size
                ),
                zarr_to_tiff(
                    classes.array, out_dir / f"{stem}_classes.tif", metadata=meta, pixel_size=size
                ),
            ]
            labels.abort()
            classes.abort()
            return written, summaries
        return [labels.finish(), classes.finish()], summaries
    except BaseException:
        labels.abort()
        classes.abort()
        raise


def _pick_level(bundle, path, level, options: SegmentOptions, level0_size):
    """``--level auto`` and the diameter on the chosen level's grid.

    A numeric diameter is in level-0 pixels; on a coarser level it is divided by the
    level's scale.
    """
    from dataclasses import replace

    from .bigimage import choose_level, level_scales

    if level == "auto":
        diameter = options.diameter if isinstance(options.diameter, float) else None
        model_size = bundle.metadata.get("pixel_size_um")
        level = choose_level(path, bundle.diameter, diameter, model_size, level0_size)
    scale = 1.0
    if is_zarr_path(path):
        scales = level_scales(path)
        if not 0 <= int(level) < len(scales):
            raise ValueError(
                f"{path} has {len(scales)} resolution level(s) (0-{len(scales) - 1}), "
                f"not level {level}"
            )
        scale = scales[int(level)]
    if isinstance(options.diameter, float) and scale != 1.0:
        options = replace(options, diameter=options.diameter / scale)
    return int(level), options


def _targets(lazy: LazyImage, out_dir: Path, stem: str, out_format: str) -> tuple[Path, Path]:
    """Zarr folders for labels and classes (temporary ones when the output is TIFF, and
    for ``"scratch"``: kept, in ``out_dir``, for counting)."""
    if out_format == "scratch":
        return out_dir / f"{stem}_labels.zarr", out_dir / f"{stem}_classes.zarr"
    if out_format == "tiff":
        return out_dir / f".{stem}_labels.tmp.zarr", out_dir / f".{stem}_classes.tmp.zarr"
    labels = labels_target(lazy, out_dir, stem)
    if lazy.ome_root is not None:
        return labels, labels.with_name(f"{labels.name}-classes")
    return labels, out_dir / f"{stem}_classes.zarr"
