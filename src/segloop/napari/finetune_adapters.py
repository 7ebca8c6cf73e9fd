"""Layer <-> core glue of the Fine-tune widget: corrections and model versions.

The widget reaches :mod:`segloop.core` only through this module, :mod:`.train_adapters`
(training runs) and :mod:`.adapters`. Core modules that import torch (``project``,
``modelio``) are imported inside functions; listing versions reads the model file headers
with ``safetensors`` alone, so opening the widget stays torch-free.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segloop.core.progress import Progress
from segloop.core.versions import VersionInfo as Version
from segloop.core.versions import headers_read as _headers_read
from segloop.core.versions import list_versions as _list_versions

from .adapters import UserError, check_label_values, image_data, labels_data
from .edits import FROM_USER_KEY, WHOLE, WRITTEN_KEY, data_has_edits, digest

if TYPE_CHECKING:
    from napari.layers import Image, Labels

PROJECTS_HOME = Path("~/segloop-projects")
#: Scores of the version table: metadata key -> name shown.
SCORES = (("f1", "F1"), ("seg", "SEG"))


# --------------------------------------------------------------------------- corrections


@dataclass
class Correction:
    """One 2-D frame to store in the project: copies of the image and of its labels."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    frame: int | None = None
    model_version: str | None = None
    #: "user" (edited labels) or "model" (a model's output exactly as Segment wrote it);
    #: None: decided in the worker from ``model_digest`` (:meth:`resolved_origin`)
    origin: str | None = "user"
    #: digest of what Segment wrote into this frame (None: Segment never wrote it)
    model_digest: str | None = None

    def resolved_origin(self) -> str:
        """``origin``, or (when None) "model" if the labels are exactly what Segment
        wrote, else "user" (a digest of the frame: run it in the worker thread)."""
        if self.origin is not None:
            return self.origin
        if self.model_digest is not None and digest(self.labels) == self.model_digest:
            return "model"
        return "user"


