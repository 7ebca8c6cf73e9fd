"""Lazy inputs and chunk-by-chunk outputs for images larger than memory.

Inputs: TIFF (read tile- or strip-wise through tifffile's zarr store), Zarr arrays and
OME-Zarr images (NGFF 0.4 and 0.5, multiscale: level 0 or a chosen level). Nothing is read
until a window is asked for. Outputs: OME-Zarr label images (NGFF 0.5, a labels group
beside the image when the input is OME-Zarr) and tiled BigTIFF, written under a temporary
name and moved into place only when complete, so a cancelled or failed run never leaves
an output that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .core.imageio import to_grayscale
from .core.units import PixelSize, read_pixel_size

#: Side of the chunks of Zarr outputs (pixels).
ZARR_CHUNK = 512
#: Name of the labels group segloop writes inside an OME-Zarr input.
LABELS_NAME = "segloop"


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ValueError(
            'large TIFF, Zarr and OME-Zarr support needs zarr: pip install "napari-segloop[zarr]"'
        ) from None
    return zarr


def is_zarr_path(path: str | Path) -> bool:
    """True for a Zarr array or group folder (``.zarr``, or holding zarr metadata)."""
    path = Path(path)
    if not path.is_dir():
        return False
    markers = (".zarray", ".zgroup", ".zattrs", "zarr.json")
    return path.suffix.lower() == ".zarr" or any((path / m).exists() for m in markers)


@dataclass
class LazyImage:
    """A 2-D (or 2-D + t) image read window by window.

    ``axes`` of the stored array use ``t``, ``c``, ``y``, ``x`` (``z`` of size 1 is
    dropped); :meth:`window` returns ``(h, w)`` or ``(h, w, c)`` NumPy arrays.
    """

    array: Any
    axes: str
    path: Path
    pixel_size: PixelSize | None = None
    ome_root: Path | None = None
    level: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.array.shape[self.axes.index("y")])

    @property
    def width(self) -> int:
        return int(self.array.shape[self.axes.index("x")])

    @property
    def n_frames(self) -> int:
        return int(self.array.shape[self.axes.index("t")]) if "t" in self.axes else 1

    @property
    def is_stack(self) -> bool:
        return "t" in self.axes

    @property
    def n_channels(self) -> int:
        return int(self.array.shape[self.axes.index("c")]) if "c" in self.axes else 1

    def window(self, box: tuple[int, int, int, int], frame: int = 0) -> np.ndarray:
        """Pixels of ``box`` (y0, y1, x0, x1) of ``frame``: (h, w) or (h, w, c)."""
        y0, y1, x0, x1 = box
        index = []
        for axis, size in zip(self.axes, self.array.shape, strict=True):
            if axis == "t":
                index.append(frame)
            elif axis == "y":
                index.append(slice(y0, y1))
            elif axis == "x":
                index.append(slice(x0, x1))
            elif axis == "z":
                index.append(0 if size == 1 else slice(None))
            else:
                index.append(slice(None))
        data = np.asarray(self.array[tuple(index)])
        kept = [a for a in self.axes if a not in "tz"]
        order = [kept.index(a) for a in "yxc" if a in kept]
        return np.transpose(data, order)

    def grey_window(
        self, box: tuple[int, int, int, int], frame: int = 0, colour: str = "luma"
    ) -> np.ndarray:
        """The window as float32 grey values (colour channels combined as the model's
        ``preprocess.colour`` says, :func:`~segloop.core.imageio.to_grayscale`)."""
        data = self.window(box, frame)
        return to_grayscale(data, channel_axis=-1 if data.ndim == 3 else None, colour=colour)


def open_lazy(path: str | Path, level: int = 0) -> LazyImage:
    """Open a TIFF, Zarr array or OME-Zarr image without reading its pixels."""
    path = Path(path)
    if is_zarr_path(path):
        return _open_zarr(path, level)
    if path.suffix.lower() in (".tif", ".tiff"):
        return _open_tiff(path)
    raise ValueError(f"{path}: chunked reading takes TIFF, Zarr or OME-Zarr, not {path.suffix}")


def _open_tiff(path: Path) -> LazyImage:
    import tifffile

    zarr = _zarr()
    store = tifffile.imread(path, aszarr=True)
    array = zarr.open(store, mode="r")
    if not hasattr(array, "shape"):  # a multiscale (pyramidal) TIFF: level 0
        array = array["0"]
    shape = array.shape
    axes = _guess_axes(shape)
    return LazyImage(array, axes, path, read_pixel_size(path), extra={"store": store})


def _guess_axes(shape: tuple[int, ...]) -> str:
    """Axes of a TIFF array as segloop reads them: YX, YXC (3/4 last), TYX, TYXC."""
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3:
        return "yxc" if shape[-1] in (3, 4) else "tyx"
    if len(shape) == 4 and shape[-1] in (3, 4):
        return "tyxc"
    raise ValueError(f"cannot read an image of shape {shape} as 2-D or 2-D + t")


def _ome_attrs(path: Path) -> dict:
    if (path / ".zattrs").is_file():
        return json.loads((path / ".zattrs").read_text())
    if (path / "zarr.json").is_file():
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        return attrs.get("ome", attrs)
    return {}


def _multiscale(path: Path, attrs: dict) -> dict:
    """The first ``multiscales`` entry of an OME-Zarr's metadata, checked enough to use:
    a list of datasets, each with a ``path``, and a list of axes.

    Raises
    ------
    ValueError
        Naming the folder, when the metadata is malformed.
    """
    try:
        multiscale = attrs["multiscales"][0]
        datasets = multiscale["datasets"]
        usable = (
            isinstance(datasets, list)
            and datasets
            and all(isinstance(d, dict) and isinstance(d.get("path"), str) for d in datasets)
            and isinstance(multiscale.get("axes", []), list)
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        usable = False
    if not usable:
        raise ValueError(
            f"{path}: its OME-Zarr 'multiscales' metadata is malformed (it needs a list of "
            "datasets, each with a 'path')"
        )
    return multiscale


def _open_zarr(path: Path, level: int) -> LazyImage:
    zarr = _zarr()
    attrs = _ome_attrs(path)
    if "multiscales" in attrs:
        multiscale = _multiscale(path, attrs)
        datasets = multiscale["datasets"]
        if not 0 <= level < len(datasets):
            raise ValueError(f"{path} has {len(datasets)} resolution levels, not level {level}")
        array = zarr.open_array(str(path / datasets[level]["path"]), mode="r")
        names = [
            str(a.get("name", "")) if isinstance(a, dict) else str(a)
            for a in multiscale.get("axes", [])
        ]
        usable = names and all(names) and len(names) == array.ndim
        axes = "".join(n[0].lower() for n in names) if usable else _guess_axes(array.shape)
        from .core.units import _zarr_pixel_size

        return LazyImage(array, axes, path, _zarr_pixel_size(path, level), path, level)
    array = zarr.open_array(str(path), mode="r")
    return LazyImage(array, _guess_axes(array.shape), path, None)


def level_scales(path: str | Path) -> list[float]:
    """How many level-0 pixels one pixel of each level of an OME-Zarr spans (1, 2, 4…)."""
    attrs = _ome_attrs(Path(path)) if is_zarr_path(path) else {}
    if "multiscales" not in attrs:
        return [1.0]
    from .core.units import _scale_of

    scales = []
    for dataset in _multiscale(Path(path), attrs)["datasets"]:
        try:
            scale = _scale_of(dataset.get("coordinateTransformations", [])) or [1.0, 1.0]
            scales.append(float(scale[-1]))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise ValueError(
                f"{path}: the scale of level {len(scales)} in its OME-Zarr metadata is malformed"
            ) from None
    if not all(scale > 0 for scale in scales):
        raise ValueError(f"{path}: its OME-Zarr levels need scales above 0, not {scales}")
    return [s / scales[0] for s in scales]


def choose_level(
    path: str | Path,
    model_diameter: float | None,
    diameter_px: float | None,
    model_pixel_size: float | None = None,
    pixel_size: tuple[float, float] | None = None,
) -> int:
    """The OME-Zarr level whose pixels best match the model's (``--level auto``).

    With the model's training pixel size and the image's known, the level whose pixel
    size is nearest to it (in ratio); else, with the objects' diameter in level-0 pixels
    and the model's object diameter, the level where the objects are nearest to the
    model's size; else level 0. Never a level where objects would be more than 1.5x
    smaller than the model's (coarser levels lose detail the network needs).
    """
    import math

    scales = level_scales(path)
    if model_pixel_size and pixel_size:
        wanted = model_pixel_size / math.sqrt(pixel_size[0] * pixel_size[1])
    elif model_diameter and diameter_px:
        wanted = diameter_px / model_diameter
    else:
        return 0
    allowed = [i for i, s in enumerate(scales) if s <= wanted * 1.5] or [0]
    return min(allowed, key=lambda i: abs(math.log(scales[i] / wanted)))


# --------------------------------------------------------------------------- outputs


class ZarrLabels:
    """An OME-Zarr (NGFF 0.5) label image written chunk by chunk under a temporary name.

    Parameters
    ----------
    target : Path
        Final location: ``<out>/<stem>_labels.zarr``, or ``<image>.zarr/labels/segloop``.
    shape : tuple of int
        ``(h, w)`` or ``(t, h, w)``.
    pixel_size : (float, float), optional
        Micrometres per pixel (y, x), stored as the scale of the y and x axes.
    record : dict, optional
        Provenance, stored in the group's attributes under ``segloop``.
    """

    def __init__(
        self,
        target: Path,
        shape: tuple[int, ...],
        pixel_size=None,
        record=None,
        dtype=np.uint32,
    ):
        zarr = _zarr()
        self.target = Path(target)
        self.partial = self.target.with_name(self.target.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.shape = tuple(int(v) for v in shape)
        chunks = (ZARR_CHUNK, ZARR_CHUNK) if len(shape) == 2 else (1, ZARR_CHUNK, ZARR_CHUNK)
        group = zarr.open_group(str(self.partial), mode="w", zarr_format=3)
        self.array = group.create_array(
            "0", shape=self.shape, chunks=chunks, dtype=dtype, fill_value=0
        )
        group.attrs.update(self._attributes(pixel_size, record))
        self.group = group

    def _attributes(self, pixel_size, record) -> dict:
        axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
        scale = list(pixel_size) if pixel_size else [1.0, 1.0]
        if pixel_size:
            for axis in axes:
                axis["unit"] = "micrometer"
        if len(self.shape) == 3:
            axes.insert(0, {"name": "t", "type": "time"})
            scale.insert(0, 1.0)
        transform = [{"type": "scale", "scale": scale}]
        multiscale = {
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": transform}],
        }
        ome = {"version": "0.5", "multiscales": [multiscale], "image-label": {"version": "0.5"}}
        return {"ome": ome, "segloop": record or {}}

    def finish(self) -> Path:
        """Move the complete output into place (replacing an older one); returns it.

        The older output is first renamed aside, so that one complete result is on disk at
        every moment (an interrupt cannot leave it half deleted); it is deleted last.
        """
        retired = None
        if self.target.exists():
            retired = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(self.target, retired)
        try:
            os.replace(self.partial, self.target)
        except BaseException:
            if retired is not None:
                os.replace(retired, self.target)
            raise
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        _register_label(self.target)
        return self.target

    def abort(self) -> None:
        """Remove the partial output."""
        shutil.rmtree(self.partial, ignore_errors=True)


def _register_label(target: Path) -> None:
    """List ``target`` in its parent ``labels`` group when it is an OME-Zarr labels group."""
    labels = target.parent
    if labels.name != "labels":
        return
    zarr = _zarr()
    image = labels.parent
    fmt = 3 if (image / "zarr.json").exists() else 2
    group = zarr.open_group(str(labels), mode="a", zarr_format=fmt)
    key = "ome" if fmt == 3 else None
    attrs = dict(group.attrs.get(key, {})) if key else dict(group.attrs)
    names = list(attrs.get("labels", []))
    if target.name not in names:
        names.append(target.name)
    attrs["labels"] = names
    if key:
        attrs.setdefault("version", "0.5")
        group.attrs[key] = attrs
    else:
        group.attrs.update(attrs)


def labels_target(lazy: LazyImage, out_dir: Path, stem: str) -> Path:
    """Where the Zarr labels of ``lazy`` go: beside the image for OME-Zarr input."""
    if lazy.ome_root is not None:
        return lazy.ome_root / "labels" / LABELS_NAME
    return out_dir / f"{stem}_labels.zarr"


def zarr_to_tiff(array, path: Path, tile: int = 512, metadata=None, pixel_size=None) -> Path:
    """Stream a (h, w) or (t, h, w) integer Zarr array into a tiled BigTIFF, atomically.

    Values are stored as uint8, uint16 or uint32, the smallest that holds them.
    """
    import tifffile

    from .core.imageio import atomic_output

    shape = tuple(array.shape)
    frames = shape[0] if len(shape) == 3 else 1
    top = 0
    for t in range(frames):
        for y in range(0, shape[-2], tile * 8):
            block = array[t, y : y + tile * 8] if len(shape) == 3 else array[y : y + tile * 8]
            top = max(top, int(np.asarray(block).max(initial=0)))
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32

    def tiles():
        for t in range(frames):
            for y in range(0, shape[-2], tile):
                for x in range(0, shape[-1], tile):
                    region = (t, slice(y, y + tile), slice(x, x + tile)) if len(shape) == 3 else (
                        slice(y, y + tile), slice(x, x + tile))  # fmt: skip
                    data = np.asarray(array[region]).astype(dtype)
                    padded = np.zeros((tile, tile), dtype)
                    padded[: data.shape[0], : data.shape[1]] = data
                    yield padded

    options: dict = {"compression": "zlib", "photometric": "minisblack"}
    if metadata:
        options["metadata"] = dict(metadata)
    if pixel_size:
        options.update(
            resolution=(1e4 / pixel_size[1], 1e4 / pixel_size[0]), resolutionunit="CENTIMETER"
        )
    with atomic_output(path, suffix=".tif") as tmp:
        tifffile.imwrite(
            tmp, tiles(), shape=shape, dtype=dtype, tile=(tile, tile), bigtiff=True, **options
        )
    return path
