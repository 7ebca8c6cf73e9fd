"""Training runs of the Fine-tune widget: options, Stop handling, fine-tune or from scratch.

Runs in the worker thread (:func:`train_run`); torch-importing core modules are imported
inside the functions. See :mod:`.finetune_adapters` for corrections and versions.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.progress import Cancelled, Progress, StopCheck

from .adapters import UserError
from .finetune_adapters import Version, open_project

ARCHITECTURES = ("unet", "segnet", "unet-classic")
TARGETS = ("instances", "classes")
#: Learning rates suggested for fine-tuning and for training from scratch.
#: Default learning rates. Fine-tuning uses 1e-3 too: picked on E. coli validation frames
#: (benchmarks/finetune_loop.py --validation), 3e-4 adapted too slowly in 1-3 CPU-minutes.
LEARNING_RATES = {"model": 1e-3, "scratch": 1e-3}
#: Progress stages after which a Stop may end training (the top of a training step).
TRAIN_STAGES = ("prepare", "train")
#: Most class ids a "classes" model may have (more means the labels are instances).
MAX_CLASSES = 20


@dataclass
class TrainRequest:
    """Everything a training run needs, read from the widget in the GUI thread."""

    folder: Path
    start: str = "model"  # "model" (fine-tune) or "scratch"
    model: str = ""
    arch: str = "unet"
    target: str = "instances"
    minutes: float | None = None
    epochs: int | None = 10
    learning_rate: float = 3e-4
    augment: bool = True
    weight_map: bool = True
    w0: float = 10.0
    sigma: float = 5.0
    val_ids: list[str] | None = None
    crop: int = 256
    batch_size: int = 4
    class_names: list[str] | None = None  # new class model: names of ids 1..K
    class_colors: list[str] | None = None  # new class model: #rrggbb of ids 1.. (>= K)
    layer_class_names: dict[int, str] = field(default_factory=dict)  # from layer features
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainOutput:
    """A finished (or stopped) run: the saved version and what training did."""

    version: Version
    stopped: bool
    steps: int
    seconds: float


def make_config(request: TrainRequest) -> Any:
    """The core ``TrainConfig`` of a request (``overrides`` last)."""
    from segloop.core.augment import AugmentConfig
    from segloop.core.training import TrainConfig

    augment = AugmentConfig() if request.augment else _no_augment(AugmentConfig)
    options: dict[str, Any] = {
        "minutes": request.minutes,
        "epochs": request.epochs,
        "crop": request.crop,
        "batch_size": request.batch_size,
        "learning_rate": request.learning_rate,
        "augment": augment,
        "use_weight_map": request.weight_map,
        "w0": request.w0,
        "sigma": request.sigma,
        "target_diameter": "auto",
        "val_interval_s": 30.0,
        **request.overrides,
    }
    try:
        return TrainConfig(**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"Bad training options: {exc}") from None


def _no_augment(config_class: type) -> Any:
    return config_class(flips=False, rot90=False, elastic=False, intensity=False, noise=False)


def remaining_seconds(fraction: float, elapsed: float, minutes: float | None) -> float | None:
    """Time left: the rest of the minutes budget, else extrapolated from the progress."""
    if minutes:
        return max(0.0, minutes * 60 - elapsed)
    if fraction <= 0:
        return None
    return max(0.0, elapsed * (1 - fraction) / fraction)


class StopLatch:
    """The ``should_stop`` given to the core: a Stop ends *training*, not the run.

    A Stop request is answered ``True`` once, at the top of a training step (the last
    event was a ``prepare`` or ``train`` one), where the core stops cleanly and keeps
    the best weights; the scoring and saving that follow then run to the end. A Stop
    before the first training step cancels the run (nothing is saved). ``hard`` (closing
    the widget) always answers ``True``.
    """

    def __init__(self, stop: threading.Event, hard: StopCheck = None) -> None:
        self.stop = stop
        self.hard = hard
        self.stage = ""
        self.trained = False
        self.delivered = False

    def __call__(self) -> bool:
        if self.hard is not None and self.hard():
            return True
        if self.stop.is_set() and not self.delivered and self.stage in TRAIN_STAGES:
            self.delivered = True
            return True
        return False

    def drive(self, generator: Generator[Progress, None, Any]) -> Generator[Progress, None, Any]:
        """Relay ``generator``'s events, tracking the stage; return its value."""
        while True:
            try:
                event = next(generator)
            except StopIteration as done:
                return done.value
            self.stage = event.stage
            self.trained = self.trained or event.stage == "train"
            if self.stop.is_set() and not self.trained and event.stage not in TRAIN_STAGES:
                generator.close()
                raise Cancelled("stopped before training started")
            yield event


def check_model(ref: str, project: Any) -> None:
    """Raise :class:`UserError` unless ``ref`` is a readable model that fits the corrections.

    A class model (target ``"classes"``) can only learn the class ids it has outputs for.
    """
    from segloop.core.modelio import ModelFileError, read_header

    if not ref:
        raise UserError("No model to start from: pick a model or choose 'from scratch'.")
    try:
        config, metadata, _ = read_header(ref)
    except (ModelFileError, OSError) as exc:
        raise UserError(f"Cannot start from model {ref!r}: {exc}") from None
    if metadata.get("target") == "classes":
        top = max((int(c.labels.max()) for c in project.load_corrections()), default=0)
        if top > config.n_classes:
            raise UserError(
                f"Model {ref!r} knows classes 1..{config.n_classes} but the corrections use "
                f"class {top}; train a new class model from scratch instead."
            )