def default_project_folder(image_name: str | None) -> Path:
    """``~/segloop-projects/<image name>`` (``untitled`` without an image)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", image_name or "").strip("_.") or "untitled"
    return (PROJECTS_HOME / name).expanduser()


def parse_frames(text: str, n_frames: int, current: int) -> list[int]:
    """Frame indices from ``"current"``, ``"all"`` or a list like ``"3,5,9"`` / ``"2-6"``.

    Raises
    ------
    UserError
        For text that is none of these, or a frame outside ``0..n_frames-1``.
    """
    from segloop.core.project import parse_frames as core_parse_frames

    try:
        return core_parse_frames(text, n_frames, current)
    except ValueError as exc:
        message = str(exc)
        raise UserError(message[0].upper() + message[1:] + ".") from None


def check_pair_shapes(image: Image, labels: Labels) -> tuple[int, ...]:
    """Spatial shape shared by an image and a labels layer ((H, W) or (T, H, W)).

    Raises
    ------
    UserError
        If the shapes differ (or a layer is not usable).
    """
    if image is None or labels is None:
        raise UserError("Pick an Image layer and a Labels layer for the pair.")
    full = tuple(np.shape(image.data))
    shape = full[:-1] if image.rgb else full
    label_shape = tuple(np.shape(labels.data))
    if shape != label_shape:
        raise UserError(
            f"Pair '{image.name}' + '{labels.name}': the image is {_shape_text(shape)} but the "
            f"labels are {_shape_text(label_shape)}; pick labels drawn on this image."
        )
    if len(shape) not in (2, 3):
        raise UserError(f"Pair '{image.name}': expected a 2-D image or a 2-D + t stack.")
    return shape


def pair_corrections(
    image: Image,
    labels: Labels,
    frames_text: str,
    current: int,
    model_version: str | None,
    sparse: bool = False,
) -> tuple[list[Correction], list[int]]:
    """Copies of the chosen frames of an (image, labels) pair whose labels are not empty.

    An empty frame is kept when the user emptied it (Segment wrote objects there and
    every one was erased): with dense labels that says "no objects here", which the next
    version should learn. Other empty frames (never labelled, or sparse) are skipped.

    Parameters
    ----------
    image, labels : napari layers
        The pair; 2-D (H, W[, C]) + (H, W), or a stack (T, H, W[, C]) + (T, H, W).
    frames_text : str
        Frames of a stack (see :func:`parse_frames`); ignored for 2-D pairs.
    current : int
        The frame on screen (for ``"current"``).
    model_version : str, optional
        Model that made the draft labels (recorded with the correction).
    sparse : bool
        Label 0 means "not labelled" (an empty frame then says nothing).

    Returns
    -------
    corrections, skipped
        Corrections to store, and the chosen frames skipped because their labels are empty
        (and not emptied by the user).

    Raises
    ------
    UserError
        Shapes that differ, unsupported layers, or nothing but empty labels.
    """
    shape = check_pair_shapes(image, labels)
    label_data = labels_data(labels, check_large=False)  # the chosen frames are checked below
    written = dict(labels.metadata.get(WRITTEN_KEY) or {})
    from_user = set(labels.metadata.get(FROM_USER_KEY) or ())  # Count of the user's labels
    stack = label_data.ndim == 3
    frames: list[int | None] = parse_frames(frames_text, shape[0], current) if stack else [None]
    out, skipped = [], []
    for frame in frames:
        frame_labels = label_data if frame is None else label_data[frame]
        check_label_values(frame_labels, labels.name)
        top = frame_labels.max(initial=0)
        if not top and (sparse or not data_has_edits(label_data, written, [frame])):
            skipped.append(-1 if frame is None else frame)
            continue
        if top > np.iinfo(np.int32).max:
            raise UserError(
                f"Labels '{labels.name}' hold ids above {np.iinfo(np.int32).max}: relabel "
                "them first (Count with 'connected components' numbers them from 1)."
            )
        pixels = image_data(image, frame)
        key = WHOLE if frame is None else int(frame)
        out.append(
            Correction(
                image.name,
                np.array(pixels, copy=True),
                np.array(frame_labels, dtype=np.int32, copy=True),
                frame,
                model_version,
                # else "model" or "user" is decided in the worker (a digest of the frame)
                "user" if key in from_user else None,
                written.get(key),
            )
        )
    if not out:
        where = "" if not stack else f" in frame(s) {', '.join(map(str, skipped))}"
        raise UserError(
            f"Labels '{labels.name}' are empty{where}: segment the image or paint the objects "
            "(or class strokes) first, then save."
        )
    return out, [f for f in skipped if f >= 0]


def _shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(s) for s in shape)


def open_project(folder: str | os.PathLike, base_model: str | None = None) -> Any:
    """The :class:`segloop.core.project.Project` in ``folder`` (created if needed).

    Raises
    ------
    UserError
        If the folder cannot be created or written.
    """
    from segloop.core.project import Project

    root = Path(folder).expanduser()
    if not str(folder).strip():
        raise UserError("No project folder: type one or pick it with '…'.")
    try:
        project = Project(root)
        if base_model and not project.base_model:
            project = Project(root, base_model)
        probe = root / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"Cannot use project folder {root}: {exc.strerror or exc}") from None
    return project


def save_corrections(
    project: Any, corrections: Sequence[Correction], sparse: bool
) -> tuple[list[str], list[str]]:
    """Store each correction in ``project`` (worker thread).

    Returns
    -------
    saved, kept
        Ids stored, and ids whose saved correction was kept because the layer only
        held a model's unedited output (a model never replaces the user's work).

    Raises
    ------
    UserError
        When the core refuses a pair or a file cannot be written.
    """
    saved, kept = [], []
    for item in corrections:
        try:
            ident = project.add_correction(
                item.image,
                item.labels,
                item.name,
                source=item.name,
                frame=item.frame,
                model_version=item.model_version,
                sparse=sparse,
                origin=item.resolved_origin(),
            )
        except (OSError, ValueError) as exc:
            raise UserError(f"Cannot save correction '{item.name}': {exc}") from None
        if ident is None:
            from segloop.core.project import correction_id

            kept.append(correction_id(item.name, item.frame))
        else:
            saved.append(ident)
    return saved, kept


def save_run(
    folder: str | os.PathLike,
    corrections: Sequence[Correction],
    sparse: bool,
    should_stop: Any = None,
) -> Generator[Progress, None, tuple[list[str], list[str]]]:
    """Store corrections in the project at ``folder`` (worker thread); see
    :func:`save_corrections` for the returned ``(saved, kept)`` ids."""
    yield Progress("save", 0, max(1, len(corrections)), "saving corrections")
    return save_corrections(open_project(folder), corrections, sparse)


def correction_ids(folder: str | os.PathLike) -> list[str]:
    """Ids of the corrections saved in a project folder (none if it does not exist)."""
    path = Path(folder).expanduser() / "corrections"
    return sorted(p.stem for p in path.glob("*.json")) if path.is_dir() else []


# --------------------------------------------------------------------------- versions


def list_versions(
    folder: str | os.PathLike, should_stop: Callable[[], bool] | None = None
) -> list[Version]:
    """Versions ``models/v<N>.safetensors`` of a project folder, oldest first
    (``should_stop`` is checked before each file)."""
    return _list_versions(Path(folder) / "models", should_stop)


def versions_read(folder: str | os.PathLike) -> bool:
    """Whether listing the project's versions reads no file (see :func:`read_project`)."""
    return _headers_read(Path(folder) / "models")


