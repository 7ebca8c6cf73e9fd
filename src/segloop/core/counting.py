"""Object measurements and counts from instance labels, and their CSV export."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from skimage.measure import regionprops_table

from segloop.core.imageio import atomic_output

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
)
_INT_COLUMNS = ("label", "frame", "area", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")


def _frames(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels[np.newaxis]
    if labels.ndim == 3:
        return labels
    raise ValueError(f"labels must be (H, W) or (T, H, W), got shape {labels.shape}")


def count_table(labels: np.ndarray, intensity: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Measure every object: one row per (frame, label).

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(H, W)`` (frame 0) or ``(T, H, W)`` (labels per frame).
    intensity : np.ndarray, optional
        Intensity image of exactly ``labels.shape`` for ``mean_intensity``; NaN if None.

    Returns
    -------
    dict of str to np.ndarray
        Columns :data:`TABLE_COLUMNS`. Integer columns are int64, others float64.
        ``bbox_max_*`` are exclusive (slice ends), as in scikit-image. Areas in pixels.
    """
    frames = _frames(labels)
    if intensity is not None:
        intensity = np.asarray(intensity)
        if intensity.shape != np.shape(labels):
            raise ValueError(
                f"intensity must have the same shape as labels {np.shape(labels)}, "
                f"got {intensity.shape}"
            )
        intensity_frames = _frames(intensity)
    props = ("label", "area", "centroid", "bbox", "equivalent_diameter_area")
    rename = {
        "centroid-0": "centroid_y",
        "centroid-1": "centroid_x",
        "bbox-0": "bbox_min_y",
        "bbox-1": "bbox_min_x",
        "bbox-2": "bbox_max_y",
        "bbox-3": "bbox_max_x",
        "equivalent_diameter_area": "equivalent_diameter",
    }
    parts: dict[str, list[np.ndarray]] = {name: [] for name in TABLE_COLUMNS}
    for t, frame in enumerate(frames):
        frame_int = frame.astype(np.int64, copy=False)
        if intensity is None:
            table = regionprops_table(frame_int, properties=props)
            table["intensity_mean"] = np.full(len(table["label"]), np.nan)
        else:
            image = intensity_frames[t].astype(np.float64, copy=False)
            table = regionprops_table(
                frame_int, intensity_image=image, properties=(*props, "intensity_mean")
            )
        n = len(table["label"])
        parts["frame"].append(np.full(n, t, dtype=np.int64))
        parts["mean_intensity"].append(np.asarray(table.pop("intensity_mean")))
        for key, values in table.items():
            parts[rename.get(key, key)].append(np.asarray(values))
    return {
        name: np.concatenate(chunks).astype(np.int64 if name in _INT_COLUMNS else np.float64)
        for name, chunks in parts.items()
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


def write_csv(
    table: dict[str, np.ndarray],
    path: str | Path,
    extra_columns: dict[str, object] | None = None,
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
