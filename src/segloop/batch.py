"""Batch prediction over many files, locally or on dask.distributed (counting: batch_count).

One task = one input file: the worker loads the model itself (by name or path), so only
file names travel over the network. ``dask="local:N"`` starts a LocalCluster with N
single-threaded workers; any other value is a scheduler address.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .core.imageio import read_image, validate_image, write_tiff
from .core.modelio import ModelBundle, load_model
from .core.progress import Progress, run_to_end
from .core.provenance import provenance, tiff_metadata
from .core.segment import Segmentation, SegmentOptions, segment_iter
from .core.units import PixelSize, length_in_micrometres, read_pixel_size


def label_dtype(labels: np.ndarray) -> np.dtype:
    """uint16 when the ids fit, else uint32."""
    return np.dtype(np.uint16) if labels.max(initial=0) < 2**16 else np.dtype(np.uint32)


@dataclasses.dataclass
class FileResult:
    """One segmented file: its image, the segmentation, pixel size and provenance."""

    image: np.ndarray
    segmentation: Segmentation
    pixel_size: PixelSize | None
    provenance: dict


def file_options(
    options: SegmentOptions, pixel_size: PixelSize | None, path: Path | str
) -> SegmentOptions:
    """``options`` with a diameter given in length units (``"12um"``) turned into pixels.

    Raises
    ------
    ValueError
        If the diameter has a unit and the pixel size of ``path`` is unknown.
    """
    diameter = options.diameter
    if not isinstance(diameter, str) or diameter in ("auto", "native"):
        return options
    micrometres = length_in_micrometres(diameter)
    if micrometres is None:
        return dataclasses.replace(options, diameter=float(diameter.rstrip("px")))
    if pixel_size is None:
        raise ValueError(
            f"{path}: --diameter {diameter} needs the pixel size, and the file records none; "
            "give it with --pixel-size (micrometres per pixel)"
        )
    pixels = micrometres / float(np.sqrt(pixel_size[0] * pixel_size[1]))
    return dataclasses.replace(options, diameter=pixels)


def segment_file(
    bundle: ModelBundle,
    path: Path,
    options: SegmentOptions,
    progress=None,
    pixel_size: PixelSize | None = None,
) -> FileResult:
    """Read and segment one file.

    ``pixel_size`` (µm per pixel, y and x) overrides what the file records. Errors about
    the image (shape, NaN, size, memory) name ``path``.
    """
    image = read_image(path)
    validate_image(image, str(path))
    size = pixel_size or read_pixel_size(path)
    options = file_options(options, size, path)
    try:
        result = run_to_end(segment_iter(bundle, image, options), progress)
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: {exc}") from exc
    record = provenance(bundle, options, size, source=Path(path).name)
    record["diameter_used_px"] = list(result.diameters)
    return FileResult(image, result, size, record)


def write_segmentation(
    result: Segmentation,
    out_dir: Path,
    stem: str,
    probabilities: bool,
    record: dict | None = None,
    pixel_size: PixelSize | None = None,
):
    """Write ``<stem>_labels.tif`` / ``<stem>_classes.tif`` (and probabilities, plus the
    predicted distance map ``<stem>_distance.tif`` for models with a distance head).

    Every TIFF carries ``record`` (provenance) and the pixel size when known.
    """
    meta = tiff_metadata(record) if record else None

    def write(path: Path, array: np.ndarray) -> Path:
        write_tiff(path, array, metadata=meta, pixel_size=pixel_size)
        return path

    written = [
        write(
            out_dir / f"{stem}_labels.tif", result.instances.astype(label_dtype(result.instances))
        ),
        write(out_dir / f"{stem}_classes.tif", result.classes.astype(np.uint8)),
    ]
    if probabilities:
        written.append(
            write(out_dir / f"{stem}_probabilities.tif", result.probabilities.astype(np.float32))
        )
        if result.distance is not None:
            written.append(
                write(out_dir / f"{stem}_distance.tif", result.distance.astype(np.float32))
            )
    return written


def _write_file_result(done: FileResult, out_dir: Path, stem: str, probabilities: bool):
    return write_segmentation(
        done.segmentation, out_dir, stem, probabilities, done.provenance, done.pixel_size
    )


def _predict_one(
    model: str,
    path: str,
    out_dir: str,
    options: SegmentOptions,
    probs: bool,
    pixel_size: PixelSize | None = None,
):
    """Task run on a dask worker (loads the model there)."""
    bundle = load_model(model)
    done = segment_file(bundle, Path(path), options, pixel_size=pixel_size)
    return [str(p) for p in _write_file_result(done, Path(out_dir), Path(path).stem, probs)]


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
        client = Client(cluster)
        client._segloop_cluster = cluster  # closed with the client (see close_client)
        return client
    return Client(address)


@dataclasses.dataclass
class ChunkOptions:
    """How inputs larger than ``chunk`` (or Zarr ones) are segmented and written."""

    chunk: int = 2048
    halo: int | None = None
    out_format: str = "tiff"
    level: int = 0


def close_client(client) -> None:
    """Close a dask client, and the LocalCluster :func:`_client` started for it."""
    cluster = getattr(client, "_segloop_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def predict_files(
    model: str,
    inputs: Sequence[Path],
    out_dir: Path,
    options: SegmentOptions,
    probabilities: bool = False,
    dask: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    pixel_size: PixelSize | None = None,
    chunking: ChunkOptions | None = None,
) -> list[Path]:
    """Segment every input file and write its outputs into ``out_dir``.

    ``pixel_size`` (µm per pixel) overrides what the files record. Inputs whose frames are
    larger than ``chunking.chunk`` on a side, Zarr / OME-Zarr inputs and every input when
    ``chunking.out_format`` is ``"zarr"`` go window by window through
    :func:`segloop.batch_chunked.predict_chunked` (on the dask cluster's workers when
    ``dask`` is given); the others are read whole (one dask task per file).
    """
    from .batch_chunked import output_stem, predict_chunked, wants_chunked

    chunking = chunking or ChunkOptions()
    if dask:  # the workers may run elsewhere, in another working directory
        inputs = [Path(p).resolve() for p in inputs]
        out_dir = Path(out_dir).resolve()
        if Path(model).is_file():
            model = Path(model).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = [output_stem(p) for p in inputs]
    if len(set(stems)) != len(stems):
        raise ValueError("two inputs share a file name stem; their outputs would collide")
    check_outputs(inputs, out_dir, probabilities, chunking.out_format)
    check_level(inputs, chunking.level)
    chunked = [p for p in inputs if wants_chunked(p, chunking.chunk, chunking.out_format)]
    whole = [p for p in inputs if p not in chunked]
    if chunked and probabilities:
        names = ", ".join(p.name for p in chunked)
        raise ValueError(
            f"--probabilities is only written for images read whole, not for {names} "
            "(larger than --chunk or Zarr): raise --chunk or leave --probabilities out"
        )
    written: list[Path] = []
    client = _client(dask) if dask else None
    try:
        if whole:
            written += _predict_whole(
                model, whole, out_dir, options, probabilities, client, progress, pixel_size
            )
        for path in chunked:
            try:
                paths, _ = predict_chunked(
                    model,
                    path,
                    out_dir,
                    options,
                    chunking.out_format,
                    chunking.chunk,
                    chunking.halo,
                    pixel_size,
                    client,
                    progress,
                    chunking.level,
                )
            except ValueError as exc:  # name the file in a batch of many
                if str(path) in str(exc) or path.name in str(exc):
                    raise
                raise ValueError(f"{path}: {exc}") from None
            written += paths
    finally:
        if client is not None:
            close_client(client)
    return written


def check_level(inputs: Sequence[Path], level: int | str) -> None:
    """A resolution level above 0 exists only in OME-Zarr inputs (TIFFs are read at
    level 0): refuse it for any other input instead of ignoring it."""
    from .bigimage import is_zarr_path

    if level in (0, "auto"):
        return
    for path in inputs:
        if not is_zarr_path(path):
            raise ValueError(
                f"{path}: --level {level}: only OME-Zarr inputs have resolution levels; "
                "this image has level 0 only"
            )


#: Outputs of ``predict`` in ``--out``: always, with ``--probabilities``, as OME-Zarr.
TIFF_OUTPUTS = ("_labels.tif", "_classes.tif")
PROBABILITY_OUTPUTS = ("_probabilities.tif", "_distance.tif")
ZARR_OUTPUTS = ("_labels.zarr", "_classes.zarr")


def written_by_segloop(path: Path) -> bool:
    """``path`` is a TIFF that carries the provenance record of a segloop command, or a
    Zarr group with segloop's attributes. A labels TIFF the user saved from napari carries
    a record too, but it is the user's file (perhaps corrected): False."""
    from .core.provenance import SAVED_FROM_NAPARI, read_tiff_provenance

    try:
        if path.is_dir():
            for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
                if (path / name).is_file():
                    attrs = json.loads((path / name).read_text())
                    return "segloop" in (attrs.get(key, {}) if key else attrs)
            return False
        record = read_tiff_provenance(path)
        if not isinstance(record, dict):
            return False
        # the writer before the flag recorded only its command when the layer had no record
        return not (record.get(SAVED_FROM_NAPARI) or record.get("command") == "napari writer")
    except Exception:  # not a TIFF or Zarr group, unreadable: not one of ours
        return False


