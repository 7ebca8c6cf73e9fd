"""Object measurements and counts from instance labels, and their CSV export."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from skimage.measure import regionprops_table

from segloop.core.imageio import atomic_output

#: Columns of every table, in this order (pixels; intensities of the first channel).
TABLE_COLUMNS = (
    "label",
    "frame",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
    "equivalent_diameter",
    "mean_intensity",
    "perimeter",
    "eccentricity",
    "solidity",
    "min_intensity",
    "max_intensity",
)
#: Columns added when the pixel size is known (micrometres; the unit is in the name).
MICRON_COLUMNS = (
    "area_um2",
    "equivalent_diameter_um",
    "perimeter_um",
    "centroid_y_um",
    "centroid_x_um",
)
#: Unit of each column, for CSV side files and tooltips (per-channel columns: intensity).
UNITS = {
    "label": "id",
    "frame": "index",
    "area": "px^2",
    "centroid_y": "px",
    "centroid_x": "px",
    "bbox_min_y": "px",
    "bbox_min_x": "px",
    "bbox_max_y": "px",
    "bbox_max_x": "px",
    "equivalent_diameter": "px",
    "mean_intensity": "intensity",
    "perimeter": "px",
    "eccentricity": "1",
    "solidity": "1",
    "min_intensity": "intensity",
    "max_intensity": "intensity",
    "area_um2": "um^2",
    "equivalent_diameter_um": "um",
    "perimeter_um": "um",
    "centroid_y_um": "um",
    "centroid_x_um": "um",
}
_INT_COLUMNS = ("label", "frame", "area", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")
_SHAPE_PROPS = ("label", "area", "centroid", "bbox", "equivalent_diameter_area", "perimeter")
_SHAPE_PROPS += ("eccentricity", "solidity")
_INTENSITY = {"intensity_mean": "mean", "intensity_min": "min", "intensity_max": "max"}
_RENAME = {
    "centroid-0": "centroid_y",
    "centroid-1": "centroid_x",
    "bbox-0": "bbox_min_y",
    "bbox-1": "bbox_min_x",
    "bbox-2": "bbox_max_y",
    "bbox-3": "bbox_max_x",
    "equivalent_diameter_area": "equivalent_diameter",
}


def _frames(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels[np.newaxis]
    if labels.ndim == 3:
        return labels
    raise ValueError(f"labels must be (H, W) or (T, H, W), got shape {labels.shape}")


def _intensity_frames(intensity: np.ndarray, labels_shape: tuple[int, ...]) -> np.ndarray:
    """``intensity`` as (T, H, W, C) float64: labels' shape, with or without channels last."""
    intensity = np.asarray(intensity)
    if intensity.shape == labels_shape:
        intensity = intensity[..., np.newaxis]
    elif intensity.shape[:-1] != labels_shape:
        raise ValueError(
            f"intensity must have the same shape as labels {labels_shape} "
            f"(optionally with channels last), got {intensity.shape}"
        )
    if len(labels_shape) == 2:
        intensity = intensity[np.newaxis]
    return intensity


def channel_columns(n_channels: int) -> tuple[str, ...]:
    """Per-channel intensity columns of a table with ``n_channels`` > 1 channels."""
    if n_channels <= 1:
        return ()
    return tuple(
        f"{stat}_intensity_ch{c}" for c in range(n_channels) for stat in ("mean", "min", "max")
    )


def count_table(
    labels: np.ndarray,
    intensity: np.ndarray | None = None,
    pixel_size: tuple[float, float] | None = None,
) -> dict[str, np.ndarray]:
    """Measure every object: one row per (frame, label), with ``regionprops_table``.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(H, W)`` (frame 0) or ``(T, H, W)`` (labels per frame).
    intensity : np.ndarray, optional
        Intensity image of ``labels.shape``, or ``labels.shape + (C,)`` for C channels.
        Intensity columns are NaN without it.
    pixel_size : (float, float), optional
        Micrometres per pixel (y, x). Adds :data:`MICRON_COLUMNS`.

    Returns
    -------
    dict of str to np.ndarray
        Columns :data:`TABLE_COLUMNS` (the intensity ones of the first channel), then one
        mean/min/max triple per channel when there are several (:func:`channel_columns`),
        then :data:`MICRON_COLUMNS` when ``pixel_size`` is given. Integer columns are int64,
        others float64. ``bbox_max_*`` are exclusive (slice ends), as in scikit-image.

    Notes
    -----
    ``perimeter`` is scikit-image's 4-connected contour length estimate. With non-square
    pixels, ``perimeter_um`` uses the geometric mean of the two pixel sides.
    """
    frames = _frames(labels)
    channels = None
    if intensity is not None:
        channels = _intensity_frames(intensity, np.shape(labels))
    n_channels = 1 if channels is None else channels.shape[-1]
    names = (*TABLE_COLUMNS, *channel_columns(n_channels))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for t, frame in enumerate(frames):
        frame_int = frame.astype(np.int64, copy=False)
        if channels is None:
            table = regionprops_table(frame_int, properties=_SHAPE_PROPS)
            for stat in _INTENSITY.values():
                table[f"{stat}_intensity"] = np.full(len(table["label"]), np.nan)
        else:
            image = channels[t].astype(np.float64, copy=False)
            table = regionprops_table(
                frame_int, intensity_image=image, properties=(*_SHAPE_PROPS, *_INTENSITY)
            )
            table = _intensity_names(table, n_channels)
        n = len(table["label"])
        parts["frame"].append(np.full(n, t, dtype=np.int64))
        for key, values in table.items():
            parts[_RENAME.get(key, key)].append(np.asarray(values))
    result = {
        name: np.concatenate(chunks).astype(np.int64 if name in _INT_COLUMNS else np.float64)
        for name, chunks in parts.items()
    }
    if pixel_size is not None:
        result.update(micron_columns(result, pixel_size))
    return result


