"""A correction project on disk: corrected frames and the model versions trained on them.

Layout (everything written atomically, nothing ever overwritten in place)::

    <project>/project.json                 {"base_model": ..., "created": ...}
    <project>/corrections/<id>.tif         the image (2-D frame, as given)
    <project>/corrections/<id>_labels.tif  corrected labels (0 = background, or unlabelled
                                           when the correction is "sparse")
    <project>/corrections/<id>.json        source, frame, model version of the draft, mode,
                                           origin ("user": edited labels, "model": a
                                           model's output accepted as it was)
    <project>/corrections/history/<id>/<n>{.tif,_labels.tif,.json}
                                           every earlier file of a correction, oldest first
    <project>/corrections/.pending/<id>/   a new set of the three files while it is stored
    <project>/models/v<N>.safetensors      trained versions (see segloop.core.finetune)

A correction is the user's work: saving the same id again keeps the old files in
``history/``, and a model's unedited output (``origin="model"``) never replaces a saved
correction. The three files of a correction are replaced as one set: they are first
written to ``.pending/<id>/``, a ``COMMIT`` marker is written, and only then are they moved
into place. A run that dies before the marker leaves the old set as it was; one that dies
after it is finished when the project is next opened. Training runs live in
:mod:`segloop.core.finetune`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .imageio import atomic_output, read_image, to_grayscale, write_tiff
from .locks import project_lock
from .versions import VersionInfo, list_versions

if TYPE_CHECKING:
    from .evaluation import LabelledImage
    from .modelio import ModelBundle

#: ``origin`` of a correction: labels the user edited, or a model's output kept as is.
ORIGINS = ("user", "model")
#: The files of one correction, in the order they are moved into place (the JSON last:
#: it is what lists the correction).
CORRECTION_SUFFIXES = (".tif", "_labels.tif", ".json")
PENDING = ".pending"
COMMIT_MARKER = "COMMIT"
#: An uncommitted set this old (seconds) is left over from a run that died.
PENDING_GRACE_S = 600.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str))


class Project:
    """Corrections and model versions stored in one folder (see the module docstring)."""

    def __init__(self, root: str | Path, base_model: str | None = None) -> None:
        self.root = Path(root)
        (self.root / "corrections").mkdir(parents=True, exist_ok=True)
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        info_path = self.root / "project.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        if base_model and info.get("base_model") != base_model:
            info = {**info, "base_model": base_model, "created": info.get("created", _now())}
            _write_json(info_path, info)
        self.info = info
        with project_lock(self.root):
            self._finish_pending()

    @property
    def base_model(self) -> str | None:
        return self.info.get("base_model")

    # ------------------------------------------------------------------ corrections
    def add_correction(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        name: str,
        source: str = "",
        frame: int | None = None,
        model_version: str | None = None,
        sparse: bool = False,
        origin: str = "user",
    ) -> str | None:
        """Store a corrected 2-D frame; returns its id, or None when it was not stored.

        Dense labels with no object say "no objects in this frame" and are stored; sparse
        labels with none say nothing and are refused.

        Saving an id again with the same image replaces it (re-correcting a frame never
        duplicates it) and keeps the earlier files in ``corrections/history/<id>/``;
        saving the same content again changes nothing. Another image under a name
        already taken is stored as a new correction (``<id>-2``, ``<id>-3``...), never
        in its place. A model's unedited output (``origin="model"``) never replaces a
        correction the user saved (it returns None and the saved one stays); it may
        replace an earlier model output that was saved as it was. Two threads or
        processes store corrections of one project one after the other
        (:func:`~segloop.core.locks.project_lock`).
        """
        if origin not in ORIGINS:
            raise ValueError(f"correction '{name}': origin must be one of {ORIGINS}")
        if labels.ndim != 2 or image.shape[:2] != labels.shape:
            raise ValueError(
                f"correction '{name}': image {image.shape} and labels {labels.shape} must be "
                "one 2-D frame of the same size"
            )
        if sparse and not labels.any():
            raise ValueError(f"correction '{name}': the sparse labels are empty (nothing labelled)")
        if labels.dtype.kind not in "iub":
            raise ValueError(f"correction '{name}': labels must be integers, not {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
            raise ValueError(  # stored as int32: larger ids would wrap and merge objects
                f"correction '{name}': label ids must be 0..{np.iinfo(np.int32).max}, not "
                f"{labels.min()}..{labels.max()}; number the objects from 1 first"
            )
        with project_lock(self.root):
            self._finish_pending()
            return self._store(image, labels, name, source, frame, model_version, sparse, origin)

    def _store(self, image, labels, name, source, frame, model_version, sparse, origin):
        base = ident = correction_id(name, frame)
        folder = self.root / "corrections"
        number, same = 1, None
        while True:  # the first id whose files are its own: free, or this image's
            if not self._shares_files(ident):
                if not (folder / f"{ident}.json").exists():
                    break
                same = self._same_image(ident, image)
                if same is not False:
                    break
            number += 1
            ident = f"{base}-{number}"
        if (folder / f"{ident}.json").exists():
            saved = self.correction_info(ident)
            if origin == "model" and saved.get("origin", "user") == "user":
                return None  # the user's correction stays
            if same and saved.get("sparse") == sparse and self._same_labels(ident, labels):
                return ident  # same image (read above) and same labels: nothing new
            self._archive(ident)
        pending = folder / PENDING / ident
        shutil.rmtree(pending, ignore_errors=True)  # an unfinished set (never committed)
        write_tiff(pending / f"{ident}.tif", np.asarray(image))
        write_tiff(pending / f"{ident}_labels.tif", np.asarray(labels).astype(np.int32))
        record = {
            "source": source,
            "frame": frame,
            "model_version": model_version,
            "sparse": sparse,
            "origin": origin,
            "n_objects": int(len(np.unique(labels)) - 1),
            "saved": _now(),
        }
        _write_json(pending / f"{ident}.json", record)
        staged = [pending / f"{ident}{suffix}" for suffix in CORRECTION_SUFFIXES]
        if not all(path.exists() for path in staged):
            raise OSError(f"correction '{ident}': its new files vanished before they were stored")
        for path in [*staged, pending]:  # on disk before the marker says they are complete
            _fsync(path)
        _write_json(pending / COMMIT_MARKER, {"id": ident})
        _fsync(pending)
        self._move_into_place(pending)
        if not all((folder / path.name).exists() for path in staged):
            raise OSError(f"correction '{ident}': its files were not stored")
        return ident

    def _shares_files(self, ident: str) -> bool:
        """Whether correction ``ident``'s files would be another correction's: ``X``
        keeps its labels in ``X_labels.tif``, which is where a correction ``X_labels``
        keeps its image (either may be saved first; the suffix is compared without case,
        as a Windows or macOS disk compares names)."""
        folder = self.root / "corrections"
        if (folder / f"{ident}_labels.json").exists():
            return True
        suffix = "_labels"
        return (
            ident.lower().endswith(suffix) and (folder / f"{ident[: -len(suffix)]}.json").exists()
        )

    def _move_into_place(self, pending: Path) -> None:
        """Move a committed set from ``pending`` into ``corrections/`` and remove it."""
        folder = self.root / "corrections"
        for suffix in CORRECTION_SUFFIXES:
            staged = pending / f"{pending.name}{suffix}"
            try:  # a set half moved by an earlier run has fewer files
                os.replace(staged, folder / staged.name)
            except FileNotFoundError:
                pass
        _fsync(folder)
        shutil.rmtree(pending, ignore_errors=True)

    def _finish_pending(self) -> None:
        """Finish the sets an earlier run committed but did not move, and drop the
        uncommitted ones (those younger than :data:`PENDING_GRACE_S` may belong to a save
        still running in another process, and stay)."""
        root = self.root / "corrections" / PENDING
        if not root.is_dir():
            return
        for pending in sorted(p for p in root.iterdir() if p.is_dir()):
            if (pending / COMMIT_MARKER).exists():
                self._move_into_place(pending)
            elif time.time() - _newest_mtime(pending) > PENDING_GRACE_S:
                shutil.rmtree(pending, ignore_errors=True)

    def _same_image(self, ident: str, image: np.ndarray) -> bool | None:
        """Whether the saved correction ``ident`` was drawn on this very image; None when
        its image cannot be read, or is the grey (luma) copy of this colour image that an
        older segloop stored (it is then replaced, its files kept in the history)."""
        try:
            saved = read_image(self.root / "corrections" / f"{ident}.tif")
        except (OSError, ValueError):
            return None
        image = np.asarray(image)
        colour = image.ndim == 3 and image.shape[-1] in (3, 4)
        older_grey = saved.ndim == 2 and saved.dtype.kind == "f"
        if colour and older_grey and image.shape[:2] == saved.shape:
            grey = to_grayscale(image)  # what `segloop project add` stored before (float32)
            scale = max(1.0, float(np.abs(grey).max(initial=0.0)))
            same = np.allclose(saved, grey, rtol=1e-5, atol=1e-6 * scale)
            return None if same else False
        if saved.shape != image.shape:
            return False
        return np.array_equal(saved, image.astype(saved.dtype, copy=False))

    def _same_labels(self, ident: str, labels: np.ndarray) -> bool:
        """The saved correction ``ident`` holds exactly these labels."""
        try:
            saved = read_image(self.root / "corrections" / f"{ident}_labels.tif")
        except (OSError, ValueError):
            return False
        return np.array_equal(saved, labels)

    def _archive(self, ident: str) -> None:
        """Copy the current files of correction ``ident`` into its history folder."""
        folder = self.root / "corrections"
        history = folder / "history" / ident
        history.mkdir(parents=True, exist_ok=True)
        number = 1 + max(
            (int(p.stem) for p in history.glob("*.json") if p.stem.isdigit()), default=0
        )
        for suffix in CORRECTION_SUFFIXES:  # the JSON last: it marks a full entry
            source = folder / f"{ident}{suffix}"
            if source.exists():
                with atomic_output(history / f"{number}{suffix}") as tmp:
                    shutil.copyfile(source, tmp)

    def history(self, ident: str) -> list[Path]:
        """Earlier label files of correction ``ident``, oldest first."""
        folder = self.root / "corrections" / "history" / ident
        numbers = sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())
        return [folder / f"{n}_labels.tif" for n in numbers]

    def correction_info(self, ident: str) -> dict[str, Any]:
        """The JSON record of correction ``ident``."""
        return json.loads((self.root / "corrections" / f"{ident}.json").read_text())

    def correction_ids(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "corrections").glob("*.json"))

    def load_corrections(self, ids: Sequence[str] | None = None) -> list[LabelledImage]:
        """Corrections as training data; sparse ones mark label 0 as ignored."""
        from .evaluation import LabelledImage

        folder = self.root / "corrections"
        data = []
        for ident in ids if ids is not None else self.correction_ids():
            meta = json.loads((folder / f"{ident}.json").read_text())
            labels = read_image(folder / f"{ident}_labels.tif").astype(np.int32)
            ignore = labels == 0 if meta.get("sparse") else None
            data.append(LabelledImage(read_image(folder / f"{ident}.tif"), labels, ident, ignore))
        return data

    # ------------------------------------------------------------------ versions
    def versions(self) -> list[VersionInfo]:
        """Saved versions, oldest first."""
        return list_versions(self.root / "models")

    def save_version(self, bundle: ModelBundle) -> VersionInfo:
        """Save ``bundle`` as the next version, numbered and written under the project's
        lock: two runs finishing together (threads or processes) get two numbers, and
        neither replaces the other's file. ``metadata`` gets ``version`` and ``name``."""
        from .modelio import save_model

        with project_lock(self.root):
            path = self.next_version_path()
            number = int(path.stem[1:])
            bundle.metadata.update(version=number, name=f"{self.root.name}-v{number}")
            save_model(bundle, path)
        return VersionInfo(number, path, bundle.metadata)

    def next_version_path(self) -> Path:
        """Path of the next version: one number above every ``v<N>.safetensors`` file in
        ``models/``, readable or not (a file this version cannot read is never replaced)."""
        from .versions import VERSION_NAME

        numbers = [
            int(match.group(1))
            for path in (self.root / "models").glob("v*.safetensors")
            if (match := VERSION_NAME.fullmatch(path.name))
        ]
        return self.root / "models" / f"v{max(numbers, default=0) + 1}.safetensors"


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. a folder on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _newest_mtime(folder: Path) -> float:
    """Latest modification time of ``folder`` and the files in it (0 if it is gone)."""
    try:
        return max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.iterdir()])
    except OSError:
        return 0.0


