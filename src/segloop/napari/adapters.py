"""Layer <-> core conversions, input checks and layer updates for the segloop widgets.

This is the only module through which the widgets reach :mod:`segloop.core`. Checks raise
:class:`UserError` with a message meant for the user (the widgets show it as a napari
notification). Modules of the core that import torch (``modelio``, ``segment``,
``device``) are imported inside functions, so that opening napari stays torch-free until
a model is used.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segloop.core import imageio, instances
from segloop.core.progress import Progress, StopCheck, check_stop
from segloop.core.uncertainty import entropy_uncertainty
from segloop.core.weightmap import weight_map

from . import layer_updates
from .layer_updates import (  # noqa: F401  (worker copies, reached through this module)
    CHECK_NOW_VALUES,
    copy_unwritten,
    own_copy,
    snapshot,
)

# layer writing lives in layer_updates; the widgets reach it through this module
from .layer_updates import find_layer as find_layer
from .layer_updates import frame_into as frame_into
from .layer_updates import upsert_layer as upsert_layer

if TYPE_CHECKING:
    from napari.layers import Image, Labels, Layer

    import napari


log = logging.getLogger(__name__)

MODEL_SUFFIX = ".safetensors"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

#: Instance methods of the counting widget: key -> label shown in the combo box.
INSTANCE_METHODS = {
    "as_is": "labels as they are (count only)",
    "components": "connected components",
    "watershed": "watershed (split touching)",
    "class_map": "class map (interior + border)",
}


class UserError(ValueError):
    """A problem the user can fix (wrong layer, bad model file...); shown as-is."""


# --------------------------------------------------------------------------- layers


def image_data(
    layer: Image | None, frame: int | None = None, check_large: bool = True
) -> np.ndarray:
    """Pixel data of an Image layer (or of one frame of it), checked by the core image rules.

    Accepts (H, W), (H, W, 3|4) RGB(A), (T, H, W) and (T, H, W, 3|4). With ``frame`` only
    that frame of a stack is read (lazy arrays stay lazy for the other frames). With
    ``check_large`` False, the values of an image over :data:`CHECK_NOW_VALUES` are not
    scanned here (a worker checks them), so the GUI thread does not stall on a big stack.

    Raises
    ------
    UserError
        No layer, a multiscale layer, or an unsupported shape / dtype.
    """
    if layer is None:
        raise UserError("No image layer: open an image (or File > Open Sample) and pick it.")
    if getattr(layer, "multiscale", False):
        raise UserError(f"Image layer '{layer.name}' is multiscale; open a single-scale image.")
    data = np.asarray(layer.data if frame is None else layer.data[frame])
    if layer.rgb and data.shape[-1] not in (3, 4):
        raise UserError(f"Image layer '{layer.name}' is RGB with {data.shape[-1]} channels.")
    if not layer.rgb and data.ndim >= 3 and data.shape[-1] in (3, 4):
        raise UserError(
            f"Image layer '{layer.name}' has shape {data.shape}: its last axis looks like colour "
            "channels but the layer is not RGB; re-open it as RGB or split the channels."
        )
    if not check_large and data.size > layer_updates.CHECK_NOW_VALUES:
        return data
    try:
        imageio.validate_image(data, name=f"Image layer '{layer.name}'")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return data


#: Largest lazy (zarr / dask) labels layer the widgets load into memory (pixels).
LAZY_LABELS_LIMIT = 64 * 2**20


def labels_data(layer: Labels | None, check_large: bool = True) -> np.ndarray:
    """Data of a Labels layer as a non-negative integer (H, W) or (T, H, W) array.

    With ``check_large`` False, the values of labels over :data:`CHECK_NOW_VALUES` are
    not scanned here: the worker calls :func:`check_label_values` on its copy.
    """
    if layer is None:
        raise UserError("No labels layer: add or create a Labels layer and pick it.")
    if getattr(layer, "multiscale", False):
        raise UserError(f"Labels layer '{layer.name}' is multiscale; use a single-scale layer.")
    pixels = int(np.prod(layer.data.shape))
    if not isinstance(layer.data, np.ndarray) and pixels > LAZY_LABELS_LIMIT:
        raise UserError(
            f"Labels layer '{layer.name}' is stored on disk and has {pixels / 1e6:.0f} Mpx, too "
            "many to load here; count it with `segloop count` (window by window)."
        )
    data = np.asarray(layer.data)
    if data.ndim not in (2, 3):
        raise UserError(
            f"Labels layer '{layer.name}' has shape {data.shape}; expected (H, W) or (T, H, W)."
        )
    if not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
        raise UserError(f"Labels layer '{layer.name}' has dtype {data.dtype}, not integer.")
    if check_large or data.size <= layer_updates.CHECK_NOW_VALUES:
        check_label_values(data, layer.name)
    return data


def check_weight_parameters(w0: float, sigma: float, layer: Layer) -> None:
    """Refuse weight-map parameters the core refuses, naming the layer."""
    from segloop.core.weightmap import check_parameters

    try:
        check_parameters(w0, sigma)
    except ValueError as exc:
        raise UserError(f"Weight map of '{layer.name}': {exc}.") from None


def check_label_values(data: np.ndarray, name: str) -> None:
    """Refuse negative labels (safe in a worker thread)."""
    if data.size and data.dtype.kind == "i" and data.min() < 0:
        raise UserError(f"Labels layer '{name}' has negative labels.")


def spatial_shape(data: np.ndarray, rgb: bool) -> tuple[int, ...]:
    """Shape without the colour axis: (H, W) or (T, H, W)."""
    return tuple(data.shape[:-1]) if rgb else tuple(data.shape)


def is_stack(layer: Layer | None) -> bool:
    """True for a 2-D + t layer (T, H, W[, C])."""
    return layer is not None and layer.ndim == 3


def current_frame(viewer: napari.Viewer, layer: Layer) -> int:
    """Index along the first axis of ``layer`` that the viewer shows now."""
    position = layer.world_to_data(viewer.dims.point)
    n_frames = np.shape(layer.data)[0]
    return int(np.clip(round(float(position[0])), 0, n_frames - 1))


@dataclass
class IntensitySource:
    """An Image layer's pixels for the Count table, checked for shape only (GUI thread);
    :func:`intensity_values` checks and converts them (in a worker for a big image).
    ``data`` is the layer's own array until the job takes its :func:`snapshot`."""

    data: np.ndarray
    rgb: bool
    name: str


