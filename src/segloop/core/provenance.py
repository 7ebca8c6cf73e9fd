"""Provenance of an output: which model, which settings, which segloop, which pixel size.

Every TIFF (``ImageDescription``, as JSON) and every CSV (a ``<name>.json`` side file)
that segloop writes carries this record, so a result found on disk a year later still
says how it was made.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from segloop.core.imageio import atomic_output

#: Key of the record in TIFF descriptions and side files.
KEY = "segloop"
#: record key of a labels TIFF the user saved from napari (perhaps corrected): no
#: segloop command replaces such a file as one of its own outputs
SAVED_FROM_NAPARI = "saved_from_napari"


def segloop_version() -> str:
    """The installed segloop version."""
    from segloop import __version__

    return __version__


def provenance(
    model: Any = None,
    settings: Any = None,
    pixel_size: tuple[float, float] | None = None,
    source: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A JSON-ready record of how an output was made.

    Parameters
    ----------
    model : ModelBundle or dict, optional
        The model used (its name, version, file and stored object diameter are recorded).
    settings : dataclass or dict, optional
        The settings used (e.g. :class:`~segloop.core.segment.SegmentOptions`).
    pixel_size : (float, float), optional
        Micrometres per pixel (y, x) of the input, when known.
    source : str, optional
        The input the output was made from (file name or napari layer).
    **extra
        Further entries (e.g. ``command="segloop count"``).
    """
    record: dict[str, Any] = {
        "segloop_version": segloop_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }
    if model is not None:
        record["model"] = model_record(model)
    if settings is not None:
        record["settings"] = _plain(asdict(settings) if is_dataclass(settings) else settings)
    record["pixel_size_um"] = list(pixel_size) if pixel_size else None
    if source is not None:
        record["source"] = str(source)
    record.update(_plain(extra))
    return record


def model_record(model: Any) -> dict[str, Any]:
    """Name, version, file and object diameter of a model bundle (or a dict as given)."""
    if isinstance(model, dict):
        return _plain(model)
    metadata = getattr(model, "metadata", {}) or {}
    path = getattr(model, "path", None)
    return _plain(
        {
            "name": getattr(model, "name", None),
            "version": metadata.get("version"),
            "file": str(path) if path else None,
            "diameter_px": getattr(model, "diameter", None),
            "target": metadata.get("target"),
            "training_pixel_size_um": metadata.get("pixel_size_um"),
            # how it turns RGB into grey unless the settings' ``colour`` says otherwise
            "colour": (metadata.get("preprocess") or {}).get("colour", "luma"),
        }
    )


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars, paths and tuples made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def tiff_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """``write_tiff(..., metadata=...)`` entries holding ``record``."""
    return {KEY: record}


def read_tiff_provenance(path: str | Path) -> dict[str, Any] | None:
    """The record a segloop TIFF carries (None if it has none)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        description = tif.pages.first.description
    try:
        return json.loads(description).get(KEY)
    except (ValueError, AttributeError):
        return None


def side_file(path: str | Path) -> Path:
    """The side file of a CSV: ``counts.csv`` -> ``counts.csv.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_side_file(path: str | Path, record: dict[str, Any], columns: dict | None = None) -> Path:
    """Write ``record`` (and the unit of each column) beside the CSV ``path``, atomically."""
    target = side_file(path)
    content = {KEY: record}
    if columns:
        content["columns"] = columns
    with atomic_output(target) as tmp:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target