def check_outputs(
    inputs: Sequence[Path], out_dir: Path, probabilities: bool, out_format: str = "tiff"
) -> None:
    """Before any work: what ``predict`` will write into ``out_dir`` replaces neither an
    input of the run (``--out`` the input folder, run twice) nor a file or Zarr folder
    segloop did not write (a user's ``<stem>_labels.tif`` ground truth); an empty file
    may be replaced. (A labels group inside an OME-Zarr input is segloop's own.)

    Raises
    ------
    ValueError
        Naming the file.
    """
    from .batch_chunked import output_stem
    from .core.imageio import same_file

    if out_format == "zarr":
        suffixes = ZARR_OUTPUTS
    else:
        suffixes = TIFF_OUTPUTS + (PROBABILITY_OUTPUTS if probabilities else ())
    for source in inputs:
        for suffix in suffixes:
            target = Path(out_dir) / f"{output_stem(source)}{suffix}"
            if any(same_file(target, other) for other in inputs):
                raise ValueError(
                    f"{target} would be written over an input of this run (an earlier "
                    "output read back as an image?); write to another --out folder"
                )
            ours = written_by_segloop(target)
            foreign_file = target.is_file() and target.stat().st_size and not ours
            if foreign_file or (target.is_dir() and not ours):
                raise ValueError(
                    f"{target} exists and was not written by segloop (or was saved from "
                    "napari, perhaps corrected); refusing to replace it (move it, or write to "
                    "another --out folder)"
                )


