"""One training loop for training from scratch and for fine-tuning.

:func:`train_iter` is a generator: it yields :class:`Progress` (step, epoch, loss,
validation metric) and returns a :class:`TrainResult`. It honours a stop request between
steps, keeps the best validated weights, and writes them atomically when given a path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .augment import AugmentConfig
from .device import avoid_triton_crash, compute_settings, prepare_network
from .ema import WeightAverage, averaged_weights
from .evaluation import LabelledImage
from .losses import distance_loss, segmentation_loss
from .modelio import ModelBundle, save_model
from .models import tile_geometry
from .param_groups import StartAnchor, frozen_encoder, parameter_groups, training_mode
from .progress import Progress, StopCheck, check_stop, run_to_end
from .pseudo_labels import consistency_loss, prepare_unlabelled, pseudo_batch
from .samples import (  # noqa: F401  (re-exported: training's public names)
    DEFAULT_DIAMETER,
    NATIVE_RANGE,
    SPARSE_SHARE,
    Sample,
    _batch,
    diameter_range,
    make_sample,
    median_diameter,
    resolve_target_diameter,
    split_validation,
)
from .train_checks import (
    BATCH_RANGE,
    CROP_RANGE,
    DIAMETER_RANGE,
    MAX_EPOCHS,
    MAX_MINUTES,
    check_integer,
    check_number,
    check_samples_fit,
    checked_pair_scale,
)
from .train_validation import _validate, domain_groups, tune_iter  # noqa: F401  (re-exported)
from .weightmap import check_parameters as check_weight_parameters


@dataclass
class TrainConfig:
    """Training options; defaults suit CPU training of the fast U-Net.

    ``epochs`` counts passes in which every training image gives one random crop;
    ``minutes`` is a wall-clock budget. When both are set the first one reached stops.
    ``target_diameter`` rescales every training pair so its median object diameter
    becomes this many pixels; None keeps the native scale; ``"auto"`` (see
    :func:`resolve_target_diameter`) rescales only when objects are outside the size range
    the network handles well at native scale, and follows the base model when fine-tuning.
    """

    minutes: float | None = None
    epochs: int | None = None
    crop: int = 256
    batch_size: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    val_interval_s: float = 60.0
    val_max_images: int = 24
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    use_weight_map: bool = True
    w0: float = 10.0
    sigma: float = 5.0
    dice_weight: float = 0.0
    distance_weight: float = 1.0
    #: weigh the distance loss with the weight map too (stresses the gaps between nuclei)
    distance_weight_map: bool = False
    border_width: int = 2
    #: share of the crops of a dense instance correction centred on a random object
    #: pixel (the rest are drawn uniformly); 0 draws no extra random numbers
    object_crops: float = 0.0
    #: share of the crops of each training image centred on a labelled pixel that the
    #: network gets wrong before training (predicted once per run); 0 predicts nothing
    error_crops: float = 0.0
    target_diameter: float | str | None = None
    device: str = "auto"
    tune_postprocess: bool = True
    #: "full" (POSTPROCESS_GRID, minutes on a CPU) or "quick" (QUICK_GRID, for fine-tuning)
    tune_grid: str = "full"
    #: weight of the pooled SEG in the tuning score (F1 - count error + weight * SEG)
    tune_seg_weight: float = 0.0
    #: keep the model's current post-processing unless the tuned settings give a higher
    #: pooled SEG on the validation images (``baseline`` of :func:`tune_postprocess`)
    tune_keep_current: bool = False
    #: ... higher by more than this when the tuned settings drop more
    #: (:func:`~segloop.core.evaluation.drops_more`)
    tune_keep_margin: float = 0.0
    #: decay of an exponential moving average of the weights, which is then what is
    #: validated and kept (:mod:`segloop.core.ema`); 0 keeps the trained weights
    ema_decay: float = 0.0
    #: the encoder's learning rate as a share of the others' (0 freezes its weights,
    #: not its batch-norm statistics; :mod:`segloop.core.param_groups`)
    encoder_lr_factor: float = 1.0
    #: keep the batch-norm layers' running statistics as the start model has them and
    #: normalise with them while training (:func:`~segloop.core.param_groups.training_mode`).
    #: Measured for fine-tunes across 7 modalities (docs/benchmarks.md, 2026-12-07): mean
    #: SEG 0.521 against 0.552, same nested leave-one-out median; off
    freeze_batchnorm: bool = False
    #: decay of the weights towards the start model's instead of towards zero
    #: (:class:`~segloop.core.param_groups.StartAnchor`, L2-SP); 0 leaves them free
    start_decay: float = 0.0
    #: weight of the pseudo-label loss on frames nobody corrected
    #: (:mod:`segloop.core.pseudo_labels`; 0: unlabelled frames are not used)
    unlabelled_weight: float = 0.0
    #: unlabelled crops added to each step's batch
    unlabelled_batch: int = 2
    #: a pixel of an unlabelled crop becomes a target when the network's top class
    #: probability there is at least this
    pseudo_threshold: float = 0.9

    def __post_init__(self) -> None:
        if self.tune_grid not in ("full", "quick"):
            raise ValueError(f"tune_grid must be 'full' or 'quick', not {self.tune_grid!r}")
        if self.minutes is None and self.epochs is None:
            raise ValueError("give a time budget (minutes) or a number of epochs")
        if self.minutes is not None:
            check_number("minutes", self.minutes, 0.0, MAX_MINUTES, low_open=True)
        if self.epochs is not None:
            check_integer("epochs", self.epochs, 1, MAX_EPOCHS)
        check_integer("crop", self.crop, *CROP_RANGE)
        check_integer("batch_size", self.batch_size, *BATCH_RANGE)
        check_number("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        check_number("weight_decay", self.weight_decay, 0.0, 10.0)
        check_number("val_fraction", self.val_fraction, 0.0, 0.9)
        check_number("val_interval_s", self.val_interval_s, 0.0, math.inf, finite=False)
        check_integer("val_max_images", self.val_max_images, 1, 10**6)
        check_integer("border_width", self.border_width, 1, 64)
        check_number("object_crops", self.object_crops, 0.0, 1.0)
        check_number("error_crops", self.error_crops, 0.0, 1.0)
        check_number("tune_seg_weight", self.tune_seg_weight, 0.0, 100.0)
        check_number("tune_keep_margin", self.tune_keep_margin, 0.0, 1.0)
        check_number("ema_decay", self.ema_decay, 0.0, 0.99999)
        check_number("encoder_lr_factor", self.encoder_lr_factor, 0.0, 1.0)
        check_number("start_decay", self.start_decay, 0.0, 1000.0)
        check_number("unlabelled_weight", self.unlabelled_weight, 0.0, 100.0)
        check_integer("unlabelled_batch", self.unlabelled_batch, *BATCH_RANGE)
        check_number("pseudo_threshold", self.pseudo_threshold, 0.0, 1.0)
        check_weight_parameters(self.w0, self.sigma)
        value = self.target_diameter
        if value is not None and value != "auto":
            if isinstance(value, str):
                raise ValueError(f"target_diameter must be a number, 'auto' or None, not {value!r}")
            check_number("target_diameter", value, *DIAMETER_RANGE)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["augment"] = self.augment.to_dict()
        return out


@dataclass
class TrainResult:
    """What a training run produced."""

    bundle: ModelBundle
    steps: int
    epochs: float
    seconds: float
    stopped: bool
    best_metric: float | None
    history: list[dict[str, float]]
    validation: list[dict[str, float]]


def checkpoint_path(out_path: str | Path) -> Path:
    """Side file :func:`train_iter` writes checkpoints to, ``<stem>.checkpoint.safetensors``
    next to ``out_path``, so that the file at ``out_path`` is only replaced when the
    training ends (an interrupted run leaves the previous model intact)."""
    out = Path(out_path)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.stem
    return out.with_name(f"{stem}.checkpoint.safetensors")


def train_iter(
    bundle: ModelBundle,
    data: Sequence[LabelledImage],
    config: TrainConfig,
    val_data: Sequence[LabelledImage] | None = None,
    out_path: str | Path | None = None,
    should_stop: StopCheck = None,
    should_cancel: StopCheck = None,
    unlabelled: Sequence[np.ndarray] = (),
    n_own: int | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train ``bundle.network`` in place on ``data``; see the module docstring.

    With ``unlabelled`` frames (raw 2-D images nobody labelled) and
    ``config.unlabelled_weight`` > 0, each step also learns the network's own confident
    predictions on them (:mod:`segloop.core.pseudo_labels`); they are rescaled by the
    median training scale of the first ``n_own`` items of ``data`` (all by default: pass
    the number of corrections when replay images follow them).

    ``should_stop`` ends training at the top of the next step (the best weights so far
    are kept and returned); ``should_cancel`` aborts the run anywhere, validation
    passes included, by raising :class:`~segloop.core.progress.Cancelled`. A
    ``should_stop`` alone also aborts validation passes (as before).

    With ``out_path``, every better validated checkpoint is written atomically to
    :func:`checkpoint_path` of it, and ``out_path`` itself is written (atomically) only
    when training ends, normally or on a ``should_stop`` request; the side file is then
    removed. An exception (e.g. ``KeyboardInterrupt``) leaves ``out_path`` untouched and
    the best checkpoint so far in the side file.
    """
    if not data:
        raise ValueError("no training images given")
    passes_stop = should_stop if should_cancel is None else should_cancel
    own = list(data[: n_own or len(data)])  # before any split: what sets the frames' scale
    if val_data is None:
        data, val_data = split_validation(data, config.val_fraction, config.seed)
    val_data = list(val_data)[: config.val_max_images]
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    yield Progress("prepare", 0, len(data), "preparing training images")
    bundle.metadata.pop("size_model", None)  # fitted to the old weights' features
    target_diameter = resolve_target_diameter(config.target_diameter, bundle, data)
    config = replace(config, target_diameter=target_diameter)
    scales = [1.0] * len(data)
    if bundle.target == "instances":
        scales = [checked_pair_scale(item, target_diameter) for item in data]
    check_samples_fit(data, scales)
    samples = [make_sample(item, bundle, config) for item in data]
    pool = []
    if config.unlabelled_weight > 0 and len(unlabelled):
        if bundle.target != "instances":
            raise ValueError("unlabelled frames are only used by instance models")
        factor = float(np.median([checked_pair_scale(item, target_diameter) for item in own]))
        pool = prepare_unlabelled(unlabelled, bundle, factor)
    pool_rng = np.random.default_rng([config.seed, 1])  # the corrections' draws stay as they were
    if bundle.target == "instances":
        if not any(s.n_objects for s in samples):
            raise ValueError("the training labels contain no objects")
        native_median = median_diameter(data)
        if native_median is not None:
            bundle.metadata["native_diameter"] = native_median
            bundle.metadata["diameter"] = target_diameter or native_median
            bundle.metadata["rescaled"] = target_diameter is not None
            bundle.metadata["diameter_range"] = diameter_range(
                data, scales, config.augment.scale_range
            )
    # Crops larger than every (rescaled) image would be mostly padding: shrink them.
    largest_side = max(max(sample.image.shape[-2:]) for sample in samples)
    geometry = tile_geometry(bundle.config, min(config.crop, largest_side))
    settings = compute_settings(config.device, training=True)
    network = training_mode(prepare_network(bundle.network, settings), config.freeze_batchnorm)
    avoid_triton_crash()  # torch.optim imports torch._dynamo -> triton; see its docstring
    optimizer = torch.optim.AdamW(
        parameter_groups(network, config.encoder_lr_factor),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    average = WeightAverage(network, config.ema_decay) if config.ema_decay else None
    anchor = StartAnchor(network, config.start_decay) if config.start_decay else None
    steps_per_epoch = max(1, math.ceil(len(samples) / config.batch_size))
    max_steps = config.epochs * steps_per_epoch if config.epochs else None
    budget_s = config.minutes * 60 if config.minutes else None
    history: list[dict[str, float]] = []
    validation: list[dict[str, float]] = []
    best_score, best_state = -math.inf, None
    start = last_val = time.monotonic()
    step, stopped, order = 0, False, []
    side_path = None if out_path is None else checkpoint_path(out_path)

    def progress_fraction() -> float:
        parts = []
        if max_steps:
            parts.append(step / max_steps)
        if budget_s:
            parts.append((time.monotonic() - start) / budget_s)
        return min(1.0, max(parts))

    def checkpoint(score: float, metrics: dict[str, float]) -> None:
        nonlocal best_score, best_state
        validation.append({"step": step, "seconds": time.monotonic() - start, **metrics})
        if val_data and score > best_score:
            best_score = score
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            if side_path is not None:
                _record(bundle, config, data, samples, history, validation, step, start)
                bundle.metadata["training"]["checkpoint"] = True  # not the end of training
                save_model(bundle, side_path)

    with frozen_encoder(network, config.encoder_lr_factor == 0):
        while progress_fraction() < 1.0:
            check_stop(should_cancel)
            if should_stop is not None and should_stop():
                stopped = True
                break
            if not order:
                order = list(rng.permutation(len(samples)))
            picks, order = order[: config.batch_size], order[config.batch_size :]
            while len(picks) < config.batch_size:  # fill the last batch of an epoch
                picks.append(int(rng.integers(len(samples))))
            images, targets, weights, distances = _batch(
                samples, picks, geometry, config, rng, geometry.margin
            )
            lr_scale = _lr_schedule(progress_fraction())
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * lr_scale * group["lr_factor"]
            pseudo = None
            if pool:
                pseudo = pseudo_batch(
                    network, pool, config.unlabelled_batch, geometry,
                    bundle.config.n_classes, config.pseudo_threshold, settings, pool_rng,
                )  # fmt: skip
                images = torch.cat([images, pseudo.strong])
            with settings.autocast():
                logits = network(settings.to_device(images)).float()
            loss = _loss(
                logits[: len(targets)], targets, weights, distances, bundle, config, settings
            )
            consistency = None
            if pseudo is not None:
                consistency = consistency_loss(
                    logits[len(targets) :], pseudo.target, pseudo.distance,
                    bundle.config.n_classes, config.distance_weight,
                )  # fmt: skip
                loss = loss + config.unlabelled_weight * consistency
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if anchor is not None:
                anchor.pull(optimizer)
            if average is not None:
                average.update(network)
            step += 1
            elapsed = time.monotonic() - start
            history.append(
                {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "loss": float(loss.detach()),
                    "seconds": elapsed,
                }
            )
            if consistency is not None:  # its share of the loss, for comparable curves
                history[-1]["pseudo_loss"] = float(consistency.detach())
            data_out = dict(history[-1])
            if val_data and time.monotonic() - last_val >= config.val_interval_s:
                with averaged_weights(network, average):
                    score, metrics = yield from _validate(bundle, val_data, config, passes_stop)
                    checkpoint(score, metrics)
                last_val = time.monotonic()
                data_out["validation"] = metrics
            yield Progress(
                "train",
                int(progress_fraction() * 1000),
                1000,
                f"step {step} loss {history[-1]['loss']:.4f}",
                data_out,
            )
    if not stopped and val_data:
        with averaged_weights(network, average):
            score, metrics = yield from _validate(bundle, val_data, config, passes_stop)
            checkpoint(score, metrics)
        yield Progress("validate", 1, 1, "final validation", {"validation": metrics})
    if best_state is not None:
        network.load_state_dict(best_state)
    elif average is not None:  # nothing validated: keep the average
        network.load_state_dict(average.state)
    network.eval()
    if not stopped and config.tune_postprocess and bundle.target == "instances" and val_data:
        yield Progress("tune", 0, 1, "tuning post-processing on the validation images")
        tuned = yield from tune_iter(bundle, val_data, config, passes_stop)
        seconds = time.monotonic() - start
        validation.append(
            {
                "step": step,
                "seconds": seconds,
                "tuned_f1": tuned.f1,
                "tuned_count_error": tuned.count_error,
                "tuned_seg": tuned.seg,
                "tuned_kept_current": tuned.kept_baseline,
            }
        )
    _record(bundle, config, data, samples, history, validation, step, start)
    bundle.metadata["training"]["stopped"] = stopped
    if out_path is not None:
        save_model(bundle, out_path)
        if side_path is not None:
            side_path.unlink(missing_ok=True)
    return TrainResult(
        bundle,
        step,
        step / steps_per_epoch,
        time.monotonic() - start,
        stopped,
        None if best_state is None else best_score,
        history,
        validation,
    )


def _loss(logits, targets, weights, distances, bundle, config, settings):
    """Class loss, plus the distance channel's loss for models with a distance head."""
    n_classes = bundle.config.n_classes
    targets, weights = targets.to(settings.device), weights.to(settings.device)
    loss = segmentation_loss(logits[:, :n_classes], targets, weights, config.dice_weight)
    if distances is not None:
        distance = distances.to(settings.device)
        pixel_weight = weights if config.distance_weight_map else None
        loss = loss + config.distance_weight * distance_loss(
            logits[:, n_classes], distance, targets, pixel_weight
        )
    return loss


def _lr_schedule(fraction: float) -> float:
    """Linear warm-up over the first 3 %, then cosine decay to 5 % of the base rate."""
    if fraction < 0.03:
        return 0.1 + 0.9 * fraction / 0.03
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))


def _record(bundle, config, data, samples, history, validation, step, start) -> None:
    """Write training facts into the bundle metadata (kept small: curves are thinned)."""
    stride = max(1, len(history) // 200)
    bundle.metadata["training"] = {
        "config": config.to_dict(),
        "n_images": len(data),
        "n_objects": int(sum(s.n_objects for s in samples)),
        "images": [item.name for item in data][:500],
        "steps": step,
        "seconds": round(time.monotonic() - start, 1),
    }
    bundle.metadata["history"] = history[::stride]
    bundle.metadata["validation"] = validation


def train(bundle: ModelBundle, data: Sequence[LabelledImage], config: TrainConfig, **kwargs):
    """Plain-function form of :func:`train_iter`."""
    return run_to_end(train_iter(bundle, data, config, **kwargs))