def correction_id(name: str, frame: int | None = None) -> str:
    """File-safe id of a correction: the image name (``_t<frame>`` for a stack frame).

    Leading dots are dropped (``..`` or ``.`` would name a folder, not a file) and an
    empty name becomes ``image``.
    """
    ident = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).lstrip(".") or "image"
    return ident if frame is None else f"{ident}_t{frame}"


def parse_frames(text: str, n_frames: int, current: int | None = None) -> list[int]:
    """Frame indices from ``"current"``, ``"all"`` or a list like ``"3,5,9"`` / ``"2-6"``.

    Raises
    ------
    ValueError
        For text that is none of these, or a frame outside ``0..n_frames-1``.
    """
    text = text.strip().lower()
    if text in ("", "current") and current is not None:
        return [current]
    if text in ("", "all"):
        return list(range(n_frames))
    frames: list[int] = []
    for part in filter(None, re.split(r"[,;\s]+", text)):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(
                f"frames {text!r}: write 'current', 'all' or frame numbers like 3,5,9 or 2-6"
            )
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first:
            raise ValueError(f"frames {text!r}: write a range low to high ({last}-{first})")
        frames += range(first, last + 1)
    if not frames:
        raise ValueError(f"frames {text!r}: no frame given")
    bad = [f for f in frames if not 0 <= f < n_frames]
    if bad:
        raise ValueError(f"frame {bad[0]} does not exist: the stack has frames 0..{n_frames - 1}")
    return sorted(set(frames))
