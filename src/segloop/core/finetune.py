"""Correct-and-retrain: the one training recipe behind the Fine-tune widget,
``segloop finetune`` and ``segloop train --init``.

A run trains on *all* corrections of a :class:`~segloop.core.project.Project` (minus
the held-out ones), plus a replay sample of the start model's own training images (when
the model ships some) so it does not forget what it knew, and saves the next version
``models/v<N>.safetensors`` with one :class:`VersionRecord` in its metadata. Every
default lives in :data:`DEFAULTS`; the widget, the CLI and the benchmarks read them
from there.

:class:`RunControl` carries the two ways to end a run early, from any thread:
``stop()`` ends training at the next step and saves the best weights so far as a
version; ``cancel()`` aborts the run and saves nothing.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .colour_choice import choose_colour_iter
from .evaluation import LabelledImage, evaluate_iter
from .modelio import ModelBundle, load_model, save_model
from .networks import (  # noqa: F401  (re-exported: the recipe's public names)
    check_start_model,
    fine_tune_scale,
    n_classes_of,
    network_config,
    new_model,
)
from .progress import Cancelled, Progress, RunControl
from .project import Project
from .recipe import DEFAULTS, SCRATCH
from .segment import SegmentOptions
from .size_check import check_predict_size
from .start_choice import AUTO_START, choose_start_iter
from .training import (
    TrainConfig,
    TrainResult,
    median_diameter,
    split_validation,
    train_iter,
)
from .versions import VersionInfo

REPLAY_ROOT = Path(__file__).resolve().parent.parent / "data" / "replay"


def recipe_config(scratch: bool = False, **overrides: Any) -> TrainConfig:
    """The recipe's :class:`TrainConfig`, with ``overrides`` (TrainConfig fields) last.

    Without ``minutes`` or ``epochs`` in ``overrides`` the run gets
    :attr:`Defaults.minutes`.
    """
    options: dict[str, Any] = {
        "learning_rate": DEFAULTS.learning_rate_scratch if scratch else DEFAULTS.learning_rate,
        "crop": DEFAULTS.crop,
        "batch_size": DEFAULTS.batch_size,
        "dice_weight": DEFAULTS.dice_weight_scratch if scratch else DEFAULTS.dice_weight,
        "val_interval_s": DEFAULTS.val_interval_s,
        "val_fraction": DEFAULTS.val_fraction,
        "target_diameter": "auto",
        "tune_grid": DEFAULTS.tune_grid,
    }
    if overrides.get("minutes") is None and overrides.get("epochs") is None:
        overrides = {**overrides, "minutes": DEFAULTS.minutes, "epochs": None}
    return TrainConfig(**{**options, **overrides})


@dataclass
class FinetuneRequest:
    """What to train: the start model (or scratch), the recipe and the held-out ids.

    Parameters
    ----------
    start : str
        A shipped model's name or a model file to fine-tune, :data:`SCRATCH`, or
        :data:`~segloop.core.start_choice.AUTO_START` (the shipped model that outlines
        the corrections best, :func:`~segloop.core.start_choice.choose_start_iter`).
    arch, target : str
        Architecture and target of a new network (``start == SCRATCH`` only).
    class_names, class_colors : list of str, optional
        Names / ``#rrggbb`` colours of class ids 1..K of a new class model.
    config : TrainConfig
        Training options; :func:`recipe_config` by default.
    val_ids : list of str, optional
        Correction ids held out for validation; None: :func:`split_corrections`' rule.
    replay_fraction : float
        Replay images per training correction.
    score_base : bool
        Score the start model's own validation images before and after (where
        forgetting shows; costs a few seconds).
    tune_on_training : bool
        With nothing held out, check and tune post-processing on the training
        corrections themselves (in-sample) instead of not tuning at all.
    unlabelled : list of np.ndarray
        Frames nobody corrected (see the attribute).
    """

    start: str = "nuclei"
    arch: str = "unet"
    target: str = "instances"
    class_names: list[str] | None = None
    class_colors: list[str] | None = None
    config: TrainConfig = field(default_factory=recipe_config)
    val_ids: list[str] | None = None
    replay_fraction: float = DEFAULTS.replay_fraction
    score_base: bool = True
    tune_on_training: bool = DEFAULTS.tune_on_training
    #: raw frames nobody corrected, of the same kind as the corrections; used only with
    #: ``config.unlabelled_weight`` > 0 (:mod:`segloop.core.pseudo_labels`)
    unlabelled: list[np.ndarray] = field(default_factory=list)

    @property
    def scratch(self) -> bool:
        return self.start == SCRATCH


@dataclass
class VersionRecord:
    """``metadata["finetune"]`` of a saved version (keys: :data:`~.metadata.FINETUNE_KEYS`)."""

    base: str
    base_version: int
    trained_on: list[str]
    validated_on: list[str]
    replay_images: int
    n_corrected_objects: int
    seconds: float
    steps: int
    stopped: bool
    seed: int
    recipe: dict[str, Any]
    metrics: dict[str, Any]
    start_choice: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FinetuneResult:
    """A finished run: the saved version (None when Stop came before the first step)."""

    version: VersionInfo | None
    training: TrainResult | None
    stopped: bool

    @property
    def steps(self) -> int:
        return self.training.steps if self.training else 0

    @property
    def seconds(self) -> float:
        return self.training.seconds if self.training else 0.0


def build_request(
    start: str,
    *,
    minutes: float | None = None,
    epochs: int | None = None,
    learning_rate: float | None = None,
    crop: int | None = None,
    batch_size: int | None = None,
    augment: bool = True,
    weight_map: bool = True,
    w0: float = 10.0,
    sigma: float = 5.0,
    seed: int = 0,
    val_ids: Sequence[str] | None = None,
    replay_fraction: float | None = None,
    arch: str = "unet",
    target: str = "instances",
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
    device: str = "auto",
    **config_overrides: Any,
) -> FinetuneRequest:
    """One request from the options the widget and ``segloop finetune`` both offer
    (None = the recipe's default); ``config_overrides`` are extra ``TrainConfig`` fields."""
    from .augment import AugmentConfig

    options: dict[str, Any] = {
        "minutes": minutes,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "crop": crop,
        "batch_size": batch_size,
    }
    options = {key: value for key, value in options.items() if value is not None}
    options.update(
        augment=AugmentConfig() if augment else AugmentConfig.none(),
        use_weight_map=weight_map,
        w0=w0,
        sigma=sigma,
        seed=seed,
        device=device,
        **config_overrides,
    )
    return FinetuneRequest(
        start=start,
        arch=arch,
        target=target,
        class_names=list(class_names) if class_names else None,
        class_colors=list(class_colors) if class_colors else None,
        config=recipe_config(scratch=start == SCRATCH, **options),
        val_ids=list(val_ids) if val_ids is not None else None,
        replay_fraction=DEFAULTS.replay_fraction if replay_fraction is None else replay_fraction,
    )


# --------------------------------------------------------------------------- pieces


def split_corrections(
    items: Sequence[LabelledImage],
    val_ids: Sequence[str] | None = None,
    seed: int = 0,
    fraction: float = DEFAULTS.val_fraction,
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """The one validation rule: ``val_ids`` when given, else none held out with fewer
    than two items or ``fraction`` 0 (the recipe's default), else a random ``fraction``
    (at least one, never all).

    Raises
    ------
    ValueError
        When every item would be held out.
    """
    if val_ids is not None:
        held = set(val_ids)
        train = [c for c in items if c.name not in held]
        val = [c for c in items if c.name in held]
    elif len(items) < 2 or fraction <= 0:
        train, val = list(items), []
    else:
        train, val = split_validation(items, fraction, seed)
    if not train:
        raise ValueError("every correction is held out for validation; keep one for training")
    return train, val


def replay_data(bundle: ModelBundle, part: str) -> list[LabelledImage]:
    """Images the model ships for replay (``part="train"``) or validation (``"val"``)."""
    folder = REPLAY_ROOT / str(bundle.metadata.get("replay", bundle.name)) / part
    if not folder.is_dir():
        return []
    from .imageio import read_image

    data = []
    for mask in sorted(folder.glob("*_masks.png")):
        image = mask.with_name(mask.name.replace("_masks", ""))
        data.append(LabelledImage(read_image(image), read_image(mask).astype(np.int32), image.name))
    return data


def replay_sample(
    bundle: ModelBundle, n_train: int, fraction: float, seed: int
) -> list[LabelledImage]:
    """``ceil(n_train * fraction)`` of the model's replay images, drawn with ``seed``."""
    replay = replay_data(bundle, "train")
    if not replay or fraction <= 0:
        return []
    count = min(len(replay), int(np.ceil(n_train * fraction)))
    picks = np.random.default_rng(seed).choice(len(replay), count, replace=False)
    return [replay[i] for i in picks]


def _score(bundle, data, should_cancel):
    if not data:
        return None
    report = yield from evaluate_iter(
        bundle, data, SegmentOptions(), should_cancel, true_diameter=True
    )
    return {"f1": report.matches.f1, "seg": report.seg, "n_images": len(data)}


def check_plan(
    train_set: Sequence[LabelledImage],
    val_set: Sequence[LabelledImage],
    config: TrainConfig,
    tune_on_training: bool = DEFAULTS.tune_on_training,
    scratch: bool = False,
) -> tuple[list[LabelledImage], TrainConfig, bool]:
    """What post-processing is checked and tuned on after training, as the recipe says:
    the held-out ``val_set``, else (``tune_on_training``) the training corrections
    themselves; a new network (``scratch``) has no post-processing of its own to keep.

    Returns
    -------
    check_set : list of LabelledImage
        ``val_set``, else ``train_set`` when ``tune_on_training``, else nothing.
    config : TrainConfig
        ``config``; when the check is in-sample on a fine-tune, with the recipe's rule
        for keeping the start model's post-processing (``tune_keep_current``,
        ``tune_keep_margin``).
    in_sample : bool
        Whether the check runs on what was trained on.
    """
    check_set = list(val_set) or (list(train_set) if tune_on_training else [])
    in_sample = bool(check_set) and not val_set
    if in_sample and not scratch:
        config = replace(
            config,
            tune_keep_current=DEFAULTS.tune_keep_current,
            tune_keep_margin=DEFAULTS.tune_keep_margin,
        )
    return check_set, config, in_sample


def adapt_iter(
    bundle: ModelBundle,
    train_set: Sequence[LabelledImage],
    val_set: Sequence[LabelledImage],
    config: TrainConfig,
    replay: Sequence[LabelledImage] = (),
    control: RunControl | None = None,
    out_path: str | Path | None = None,
    unlabelled: Sequence[np.ndarray] = (),
) -> Generator[Progress, None, TrainResult]:
    """Train ``bundle`` in place on ``train_set`` + ``replay`` with the recipe's scale
    rule (and, for colour corrections, the grey conversion that outlines them best:
    :mod:`segloop.core.colour_choice`), tuning post-processing on ``val_set`` and
    checking the prediction default's object size on it (:func:`check_predict_size`);
    the objects of ``train_set`` (not the replay's) set the version's diameter.
    ``out_path`` is passed to :func:`~segloop.core.training.train_iter` for its
    checkpoints and written again, atomically, with the final metadata (``segloop train
    --init``)."""
    control = control or RunControl()
    config = replace(config)  # the request's config stays as it was given
    config.tune_postprocess = bool(val_set) and config.tune_postprocess
    measured = median_diameter(train_set) if bundle.target == "instances" else None
    bundle.metadata.pop("size_check", None)  # the start model's, not this run's
    bundle.metadata.pop("colour_choice", None)
    if "training" in bundle.metadata:  # an existing model: rescale as fine_tune_scale says
        config.target_diameter = fine_tune_scale(bundle, config.target_diameter, measured)
        cancel = lambda: control.cancel_requested  # noqa: E731
        colour = yield from choose_colour_iter(bundle, train_set, cancel)
        if colour is not None:
            bundle.metadata["colour_choice"] = colour
    result = yield from train_iter(
        bundle,
        list(train_set) + list(replay),
        config,
        list(val_set),
        out_path,
        should_stop=lambda: control.stop_requested or control.cancel_requested,
        should_cancel=lambda: control.cancel_requested,
        unlabelled=unlabelled,
        n_own=len(train_set),
    )
    if measured is not None:
        bundle.metadata["native_diameter"] = measured
        if not bundle.metadata.get("rescaled"):
            bundle.metadata["diameter"] = measured
    if val_set and result.steps and not result.stopped:
        cancel = lambda: control.cancel_requested  # noqa: E731
        yield from check_predict_size(bundle, val_set, DEFAULTS.size_check_margin, cancel)
    if out_path is not None and result.steps:  # train_iter wrote it before the lines above
        save_model(bundle, out_path)
    return result


def recipe_summary(config: TrainConfig, replay_fraction: float) -> dict[str, Any]:
    """The recipe facts stored in a version record."""
    return {
        "learning_rate": config.learning_rate,
        "minutes": config.minutes,
        "epochs": config.epochs,
        "crop": config.crop,
        "batch_size": config.batch_size,
        "replay_fraction": replay_fraction,
        "target_diameter": config.target_diameter,
        "dice_weight": config.dice_weight,
        "weight_map": config.use_weight_map,
    }


def _score_after(bundle, result, val_set, base_val, control):
    """Scores of the new version; a class model reports its best validation accuracy."""
    if bundle.target == "classes":
        accuracy = [v["accuracy"] for v in result.validation if "accuracy" in v]
        return {"corrections": {"accuracy": max(accuracy)} if accuracy else None}
    yield Progress("evaluate", 0, 1, "scoring the new version")
    cancel = lambda: control.cancel_requested  # noqa: E731
    after = {"corrections": (yield from _score(bundle, val_set, cancel))}
    if not result.stopped:  # Stop asks to finish fast: skip the slower base scoring
        after["base_validation"] = yield from _score(bundle, base_val, cancel)
    return after


# --------------------------------------------------------------------------- the run


def finetune_iter(
    project: Project, request: FinetuneRequest, control: RunControl | None = None
) -> Generator[Progress, None, FinetuneResult]:
    """Train on every correction of ``project`` and save the next version.

    Yields :class:`Progress` (stages ``load``, ``choose start`` (start ``auto``),
    ``evaluate``, ``prepare``, ``train``, ``validate``, ``tune``, ``save``) and returns
    a :class:`FinetuneResult`.

    Raises
    ------
    ValueError
        No corrections, nothing left to train on, or a start model that does not fit.
    Cancelled
        After :meth:`RunControl.cancel`; nothing is written then.
    """
    control = control or RunControl()
    yield Progress("load", 0, 1, "reading the corrections")
    corrections = project.load_corrections()
    if not corrections:
        raise ValueError("no corrections saved yet: correct a frame and save it first")
    config = request.config
    train_set, val_set = split_corrections(
        corrections, request.val_ids, config.seed, config.val_fraction
    )
    name = f"{project.root.name}-v{int(project.next_version_path().stem[1:])}"
    start, choice = request.start, None
    if start == AUTO_START:  # the shipped model that outlines the corrections best
        ended = lambda: control.stop_requested or control.cancel_requested  # noqa: E731
        try:  # on the training corrections: the held-out ones score the start after
            choice = yield from choose_start_iter(train_set, should_stop=ended)
        except Cancelled:
            control.check_cancel()
            return FinetuneResult(None, None, True)  # Stop: nothing trained, nothing saved
        start = choice.name
    if request.scratch:
        bundle = new_model(request, corrections, name)
        base, base_version, base_val, replay = f"{SCRATCH}:{request.arch}", 0, [], []
    else:
        bundle = load_model(start)
        bundle.metadata.pop("start_choice", None)  # `train --init auto`'s, not this run's
        check_start_model(bundle, corrections)
        base, base_version = str(start), int(bundle.metadata.get("version", 0))
        base_val = replay_data(bundle, "val") if request.score_base else []
        replay = replay_sample(bundle, len(train_set), request.replay_fraction, config.seed)
        bundle.metadata.update(parent=str(bundle.path), name=name)
    control.check_cancel()
    before = {}
    if not request.scratch:  # a Stop here, before any training, keeps nothing either
        yield Progress("evaluate", 0, 1, "scoring the start model")
        ended = lambda: control.stop_requested or control.cancel_requested  # noqa: E731
        try:
            before = {
                "corrections": (yield from _score(bundle, val_set, ended)),
                "base_validation": (yield from _score(bundle, base_val, ended)),
            }
        except Cancelled:
            control.check_cancel()
            return FinetuneResult(None, None, True)  # Stop: nothing trained, nothing saved
    check_set, config, in_sample = check_plan(
        train_set, val_set, config, request.tune_on_training, request.scratch
    )
    result = yield from adapt_iter(
        bundle, train_set, check_set, config, replay, control, unlabelled=request.unlabelled
    )
    if result.steps == 0:  # Stop before the first step: nothing new to keep
        return FinetuneResult(None, result, True)
    after = yield from _score_after(bundle, result, val_set, base_val, control)
    record = VersionRecord(
        base=base,
        base_version=base_version,
        trained_on=[c.name for c in train_set],
        validated_on=[c.name for c in val_set],
        replay_images=len(replay),
        n_corrected_objects=int(sum(len(np.unique(c.labels)) - 1 for c in train_set)),
        seconds=round(result.seconds, 1),
        steps=result.steps,
        stopped=result.stopped,
        seed=config.seed,
        recipe={
            **recipe_summary(config, request.replay_fraction if replay else 0.0),
            "tuned_on_training": in_sample,
            "tune_keep_current": config.tune_keep_current,
            "tune_keep_margin": config.tune_keep_margin,
            "unlabelled_frames": len(request.unlabelled) if config.unlabelled_weight > 0 else 0,
        },
        metrics={"before": before, "after": after},
        start_choice=None if choice is None else choice.to_dict(),
    )
    control.check_cancel()
    bundle.metadata.update(finetune=record.to_dict())
    yield Progress("save", 0, 1, "saving the new version")
    version = project.save_version(bundle)  # numbered under the lock: never replaces one
    return FinetuneResult(version, result, result.stopped)
