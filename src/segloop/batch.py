"""Batch prediction and counting over many files, locally or on dask.distributed.

One task = one input file: the worker loads the model itself (by name or path), so only
file names travel over the network. ``dask="local:N"`` starts a LocalCluster with N
single-threaded workers; any other value is a scheduler address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .core.counting import count_table, frame_counts, write_csv
from .core.imageio import read_image, validate_image, write_tiff
from .core.modelio import ModelBundle, load_model
from .core.progress import Progress, run_to_end
from .core.segment import Segmentation, SegmentOptions, segment_iter


def label_dtype(labels: np.ndarray) -> np.dtype:
    """uint16 when the ids fit, else uint32."""
    return np.dtype(np.uint16) if labels.max(initial=0) < 2**16 else np.dtype(np.uint32)


def segment_file(bundle: ModelBundle, path: Path, options: SegmentOptions, progress=None):
    """Read and segment one file; returns (raw image, Segmentation).

    Errors about the image (shape, NaN, size, memory) name ``path``.
    """
    image = read_image(path)
    validate_image(image, str(path))
    try:
        return image, run_to_end(segment_iter(bundle, image, options), progress)
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: {exc}") from exc


def write_segmentation(result: Segmentation, out_dir: Path, stem: str, probabilities: bool):
    """Write ``<stem>_labels.tif`` / ``<stem>_classes.tif`` (and probabilities, plus the
    predicted distance map ``<stem>_distance.tif`` for models with a distance head)."""
    labels_path = out_dir / f"{stem}_labels.tif"
    classes_path = out_dir / f"{stem}_classes.tif"
    write_tiff(labels_path, result.instances.astype(label_dtype(result.instances)))
    write_tiff(classes_path, result.classes.astype(np.uint8))
    written = [labels_path, classes_path]
    if probabilities:
        probs_path = out_dir / f"{stem}_probabilities.tif"
        write_tiff(probs_path, result.probabilities.astype(np.float32))
        written.append(probs_path)
        if result.distance is not None:
            distance_path = out_dir / f"{stem}_distance.tif"
            write_tiff(distance_path, result.distance.astype(np.float32))
            written.append(distance_path)
    return written


def _predict_one(model: str, path: str, out_dir: str, options: SegmentOptions, probs: bool):
    """Task run on a dask worker (loads the model there)."""
    bundle = load_model(model)
    _image, result = segment_file(bundle, Path(path), options)
    return [str(p) for p in write_segmentation(result, Path(out_dir), Path(path).stem, probs)]


def local_workers(address: str) -> int | None:
    """Worker count of a ``local:N`` address (None for a scheduler address).

    Raises
    ------
    ValueError
        If N is not a whole number of at least 1 (``local:0`` would wait forever).
    """
    if not address.startswith("local:"):
        return None
    count = address.split(":", 1)[1]
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"dask address local:N needs a worker count N >= 1, got {address!r}")
    return int(count)


def _client(address: str):
    workers = local_workers(address)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            'dask needs dask.distributed: pip install "napari-segloop[dask]"'
        ) from None

    if workers is not None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
        return Client(cluster)
    return Client(address)


def predict_files(
    model: str,
    inputs: Sequence[Path],
    out_dir: Path,
    options: SegmentOptions,
    probabilities: bool = False,
    dask: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> list[Path]:
    """Segment every input file and write its TIFFs into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = [p.stem for p in inputs]
    if len(set(stems)) != len(stems):
        raise ValueError("two inputs share a file name stem; their outputs would collide")
    if dask:
        from distributed import as_completed

        with _client(dask) as client:
            futures = [
                client.submit(
                    _predict_one,
                    str(model),
                    str(p),
                    str(out_dir),
                    options,
                    probabilities,
                    pure=False,
                )
                for p in inputs
            ]
            written = []
            for done, future in enumerate(as_completed(futures), start=1):
                written += [Path(p) for p in future.result()]
                if progress:
                    progress(Progress("files", done, len(futures)))
            return written
    bundle = load_model(model)
    written = []
    for index, path in enumerate(inputs):
        _image, result = segment_file(bundle, path, options, progress)
        written += write_segmentation(result, out_dir, path.stem, probabilities)
        if progress:
            progress(Progress("files", index + 1, len(inputs), path.name))
    return written


def count_files(
    model: str,
    inputs: Sequence[Path],
    csv_path: Path,
    options: SegmentOptions,
    objects_csv: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, np.ndarray]:
    """Count objects per image (and per frame of stacks) into a CSV."""
    from .core.imageio import to_grayscale

    bundle = load_model(model)
    counts: dict[str, list] = {"image": [], "frame": [], "count": []}
    objects: list[dict[str, np.ndarray]] = []
    for index, path in enumerate(inputs):
        image, result = segment_file(bundle, path, options, progress)
        per_frame = frame_counts(result.instances)
        counts["image"] += [path.name] * len(per_frame["frame"])
        counts["frame"] += list(per_frame["frame"])
        counts["count"] += list(per_frame["count"])
        if objects_csv is not None:
            table = count_table(result.instances, to_grayscale(image))
            table = {"image": np.array([path.name] * len(table["label"])), **table}
            objects.append(table)
        if progress:
            progress(Progress("files", index + 1, len(inputs), path.name))
    table = {key: np.asarray(value) for key, value in counts.items()}
    write_csv(table, csv_path)
    if objects_csv is not None:
        merged = {key: np.concatenate([t[key] for t in objects]) for key in objects[0]}
        write_csv(merged, objects_csv)
    return table