def _intensity_names(table: dict, n_channels: int) -> dict:
    """regionprops' ``intensity_mean[-c]`` keys -> ``mean_intensity[_chC]``."""
    renamed = {}
    for key, values in table.items():
        base, _, channel = key.partition("-")
        if base not in _INTENSITY:
            renamed[key] = values
            continue
        stat = _INTENSITY[base]
        c = int(channel) if channel else 0
        if c == 0:
            renamed[f"{stat}_intensity"] = values
        if n_channels > 1:
            renamed[f"{stat}_intensity_ch{c}"] = values
    return renamed


def micron_columns(
    table: dict[str, np.ndarray], pixel_size: tuple[float, float]
) -> dict[str, np.ndarray]:
    """:data:`MICRON_COLUMNS` from a pixel table and the (y, x) pixel size in µm."""
    size_y, size_x = (float(v) for v in pixel_size)
    area = np.asarray(table["area"], np.float64) * size_y * size_x
    return {
        "area_um2": area,
        "equivalent_diameter_um": 2.0 * np.sqrt(area / np.pi),
        "perimeter_um": np.asarray(table["perimeter"], np.float64) * math.sqrt(size_y * size_x),
        "centroid_y_um": np.asarray(table["centroid_y"], np.float64) * size_y,
        "centroid_x_um": np.asarray(table["centroid_x"], np.float64) * size_x,
    }


def frame_counts(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Number of objects per frame, empty frames included.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(H, W)`` (one frame, index 0) or ``(T, H, W)``.

    Returns
    -------
    dict of str to np.ndarray
        ``frame`` and ``count`` (int64), one row per frame.
    """
    frames = _frames(labels)
    counts = [np.count_nonzero(np.unique(frame)) for frame in frames]
    return {
        "frame": np.arange(len(frames), dtype=np.int64),
        "count": np.asarray(counts, dtype=np.int64),
    }


def _format_value(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def column_units(names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Unit of each column name (per-channel intensities: ``intensity``; others: ``""``)."""
    units = {}
    for name in names:
        if name in UNITS:
            units[name] = UNITS[name]
        elif "_intensity_ch" in name:
            units[name] = "intensity"
        else:
            units[name] = ""
    return units


def write_csv(
    table: dict[str, np.ndarray],
    path: str | Path,
    extra_columns: dict[str, object] | None = None,
    provenance: dict | None = None,
) -> None:
    """Write a column table as CSV, atomically.

    Parameters
    ----------
    table : dict of str to np.ndarray
        Equal-length columns (for example from :func:`count_table`).
    path : str or Path
        Output file; parent folders are created. Written to a temporary file in the same
        folder, then moved into place with ``os.replace``.
    extra_columns : dict of str to object, optional
        Constant columns (e.g. ``{"image": "a.tif"}``) written first, repeated on every
        row.
    provenance : dict, optional
        A :func:`segloop.core.provenance.provenance` record, written with the unit of
        every column to the side file ``<path>.json`` (after the CSV itself).

    Notes
    -----
    Floats are written with up to 6 significant digits (``nan`` for missing values),
    integers exactly.
    """
    extra = dict(extra_columns or {})
    lengths = {name: len(np.asarray(column)) for name, column in table.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"all table columns must have the same length, got {lengths}")
    clash = set(extra) & set(table)
    if clash:
        raise ValueError(f"extra_columns repeat table columns: {sorted(clash)}")
    n_rows = next(iter(lengths.values()), 0)
    header = [*extra, *table]
    columns = [np.asarray(column) for column in table.values()]
    extra_cells = [_format_value(value) for value in extra.values()]
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(n_rows):
            writer.writerow(extra_cells + [_format_value(column[i]) for column in columns])
    if provenance is not None:
        from segloop.core.provenance import write_side_file

        write_side_file(path, provenance, column_units(header))
