"""Training runs of the Fine-tune widget: its choices -> the core fine-tune service.

:func:`train_run` runs in the worker thread: it stores the snapshot of corrections the
widget took (so no file I/O happens in the GUI thread), then runs
:func:`segloop.core.finetune.finetune_iter`, the same run as ``segloop finetune``.
Torch-importing core modules are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloop.core.progress import Progress
from segloop.core.recipe import ARCHITECTURES, AUTO_START, DEFAULTS, SCRATCH, TARGETS
from segloop.core.versions import list_versions as _list_versions

from .adapters import UserError
from .finetune_adapters import Correction, Version, open_project, save_corrections

__all__ = ["ARCHITECTURES", "DEFAULTS", "TARGETS", "TrainOutput", "TrainRequest", "train_run"]


@dataclass
class TrainRequest:
    """Everything a training run needs, read from the widget in the GUI thread."""

    folder: Path
    start: str = "model"  # "model" (fine-tune) or "scratch"
    model: str = ""
    arch: str = "unet"
    target: str = "instances"
    minutes: float | None = DEFAULTS.minutes
    epochs: int | None = None
    learning_rate: float = DEFAULTS.learning_rate
    augment: bool = True
    weight_map: bool = True
    w0: float = 10.0
    sigma: float = 5.0
    val_ids: list[str] | None = None
    crop: int = DEFAULTS.crop
    batch_size: int = DEFAULTS.batch_size
    seed: int = 0
    class_names: list[str] | None = None  # new class model: names of ids 1..K
    class_colors: list[str] | None = None  # new class model: #rrggbb of ids 1.. (>= K)
    layer_class_names: dict[int, str] = field(default_factory=dict)  # from layer features
    overrides: dict[str, Any] = field(default_factory=dict)
    #: corrections to store before training (snapshots of the pairs) and their mode
    corrections: list[Correction] = field(default_factory=list)
    sparse: bool = False


@dataclass
class TrainOutput:
    """A finished (or stopped) run: the saved version (None: stopped before training)."""

    version: Version | None
    stopped: bool
    steps: int
    seconds: float
    saved: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def class_names_from_text(text: str) -> list[str] | None:
    """Class names typed as ``"cell, debris"`` (None: the defaults).

    Raises
    ------
    UserError
        For names the core refuses (duplicates, empty names...).
    """
    from segloop.core.classes import parse_class_names

    try:
        return parse_class_names(text)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def finetune_request(request: TrainRequest) -> Any:
    """The core :class:`~segloop.core.finetune.FinetuneRequest` of a widget request."""
    from segloop.core.finetune import build_request

    names = request.class_names
    if not names and request.target == "classes" and request.layer_class_names:
        top = max(request.layer_class_names)
        from_layer = [request.layer_class_names.get(k) for k in range(1, top + 1)]
        names = from_layer if all(from_layer) else None
    try:
        return build_request(
            SCRATCH if request.start == "scratch" else request.model,
            minutes=request.minutes,
            epochs=request.epochs,
            learning_rate=request.learning_rate,
            crop=request.crop,
            batch_size=request.batch_size,
            augment=request.augment,
            weight_map=request.weight_map,
            w0=request.w0,
            sigma=request.sigma,
            seed=request.seed,
            val_ids=request.val_ids,
            arch=request.arch,
            target=request.target,
            class_names=names,
            class_colors=request.class_colors,
            **request.overrides,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"Bad training options: {exc}") from None


def remaining_seconds(fraction: float, elapsed: float, minutes: float | None) -> float | None:
    """Time left: the rest of the minutes budget, else extrapolated from the progress."""
    if minutes:
        return max(0.0, minutes * 60 - elapsed)
    if fraction <= 0:
        return None
    return max(0.0, elapsed * (1 - fraction) / fraction)


def check_model(ref: str) -> None:
    """Raise :class:`UserError` unless ``ref`` is a readable model file or shipped name."""
    from segloop.core.modelio import ModelFileError, read_header

    if not ref:
        raise UserError("No model to start from: pick a model or choose 'from scratch'.")
    try:
        read_header(ref)
    except (ModelFileError, OSError) as exc:
        raise UserError(f"Cannot start from model {ref!r}: {exc}") from None


def train_run(request: TrainRequest, control: Any) -> Generator[Progress, None, TrainOutput]:
    """Store the request's corrections, then train on all of the project's (worker thread).

    ``control`` is the run's :class:`~segloop.core.finetune.RunControl`.
    """
    from segloop.core.finetune import finetune_iter
    from segloop.core.imageio import OutputWriteError

    yield Progress("load model", 0, 1, "saving the corrections")
    auto = request.start != "scratch" and request.model == AUTO_START
    # the project's base model names the model its drafts came from: not "auto"
    project = open_project(request.folder, None if auto else request.model or None)
    saved, kept = save_corrections(project, request.corrections, request.sparse)
    if not project.correction_ids():
        raise UserError(
            "Nothing to train on: add a pair (image + corrected labels) in "
            "'1 · Corrections', or pick a project folder with saved corrections."
        )
    if request.start != "scratch" and not auto:
        check_model(request.model)
    run = finetune_iter(project, finetune_request(request), control)
    try:
        result = yield from run
    except OutputWriteError as exc:
        raise UserError(f"Cannot write the new version: {exc}") from None
    except OSError as exc:  # a correction file gone or unreadable, the folder unreachable
        raise UserError(f"Cannot read the project in {request.folder}: {exc}") from None
    except ValueError as exc:
        raise UserError(_sentence(str(exc))) from None
    _list_versions(project.root / "models")  # read the headers here, not in the GUI's refresh
    version = None
    if result.version is not None:
        info = result.version
        version = Version(info.version, Path(info.path), info.metadata)
    return TrainOutput(version, result.stopped, result.steps, result.seconds, saved, kept)


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else text
