"""Physical pixel sizes: read them from image metadata, parse lengths such as ``12um``.

A pixel size here is a ``(y, x)`` pair of micrometres per pixel. It comes from, in order:
an explicit value (``--pixel-size``, a napari layer's ``scale``), OME-TIFF
``PhysicalSizeY/X``, ImageJ TIFF resolution + unit, a TIFF's resolution tags in
centimetres, or an OME-Zarr's ``coordinateTransformations``. Inch resolutions are ignored:
image editors write 72 dpi into files that never saw a microscope.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

PixelSize = tuple[float, float]

#: Micrometres per unit, for the spellings found in OME, ImageJ, OME-Zarr and by users.
MICROMETRES = {
    "pm": 1e-6,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "\\u00b5m": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
}
_LENGTH = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([^\s0-9.][^\s]*)?\s*$")


def unit_to_micrometres(unit: str) -> float | None:
    """Micrometres in one ``unit`` (None for an unknown or non-length unit)."""
    return MICROMETRES.get(unit.strip().lower()) if unit else None


def parse_length(text: str) -> tuple[float, str | None]:
    """``"12um"`` -> ``(12.0, "um")``; ``"18"`` -> ``(18.0, None)`` (no unit: pixels).

    Raises
    ------
    ValueError
        If ``text`` is not a positive number with an optional known length unit.
    """
    match = _LENGTH.match(str(text))
    if match is None:
        raise ValueError(f"not a length: {text!r} (e.g. 18, 18px or 12um)")
    value, unit = float(match.group(1)), match.group(2)
    if unit is not None and unit.lower() in ("px", "pixel", "pixels"):
        unit = None
    if unit is not None and unit_to_micrometres(unit) is None:
        raise ValueError(f"unknown length unit {unit!r} in {text!r}: use px, nm, um or mm")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"a length must be positive, got {text!r}")
    return value, unit


def length_in_micrometres(text: str) -> float | None:
    """``"12um"`` -> 12.0, ``"0.5mm"`` -> 500.0; None when ``text`` has no unit (pixels)."""
    value, unit = parse_length(text)
    return None if unit is None else value * unit_to_micrometres(unit)


def parse_pixel_size(text: str) -> PixelSize:
    """``--pixel-size``: ``"0.65"`` (µm), ``"650nm"``, or ``"0.65,0.7"`` (y, x)."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if len(parts) not in (1, 2):
        raise ValueError(f"pixel size must be one length or 'y,x', got {text!r}")
    sizes = []
    for part in parts:
        value, unit = parse_length(part)
        sizes.append(value * (unit_to_micrometres(unit) if unit else 1.0))
    return (sizes[0], sizes[-1])


def checked_pixel_size(size: PixelSize | float | None) -> PixelSize | None:
    """``size`` as a (y, x) pair of finite positive floats, or None."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int | float) else tuple(size)
    if len(pair) != 2 or not all(math.isfinite(float(v)) and float(v) > 0 for v in pair):
        return None
    return (float(pair[0]), float(pair[1]))


def read_pixel_size(path: str | Path) -> PixelSize | None:
    """Micrometres per pixel (y, x) stored with an image file or OME-Zarr folder, or None."""
    path = Path(path)
    try:
        if path.is_dir():
            return _zarr_pixel_size(path)
        if path.suffix.lower() in (".tif", ".tiff"):
            return _tiff_pixel_size(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError, ElementTree.ParseError):
        return None
    return None


def _tiff_pixel_size(path: Path) -> PixelSize | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.ome_metadata:
            size = _ome_pixel_size(tif.ome_metadata)
            if size:
                return size
        page = tif.pages.first
        tags = page.tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        per_unit_x = _rational(tags["XResolution"].value)
        per_unit_y = _rational(tags["YResolution"].value)
        if tif.imagej_metadata:
            unit = str(tif.imagej_metadata.get("unit", ""))
            scale = unit_to_micrometres(unit)
            if scale is None:
                return None
            return checked_pixel_size((scale / per_unit_y, scale / per_unit_x))
        unit_tag = tags.get("ResolutionUnit")
        if unit_tag is not None and int(unit_tag.value) == 3:  # centimetre
            return checked_pixel_size((1e4 / per_unit_y, 1e4 / per_unit_x))
    return None


def _rational(value) -> float:
    if isinstance(value, tuple):
        return value[0] / value[1] if value[1] else math.inf
    return float(value)


def _ome_pixel_size(xml: str) -> PixelSize | None:
    root = ElementTree.fromstring(xml)
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        sizes = []
        for axis in ("Y", "X"):
            value = element.get(f"PhysicalSize{axis}")
            if value is None:
                return None
            scale = unit_to_micrometres(element.get(f"PhysicalSize{axis}Unit", "µm"))
            if scale is None:
                return None
            sizes.append(float(value) * scale)
        return checked_pixel_size(tuple(sizes))
    return None


def _zarr_pixel_size(folder: Path, level: int = 0) -> PixelSize | None:
    """Level ``level``'s y/x scale of an OME-Zarr (NGFF 0.4 ``.zattrs`` or 0.5 ``zarr.json``);
    None when it is not recorded, or recorded in a form this code cannot read."""
    try:
        return _read_zarr_pixel_size(folder, level)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


def _read_zarr_pixel_size(folder: Path, level: int) -> PixelSize | None:
    attrs = None
    if (folder / ".zattrs").is_file():
        attrs = json.loads((folder / ".zattrs").read_text())
    elif (folder / "zarr.json").is_file():
        attrs = json.loads((folder / "zarr.json").read_text()).get("attributes", {})
        attrs = attrs.get("ome", attrs)
    if not attrs or "multiscales" not in attrs:
        return None
    multiscale = attrs["multiscales"][0]
    axes = multiscale.get("axes", [])
    scale = _scale_of(multiscale["datasets"][level].get("coordinateTransformations", []))
    extra = _scale_of(multiscale.get("coordinateTransformations", []))
    if scale is None:
        return None
    if extra is not None:
        scale = [a * b for a, b in zip(scale, extra, strict=False)]
    names = [a.get("name") if isinstance(a, dict) else str(a) for a in axes]
    sizes = []
    for axis in ("y", "x"):
        index = names.index(axis) if axis in names else len(scale) - (2 if axis == "y" else 1)
        unit = (
            axes[index].get("unit", "")
            if index < len(axes) and isinstance(axes[index], dict)
            else ""
        )
        factor = unit_to_micrometres(unit) if unit else None
        if factor is None:
            return None
        sizes.append(scale[index] * factor)
    return checked_pixel_size(tuple(sizes))


def _scale_of(transformations: list) -> list[float] | None:
    for transformation in transformations:
        if transformation.get("type") == "scale":
            return [float(v) for v in transformation["scale"]]
    return None