def read_project(
    folder: str | os.PathLike, should_stop: Callable[[], bool] | None = None
) -> Generator[Progress, None, list[Version]]:
    """The project's versions, read in a worker thread (their headers are cached, so
    listing them again in the GUI thread costs a ``stat`` each). A header takes about
    1 ms to read (far more on a network drive), so a project of a few hundred versions
    would otherwise stall the window when it is opened. The headers' training histories
    are many small objects: the garbage collector's full collections are held off while
    they are read (:func:`~._preload.no_full_collections`). ``should_stop`` is checked
    before each file."""
    from ._preload import no_full_collections  # ctypes: not at napari's start-up

    yield Progress("read", 0, 1, "reading the project folder")
    with no_full_collections():  # a full collection here would hold the GIL ~150 ms
        return list_versions(folder, should_stop)


def version_row(version: Version) -> dict[str, str]:
    """Table cells of one version: version, created, images, objects, time, scores.

    The two score cells hold one line per metric, ``"F1 0.62 → 0.76"`` (start model →
    this version), on the held-out corrections and on the start model's validation images.
    A record this code cannot read (another segloop's file) gives a row that says so
    rather than an error in the GUI thread.
    """
    try:
        return _version_cells(version)
    except (*UNREADABLE_RECORD, OSError):  # OSError: the file went away
        cells = dict.fromkeys(VERSION_COLUMNS, "")
        cells["version"] = f"v{version.version}"
        cells["held-out"] = "record unreadable"
        return cells


#: What reading a version record with unexpected types raises (another segloop's file)
UNREADABLE_RECORD = (KeyError, TypeError, ValueError, AttributeError, OverflowError)
#: The versions table's columns, in order (the keys of :func:`version_row`).
VERSION_COLUMNS = ("version", "created", "images", "objects", "time", "held-out", "base validation")