def intensity_source(labels_shape: tuple[int, ...], layer: Image | None) -> IntensitySource | None:
    """The pixels of ``layer`` to measure a labels array of ``labels_shape`` with (None if
    no layer); only the shapes are checked (no scan of the values).

    Raises
    ------
    UserError
        If the image and the labels differ in shape.
    """
    if layer is None:
        return None
    data = image_data(layer, check_large=False)
    shape = spatial_shape(data, layer.rgb)
    if shape != tuple(labels_shape):
        raise UserError(
            f"Image '{layer.name}' has shape {shape} but the labels have shape "
            f"{tuple(labels_shape)}; pick an image of the same size."
        )
    return IntensitySource(data, layer.rgb, layer.name)


def intensity_values(source: IntensitySource | None) -> np.ndarray | None:
    """Grey-level (or per-channel, for RGB) intensities of a source (worker-safe).

    Raises
    ------
    UserError
        For values the image rules refuse (NaN, infinite).
    """
    if source is None:
        return None
    name = f"Image layer '{source.name}'"
    try:
        if source.rgb:  # one set of intensity columns per colour channel
            values = own_copy(source.data)
        else:  # grey: a float32 copy
            values = copy_unwritten(source.data, np.float32)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name} has values that are not numbers ({exc})") from None
    try:  # the copy is scanned: the layer may change meanwhile
        imageio.validate_image(values, name=name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return values


def layer_pixel_size(*layers: Layer | None) -> tuple[float, float] | None:
    """Micrometres per pixel (y, x) of the first layer that knows it, else None.

    A layer knows it when its last two axes have length units (``layer.units``, e.g.
    micrometre, as segloop's reader sets from the file), or, with napari's default
    ``pixel`` units, when its ``scale`` is not 1 (readers commonly put µm there).
    """
    from segloop.core.units import checked_pixel_size, unit_to_micrometres

    for layer in layers:
        if layer is None:
            continue
        scale = [float(v) for v in layer.scale[-2:]]
        units = [str(u) for u in (getattr(layer, "units", None) or ())][-2:]
        factors = [unit_to_micrometres(u) for u in units] if len(units) == 2 else [None, None]
        if all(factors):
            size = checked_pixel_size((scale[0] * factors[0], scale[1] * factors[1]))
        elif scale != [1.0, 1.0]:
            size = checked_pixel_size((scale[0], scale[1]))
        else:
            size = None
        if size is not None:
            return size
    return None


# --------------------------------------------------------------------------- models


#: The general-purpose shipped model, listed (and so picked) first.
DEFAULT_MODEL = "nuclei"


def shipped_model_names() -> list[str]:
    """Names of the models shipped in ``segloop/models`` (listed without importing torch),
    :data:`DEFAULT_MODEL` first, then alphabetically."""
    folder = files("segloop") / "models"
    if not folder.is_dir():
        return []
    names = (
        item.name[: -len(MODEL_SUFFIX)]
        for item in folder.iterdir()
        if item.name.endswith(MODEL_SUFFIX)
    )
    return sorted(names, key=lambda name: (name != DEFAULT_MODEL, name))


_BUNDLES: dict[tuple[str, float], Any] = {}
_BUNDLES_LOCK = threading.Lock()


def load_bundle(ref: str) -> Any:
    """Load (once, then cached by path and modification time) a model by name or path."""
    from segloop.core.modelio import ModelFileError, load_model, resolve_model_path

    try:
        path = resolve_model_path(ref)
        key = (str(path.resolve()), os.path.getmtime(path))
        with _BUNDLES_LOCK:
            if key not in _BUNDLES:
                _BUNDLES.clear()  # keep one model in memory
                _BUNDLES[key] = load_model(path)
            return _BUNDLES[key]
    except (ModelFileError, OSError) as exc:
        raise UserError(f"Cannot use model {ref!r}: {exc}") from None


def check_device(name: str) -> None:
    """Raise :class:`UserError` if ``name`` is unknown or not available here."""
    from segloop.core.device import DeviceError, resolve_device

    try:
        resolve_device(name)
    except DeviceError as exc:
        raise UserError(str(exc)) from None


@dataclass
class SegmentRequest:
    """Everything a segmentation run needs, picked from the widget in the GUI thread."""

    model: str
    image: np.ndarray
    device: str = "auto"
    tile: int | None = None
    min_size: int | None = None
    diameter: float | str | None = None  # pixels, "auto", "native" or None (model default)
    uncertainty: bool = False
    unknown_threshold: float = 0.0
    tta: bool | None = None  # None: the model's default
    colour: str | None = None  # how RGB becomes grey; None: the model's default
    #: the Image layer's name, for messages about its pixels
    name: str = "image"
    #: ``(edits.EditCheck, result shape, frame)`` of the labels layers the result may
    #: replace, computed by the worker after the segmentation
    edit_checks: list = field(default_factory=list)


@dataclass
class SegmentOutput:
    """A segmentation, the model's target kind and (if asked) its uncertainty map."""

    segmentation: Any  # segloop.core.segment.Segmentation
    target: str = "instances"
    uncertainty: np.ndarray | None = None
    legend: list = field(default_factory=list)  # core.classes.ClassEntry per class value
    #: digests of the labels outputs ("instances", "classes"), see :mod:`.edits`
    digests: dict[str, dict[int, str]] = field(default_factory=dict)
    #: the result layers, built in the worker thread (``_result_layers.LayerOutput``)
    layers: list = field(default_factory=list)
    #: how RGB became grey in this run ("luma" or "hematoxylin")
    colour_used: str = "luma"


def segment_run(request: SegmentRequest, should_stop: StopCheck = None) -> Generator:
    """Check the device, load the model and segment; yields Progress, returns SegmentOutput."""
    yield Progress("load model", 0, 1, f"loading {Path(request.model).name}")
    check_device(request.device)
    bundle = load_bundle(request.model)
    check_stop(should_stop)
    yield Progress("load model", 1, 1, bundle.name)
    from segloop.core.segment import SegmentOptions, input_colour, segment_iter

    options = SegmentOptions(
        tile=request.tile,
        device=request.device,
        diameter=request.diameter,
        min_size=request.min_size,
        unknown_threshold=request.unknown_threshold,
        tta=request.tta,
        colour=request.colour,
    )
    seg = yield from segment_iter(bundle, request.image, options, should_stop)
    uncertainty = entropy_uncertainty(seg.probabilities) if request.uncertainty else None
    from .edits import frame_digests

    digests = {"instances": frame_digests(seg.instances), "classes": frame_digests(seg.classes)}
    colour_used = input_colour(bundle, options)
    return SegmentOutput(seg, bundle.target, uncertainty, bundle.legend, digests, [], colour_used)


# --------------------------------------------------------------------------- labels work


def _frames(array: np.ndarray) -> tuple[Sequence[np.ndarray], bool]:
    return (array, True) if array.ndim == 3 else ([array], False)


def weight_map_run(
    labels: np.ndarray, w0: float, sigma: float, should_stop: StopCheck = None
) -> Generator[Progress, None, np.ndarray]:
    """U-Net weight map per frame; yields Progress, returns float32 of ``labels.shape``."""
    frames, stacked = _frames(labels)
    out = []
    for index, frame in enumerate(frames):
        check_stop(should_stop)
        out.append(weight_map(frame, w0=w0, sigma=sigma))
        yield Progress("weight map", index + 1, len(frames))
    return np.stack(out) if stacked else out[0]


def _instances_2d(frame: np.ndarray, method: str, min_size: int, min_distance: int) -> np.ndarray:
    if method == "as_is":
        return frame
    if method == "components":
        return instances.connected_components(frame, min_size=min_size)
    if method == "watershed":
        return instances.split_touching(frame, min_distance=min_distance, min_size=min_size)
    if method == "class_map":
        if frame.max(initial=0) > 2:
            raise UserError(
                "A class map must hold 0 = background, 1 = interior, 2 = border; this layer "
                f"has values up to {int(frame.max())} (use it with another method)."
            )
        return instances.instances_from_class_map(frame, min_size=min_size)
    raise UserError(f"Unknown method {method!r}; choose one of {', '.join(INSTANCE_METHODS)}")


def instances_run(
    labels: np.ndarray,
    method: str,
    min_size: int = 0,
    min_distance: int = 5,
    should_stop: StopCheck = None,
) -> Generator[Progress, None, np.ndarray]:
    """Instance labels per frame; yields Progress, returns int32 of ``labels.shape``."""
    frames, stacked = _frames(labels)
    out = []
    for index, frame in enumerate(frames):
        check_stop(should_stop)
        out.append(_instances_2d(frame, method, min_size, min_distance))
        yield Progress(method, index + 1, len(frames))
    return np.stack(out) if stacked else out[0]


#: Layer metadata key of the provenance record of a segmentation result.
PROVENANCE_KEY = "segloop_provenance"


def segment_provenance(
    result: SegmentOutput, model: str, settings: dict, layer: Image, frame: int | None
) -> dict:
    """How a Segment result was made: model, settings, pixel size, source layer, device,
    object diameter used (and the frame of a current-frame run)."""
    from segloop.core.provenance import provenance

    seg = result.segmentation
    record = provenance(
        {"name": model},
        settings,
        layer_pixel_size(layer),
        source=layer.name,
        device=seg.device,
        diameter_used_px=list(seg.diameters),
        colour_used=result.colour_used,
    )
    if frame is not None:
        record["frame"] = frame
    return record


# --------------------------------------------------------------------------- files


def read_path(path: str | os.PathLike) -> np.ndarray:
    """Read an image file, or a folder of frames as a (T, H, W[, C]) stack."""
    path = Path(path)
    try:
        if path.is_dir():
            return imageio.read_folder_as_stack(path)
        return imageio.read_image(path)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None


def read_path_channels(
    path: str | os.PathLike, palette_indices: bool = False
) -> tuple[np.ndarray, int | None]:
    """:func:`read_path`, and the axis holding channels other than colour (None when
    there is none; see :func:`segloop.core.imageio.read_image_channels`, which also says
    what ``palette_indices`` does)."""
    path = Path(path)
    try:
        if path.is_dir():
            data, axis = imageio.read_folder_channels(path, palette_indices)
            return data, axis if axis is not None else imageio.trailing_channel_axis(data.shape)
        return imageio.read_image_channels(path, palette_indices)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None
