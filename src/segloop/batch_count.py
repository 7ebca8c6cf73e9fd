"""Batch counting: objects per image and per frame into CSVs, with per-object tables.

Small inputs are segmented whole (:func:`segloop.batch.segment_file`); larger ones (and
Zarr) are segmented into a scratch Zarr and measured window by window, with the object
rows streamed through per-file parts.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .batch import ChunkOptions, _batch_record, check_level, segment_file
from .core.counting import count_table, frame_counts, write_csv
from .core.modelio import load_model
from .core.progress import Progress
from .core.segment import SegmentOptions
from .core.units import PixelSize


def count_files(
    model: str,
    inputs: Sequence[Path],
    csv_path: Path,
    options: SegmentOptions,
    objects_csv: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
    pixel_size: PixelSize | None = None,
    chunking: ChunkOptions | None = None,
) -> dict[str, np.ndarray]:
    """Count objects per image (and per frame of stacks) into a CSV.

    The per-object table measures shape and the intensity of every channel of the input;
    with a known pixel size (``pixel_size`` or the file's metadata) it also holds µm
    columns. Both CSVs get a ``.json`` side file with their provenance. Inputs larger
    than ``chunking.chunk`` (and Zarr ones) are segmented and measured window by window;
    then the object rows are streamed through per-file parts, never held whole.
    """
    from .batch_chunked import wants_chunked

    chunking = chunking or ChunkOptions()
    check_level(inputs, chunking.level)
    counts: dict[str, list] = {"image": [], "frame": [], "count": [], "pixel_size_um": []}
    objects: list[dict[str, np.ndarray]] = []
    records = []
    bundle = None
    scratch = Path(tempfile.mkdtemp(prefix=".segloop-count-", dir=csv_path.parent))
    parts: list[Path] = []
    try:
        for index, path in enumerate(inputs):
            if wants_chunked(path, chunking.chunk, "tiff"):
                part = scratch / f"objects_{index}.csv" if objects_csv is not None else None
                per_frame, size, record = _count_chunked(
                    model, path, options, pixel_size, chunking, scratch, part, progress
                )
                if part is not None:
                    parts.append(part)
            else:
                bundle = bundle or load_model(model)
                done = segment_file(bundle, path, options, progress, pixel_size)
                instances, size, record = (
                    done.segmentation.instances,
                    done.pixel_size,
                    done.provenance,
                )
                per_frame = frame_counts(instances)
                if objects_csv is not None:
                    table = count_table(instances, _intensity_of(done.image, instances), size)
                    objects.append({"image": np.array([path.name] * len(table["label"])), **table})
            records.append(record)
            n_frames = len(per_frame["frame"])
            counts["image"] += [path.name] * n_frames
            counts["frame"] += list(per_frame["frame"])
            counts["count"] += list(per_frame["count"])
            mean_size = float(np.sqrt(size[0] * size[1])) if size else np.nan
            counts["pixel_size_um"] += [mean_size] * n_frames
            if progress:
                progress(Progress("files", index + 1, len(inputs), path.name))
        table = {key: np.asarray(value) for key, value in counts.items()}
        record = _batch_record(records, "segloop count")
        write_csv(table, csv_path, provenance=record)
        if objects_csv is not None:
            _write_objects(objects, parts, scratch, objects_csv, record)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return table


def _write_objects(objects, parts, scratch: Path, objects_csv: Path, record: dict) -> None:
    """The per-object CSV: in one go, or streamed from per-file parts when there are any."""
    from .core.chunked_counting import concat_csvs
    from .core.counting import column_units
    from .core.provenance import write_side_file

    if not parts:
        write_csv(merge_tables(objects), objects_csv, provenance=record)
        return
    for number, table in enumerate(objects):
        part = scratch / f"whole_{number}.csv"
        write_csv(table, part)
        parts.append(part)
    concat_csvs(parts, objects_csv)
    with open(objects_csv, encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    write_side_file(objects_csv, record, column_units(header))


def _count_chunked(model, path, options, pixel_size, chunking, scratch, part, progress):
    """Segment one large input into a scratch Zarr, then count (and measure) it by windows."""
    import zarr

    from .batch_chunked import FrameView, predict_chunked
    from .bigimage import open_lazy
    from .core.chunked import ChunkPlan
    from .core.chunked_counting import CsvStream, measure_chunked

    written, summaries = predict_chunked(
        model, path, scratch, options, "scratch", chunking.chunk, chunking.halo, pixel_size,
        None, progress, chunking.level,
    )  # fmt: skip
    lazy = open_lazy(path, summaries[0]["level"])  # --level auto: the level predict chose
    size = pixel_size or lazy.pixel_size
    frames = {"frame": np.arange(lazy.n_frames), "count": np.zeros(lazy.n_frames, np.int64)}
    if part is None:
        frames["count"] = np.asarray([s["objects"] for s in summaries], np.int64)
    else:
        array = zarr.open_group(str(written[0]), mode="r")["0"]
        stream = CsvStream(part, {"image": Path(path).name})
        try:
            for frame in range(lazy.n_frames):
                plan = ChunkPlan(lazy.height, lazy.width, chunking.chunk, summaries[frame]["halo"])
                view = FrameView(array, frame if lazy.is_stack else None)
                rows_before = stream.rows
                for table in measure_chunked(
                    plan, view, lambda box, f=frame: lazy.window(box, f), size,
                    margin=max(summaries[frame]["halo"], 64), frame=frame,
                ):  # fmt: skip
                    stream.write(table)
                frames["count"][frame] = stream.rows - rows_before
            stream.close()
        except BaseException:
            stream.abort()
            raise
    record = dict(zarr.open_group(str(written[0]), mode="r").attrs["segloop"])  # with frames
    for folder in written:
        shutil.rmtree(folder, ignore_errors=True)
    return frames, size, record


def _intensity_of(image: np.ndarray, instances: np.ndarray) -> np.ndarray | None:
    """The image as ``instances.shape`` (+ channels last), for intensity measurements."""
    from .core.imageio import to_grayscale

    image = np.asarray(image)
    if image.shape == instances.shape or image.shape[:-1] == instances.shape:
        return image
    grey = to_grayscale(image)
    return grey if grey.shape == instances.shape else None


def merge_tables(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows of several tables; a column one table lacks is NaN (or "") there."""
    names = list(dict.fromkeys(name for table in tables for name in table))
    merged = {}
    for name in names:
        parts = []
        for table in tables:
            n = len(next(iter(table.values())))
            if name in table:
                parts.append(np.asarray(table[name]))
            else:
                parts.append(np.full(n, np.nan))
        kinds = {part.dtype.kind for part in parts}
        merged[name] = (
            np.concatenate([p.astype(object) for p in parts])
            if "U" in kinds and len(kinds) > 1
            else np.concatenate(parts)
        )
    return merged