def _version_cells(version: Version) -> dict[str, str]:
    tune = version.finetune
    images = len(tune.get("trained_on", []))
    n_val = len(tune.get("validated_on", []))
    before, after = version.metrics.get("before") or {}, version.metrics.get("after") or {}
    if version.metadata.get("target") == "classes":  # instance scores mean nothing here
        accuracy = [
            v["accuracy"] for v in version.metadata.get("validation", []) if "accuracy" in v
        ]
        before, after = {}, {"corrections": {"accuracy": accuracy[-1]} if accuracy else None}
    created = datetime.fromtimestamp(version.path.stat().st_mtime)
    today = created.date() == datetime.now().date()
    return {
        "version": f"v{version.version}" + (" (stopped)" if version.stopped else ""),
        "created": created.strftime("%H:%M" if today else "%m-%d %H:%M"),
        "images": f"{images}" + (f" +{n_val} val" if n_val else ""),
        "objects": str(tune.get("n_corrected_objects", "")),
        "time": _duration(tune.get("seconds")),
        "held-out": _scores(before, after, "corrections")
        or ("not scored" if n_val else "none held out"),
        "base validation": _scores(before, after, "base_validation")
        or (
            "from scratch"
            if str(tune.get("base", "")).startswith("scratch")
            else "start model has none"
        ),
    }


def version_choices(version: Version) -> list[str]:
    """What the version chose for itself on the corrections, one line each (the version
    cell's tooltip): its colour → grey conversion, its object-size default and its
    post-processing. Empty for a version that checked none of them; a record this code
    cannot read (another segloop's file) is left out rather than raising."""
    meta = version.metadata
    lines = []
    for describe in (_colour_line, _size_line, _postprocess_line):
        try:
            line = describe(meta)
        except UNREADABLE_RECORD:
            line = None
        if line:
            lines.append(line)
    return lines


def _colour_line(meta: dict[str, Any]) -> str | None:
    colour = meta.get("colour_choice")
    if not colour:
        return None
    scores = ", ".join(f"{mode} {s['seg']:.2f}" for mode, s in colour["scores"].items())
    return (
        f"colour → grey: {colour['chosen']} (start model's SEG on the colour corrections: {scores})"
    )


def _size_line(meta: dict[str, Any]) -> str | None:
    size = meta.get("size_check")
    if not size:
        return None
    chosen = "measured on each image" if size["chosen"] == "auto" else "the corrections' scale"
    return (
        f"object size: {chosen} (F1 on {len(size['images'])} corrections: measured "
        f"{size['f1_auto']:.2f}, their scale {size['f1_native']:.2f})"
    )


def _postprocess_line(meta: dict[str, Any]) -> str | None:
    tuned = next((v for v in reversed(meta.get("validation", [])) if "tuned_f1" in v), None)
    if tuned is None:
        return None
    post = meta.get("postprocess", {})
    settings = ", ".join(
        f"{name} {post[key]:g}"
        for key, name in POSTPROCESS_NAMES
        if isinstance(post.get(key), (int, float))
    )
    how = "kept (re-tuning found no better)" if tuned.get("tuned_kept_current") else "re-tuned"
    return f"post-processing: {how}: {settings}"


#: Post-processing settings a version's tooltip lists: metadata key, name shown.
POSTPROCESS_NAMES = (
    ("fg_threshold", "foreground"),
    ("seed_threshold", "seeds"),
    ("min_size", "min size"),
    ("min_peak", "min peak"),
    ("split_large", "split large"),
)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _metric(part: dict[str, Any] | None, key: str) -> float | None:
    value = (part or {}).get(key)
    return None if value is None or not math.isfinite(value) else float(value)


def _scores(before: dict, after: dict, where: str) -> str:
    """Lines ``"F1 0.41 → 0.78"`` (``–`` where there was no score); "" if never scored."""
    keys = (("accuracy", "acc"),) if "accuracy" in (after.get(where) or {}) else SCORES
    lines = []
    for key, name in keys:
        old, new = _metric(before.get(where), key), _metric(after.get(where), key)
        if old is not None or new is not None:
            lines.append(f"{name} {_number(old)} → {_number(new)}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