def train_run(
    request: TrainRequest, stop_request: threading.Event, should_stop: StopCheck = None
) -> Generator[Progress, None, TrainOutput]:
    """Fine-tune (or train from scratch) on all corrections of the project; save a version."""
    latch = StopLatch(stop_request, should_stop)
    yield Progress("load model", 0, 1, "checking the model and the corrections")
    project = open_project(request.folder)
    config = make_config(request)
    if request.start == "model":
        from segloop.core.project import fine_tune_iter

        check_model(request.model, project)
        run = fine_tune_iter(project, request.model, config, request.val_ids, should_stop=latch)
    else:
        run = scratch_iter(project, request, config, should_stop=latch)
    try:
        info, result = yield from latch.drive(run)
    except OSError as exc:
        raise UserError(f"Cannot write the new version: {exc}") from None
    version = Version(info.version, Path(info.path), info.metadata)
    return TrainOutput(version, result.stopped, result.steps, result.seconds)


def _split(corrections: list, val_ids: Sequence[str] | None, seed: int) -> tuple[list, list]:
    """Training and validation corrections, as ``fine_tune_iter`` splits them."""
    from segloop.core.training import split_validation

    if val_ids is not None:
        held = set(val_ids)
        return [c for c in corrections if c.name not in held], [
            c for c in corrections if c.name in held
        ]
    if len(corrections) < 2:
        return list(corrections), []
    return split_validation(corrections, 0.2, seed)


def _n_classes(corrections: list, target: str) -> int:
    """Output classes of a new model: 3 for instances, else the largest class id."""
    if target == "instances":
        return 3
    top = max(int(c.labels.max()) for c in corrections)
    if top > MAX_CLASSES:
        raise UserError(
            f"The corrections hold label values up to {top}: for target 'classes' paint class "
            "ids (1, 2, 3… with 0 = unlabelled), or choose target 'instances'."
        )
    return max(top, 2)


def _class_style(request: TrainRequest, n_classes: int) -> dict[str, list[str]]:
    """Class names/colours of a new class model (checked against its class count)."""
    from segloop.core.classes import class_style_metadata

    colors = request.class_colors
    colors = colors[:n_classes] if colors and len(colors) >= n_classes else None
    names = request.class_names
    if not names:
        from_layer = [request.layer_class_names.get(k) for k in range(1, n_classes + 1)]
        names = from_layer if all(from_layer) else None
    try:
        return class_style_metadata(n_classes, names, colors)
    except ValueError as exc:
        raise UserError(f"Class names: {exc}.") from None


def scratch_iter(
    project: Any, request: TrainRequest, config: Any, should_stop: StopCheck = None
) -> Generator[Progress, None, tuple[Any, Any]]:
    """Train a new network on all corrections of ``project``; save it as the next version.

    The version's metadata carries the same ``finetune`` record as a fine-tuned one
    (``before`` is empty: there was no model before).
    """
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import preset
    from segloop.core.project import VersionInfo
    from segloop.core.training import train_iter

    corrections = project.load_corrections()
    if not corrections:
        raise UserError("No corrections saved yet: add a pair and press 'Save corrections'.")
    train_set, val_set = _split(corrections, request.val_ids, config.seed)
    if not train_set:
        raise UserError("Every correction is held out for validation; keep one for training.")
    out_path = project.next_version_path()
    number = int(out_path.stem[1:])
    config_net = preset(request.arch, _n_classes(corrections, request.target))
    bundle = new_bundle(config_net, f"{project.root.name}-v{number}", target=request.target)
    if request.target == "classes":
        bundle.metadata.update(_class_style(request, config_net.n_classes))
    bundle.metadata.update(version=number, arch=request.arch)
    config.tune_postprocess = bool(val_set) and config.tune_postprocess
    result = yield from train_iter(bundle, train_set, config, val_set, None, should_stop)
    key = "accuracy" if request.target == "classes" else "f1"
    scored = [v for v in result.validation if key in v]
    best = max(scored, key=lambda v: v[key]) if scored else {}  # the weights that were kept
    after = {k: v for k, v in best.items() if k in ("f1", "seg", "accuracy")}
    bundle.metadata["finetune"] = {
        "base": f"scratch:{request.arch}",
        "base_version": 0,
        "trained_on": [c.name for c in train_set],
        "validated_on": [c.name for c in val_set],
        "replay_images": 0,
        "n_corrected_objects": int(sum(len(np.unique(c.labels)) - 1 for c in train_set)),
        "seconds": round(result.seconds, 1),
        "steps": result.steps,
        "stopped": result.stopped,
        "metrics": {"before": {}, "after": {"corrections": after or None}},
    }
    save_model(bundle, out_path)
    return VersionInfo(number, out_path, bundle.metadata), result
