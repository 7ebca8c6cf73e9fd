"""A correction project on disk: corrected frames and the model versions trained on them.

Layout (everything written atomically, nothing ever overwritten in place)::

    <project>/project.json                 {"base_model": ..., "created": ...}
    <project>/corrections/<id>.tif         the image (2-D frame, as given)
    <project>/corrections/<id>_labels.tif  corrected labels (0 = background, or unlabelled
                                           when the correction is "sparse")
    <project>/corrections/<id>.json        source, frame, model version of the draft, mode
    <project>/models/v<N>.safetensors      fine-tuned versions; metadata has parent, data,
                                           duration and before/after metrics

Every fine-tune trains on *all* corrections so far plus a replay sample of the base
model's own training images (when the model ships some), so the model does not forget
what it knew; the version list shows the score on the base model's validation images
before and after, which is where forgetting would show.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import LabelledImage, evaluate_iter
from .imageio import atomic_output, read_image, write_tiff
from .modelio import ModelBundle, load_model, save_model
from .progress import Progress, StopCheck
from .segment import SegmentOptions
from .training import (
    NATIVE_RANGE,
    TrainConfig,
    TrainResult,
    median_diameter,
    split_validation,
    train_iter,
)
from .versions import VersionInfo, list_versions

REPLAY_ROOT = Path(__file__).resolve().parent.parent / "data" / "replay"


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
    ) -> str:
        """Store a corrected 2-D frame; returns its id (a later save of the same id
        replaces it, so re-correcting a frame never duplicates it)."""
        if labels.ndim != 2 or image.shape[:2] != labels.shape:
            raise ValueError(
                f"correction '{name}': image {image.shape} and labels {labels.shape} must be "
                "one 2-D frame of the same size"
            )
        if not labels.any():
            raise ValueError(f"correction '{name}': the labels are empty")
        ident = re.sub(r"[^A-Za-z0-9_.-]+", "_", name if frame is None else f"{name}_t{frame}")
        folder = self.root / "corrections"
        write_tiff(folder / f"{ident}.tif", np.asarray(image))
        write_tiff(folder / f"{ident}_labels.tif", np.asarray(labels).astype(np.int32))
        _write_json(
            folder / f"{ident}.json",
            {
                "source": source,
                "frame": frame,
                "model_version": model_version,
                "sparse": sparse,
                "n_objects": int(len(np.unique(labels)) - 1),
                "saved": _now(),
            },
        )
        return ident

    def correction_ids(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "corrections").glob("*.json"))

    def load_corrections(self, ids: Sequence[str] | None = None) -> list[LabelledImage]:
        """Corrections as training data; sparse ones mark label 0 as ignored."""
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

    def next_version_path(self) -> Path:
        versions = self.versions()
        return (
            self.root / "models" / f"v{(versions[-1].version if versions else 0) + 1}.safetensors"
        )


def replay_data(bundle: ModelBundle, part: str) -> list[LabelledImage]:
    """Images the base model ships for replay (``part="train"``) or validation ("val")."""
    folder = REPLAY_ROOT / str(bundle.metadata.get("replay", bundle.name)) / part
    if not folder.is_dir():
        return []
    data = []
    for mask in sorted(folder.glob("*_masks.png")):
        image = mask.with_name(mask.name.replace("_masks", ""))
        data.append(LabelledImage(read_image(image), read_image(mask).astype(np.int32), image.name))
    return data


def _score(bundle, data, should_stop):
    if not data:
        return None
    report = yield from evaluate_iter(
        bundle, data, SegmentOptions(), should_stop, true_diameter=True
    )
    return {"f1": report.matches.f1, "seg": report.seg, "n_images": len(data)}


def fine_tune_scale(
    bundle: ModelBundle, target_diameter: float | str | None, measured: float | None
) -> float | str | None:
    """The training ``target_diameter`` for fine-tuning ``bundle`` on corrections whose
    objects are ``measured`` pixels across.

    With ``"auto"``, a model trained at native scale keeps native scale while the
    corrected objects are within :data:`NATIVE_RANGE`; outside it (e.g. 110 px DIC cells
    for a 18 px nuclei model) the corrections are rescaled to the model's diameter, so
    the network sees objects of the size it knows. Rescaled models always rescale.
    """
    if target_diameter != "auto" or bundle.target != "instances":
        return target_diameter
    if bundle.metadata.get("rescaled") or not bundle.diameter or measured is None:
        return target_diameter
    inside = NATIVE_RANGE[0] <= measured <= NATIVE_RANGE[1]
    return target_diameter if inside else bundle.diameter


def fine_tune_iter(
    project: Project,
    base: str | Path,
    config: TrainConfig,
    val_ids: Sequence[str] | None = None,
    replay_fraction: float = 1.0,
    should_stop: StopCheck = None,
) -> Generator[Progress, None, tuple[VersionInfo, TrainResult]]:
    """Fine-tune ``base`` on all corrections (+ replay) and save the next version.

    Parameters
    ----------
    val_ids : sequence of str, optional
        Corrections held out for validation; default: one in five, at least one when
        there are two or more corrections (none with a single correction).
    replay_fraction : float
        Replay images added per training correction (rounded up; 0 disables replay).
        1.0 (one replay image per correction) was picked on E. coli validation frames
        (``benchmarks/finetune_loop.py --validation``): 2 per correction held the new
        modality back (SEG 0.64 vs 0.77 after 180 s).
    """
    corrections = project.load_corrections()
    if not corrections:
        raise ValueError("no corrections saved yet: correct a frame and save it first")
    if val_ids is None:
        train_set, val_set = (
            split_validation(corrections, 0.2, config.seed)
            if len(corrections) > 1
            else (corrections, [])
        )
    else:
        val_set = [c for c in corrections if c.name in set(val_ids)]
        train_set = [c for c in corrections if c.name not in set(val_ids)]
    if not train_set:
        raise ValueError("every correction is held out for validation; keep one for training")
    bundle = load_model(base)
    base_val = replay_data(bundle, "val")
    replay = replay_data(bundle, "train")
    if replay and replay_fraction > 0:
        rng = np.random.default_rng(config.seed)
        n_replay = min(len(replay), int(np.ceil(len(train_set) * replay_fraction)))
        replay = [replay[i] for i in rng.choice(len(replay), n_replay, replace=False)]
    else:
        replay = []
    yield Progress("evaluate", 0, 1, "scoring the starting model")
    before = {
        "corrections": (yield from _score(bundle, val_set, should_stop)),
        "base_validation": (yield from _score(bundle, base_val, should_stop)),
    }
    out_path = project.next_version_path()
    parent_version = bundle.metadata.get("version", 0)
    bundle.metadata.update(
        parent=str(bundle.path),
        version=int(out_path.stem[1:]),
        name=f"{project.root.name}-{out_path.stem}",
    )
    config.tune_postprocess = bool(val_set) and config.tune_postprocess
    measured = median_diameter(train_set) if bundle.target == "instances" else None
    config.target_diameter = fine_tune_scale(bundle, config.target_diameter, measured)
    result = yield from train_iter(bundle, train_set + replay, config, val_set, None, should_stop)
    if measured is not None:
        # The user's objects, not the replay sample's, are what the version is for: they
        # set how new images are rescaled (and the diameter of a native-scale version).
        bundle.metadata["native_diameter"] = measured
        if not bundle.metadata.get("rescaled"):
            bundle.metadata["diameter"] = measured
    after = {
        "corrections": (yield from _score(bundle, val_set, should_stop)),
        "base_validation": (yield from _score(bundle, base_val, should_stop)),
    }
    bundle.metadata["finetune"] = {
        "base": str(base),
        "base_version": parent_version,
        "trained_on": [c.name for c in train_set],
        "validated_on": [c.name for c in val_set],
        "replay_images": len(replay),
        "n_corrected_objects": int(sum(len(np.unique(c.labels)) - 1 for c in train_set)),
        "seconds": round(result.seconds, 1),
        "steps": result.steps,
        "stopped": result.stopped,
        "metrics": {"before": before, "after": after},
    }
    save_model(bundle, out_path)
    return VersionInfo(int(out_path.stem[1:]), out_path, bundle.metadata), result