def _predict_whole(model, inputs, out_dir, options, probabilities, client, progress, pixel_size):
    if client is not None:
        from distributed import as_completed

        futures = [
            client.submit(
                _predict_one,
                str(model),
                str(p),
                str(out_dir),
                options,
                probabilities,
                pixel_size,
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
    for index, (path, done) in enumerate(_overlapped(bundle, inputs, options, pixel_size)):
        written += _write_file_result(done, out_dir, path.stem, probabilities)
        if progress:
            progress(Progress("files", index + 1, len(inputs), path.name))
    return written


def in_flight() -> int:
    """Files or windows segmented at once in threads (``SEGLOOP_IN_FLIGHT``, default 2)."""

    value = os.environ.get("SEGLOOP_IN_FLIGHT", "2")
    return max(1, int(value)) if value.isdigit() else 2


def in_order(submit, items: Sequence, at_once: int):
    """``(item, submit(item).result())`` in the order of ``items``, ``at_once`` in flight.

    ``submit`` starts the work of one item and returns a future (a thread pool's or a dask
    client's); the next ones are started before the current result is waited for.
    """
    futures: dict[int, object] = {}
    for index, item in enumerate(items):
        for ahead in range(index, min(index + at_once, len(items))):
            if ahead not in futures:
                futures[ahead] = submit(items[ahead])
        yield item, futures.pop(index).result()


def _overlapped(bundle, inputs, options, pixel_size, at_once: int | None = None):
    """(path, FileResult) in input order, two files segmented at once in threads.

    While one file is in post-processing (mostly one core), the next one's network pass
    uses the other core; the results are the same as one file at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    at_once = at_once or in_flight()
    with ThreadPoolExecutor(max_workers=at_once) as pool:

        def submit(path):
            return pool.submit(segment_file, bundle, path, options, None, pixel_size)

        yield from in_order(submit, inputs, at_once)


def _batch_record(records: list[dict], command: str) -> dict:
    """One provenance record for a batch: the shared entries, and each file's own."""
    if not records:
        return provenance(command=command)
    record = {
        key: value
        for key, value in records[0].items()
        if key not in ("source", "pixel_size_um", "diameter_used_px")
    }
    record["command"] = command
    record["files"] = [
        {key: r.get(key) for key in ("source", "pixel_size_um", "diameter_used_px")}
        for r in records
    ]
    return record
