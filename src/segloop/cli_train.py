"""``segloop train``: train a new model, or fine-tune one (``--init``), on image/mask folders.

``--init`` runs the fine-tune service's recipe (:mod:`segloop.core.finetune`, as the
Fine-tune widget's Train button); a new model gets the recipe's network defaults
(:func:`segloop.core.finetune.network_config`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import cli_checks as checks
from .cli_progress import ProgressPrinter
from .core.recipe import DEFAULTS

if TYPE_CHECKING:
    from .core.training import TrainConfig


def _train_diameter(value: str) -> float | str | None:
    from .core.units import parse_length

    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    number, unit = parse_length(value)
    if unit is not None:
        raise ValueError(
            f"--diameter {value}: training takes the diameter in pixels (e.g. 18 or 18px), "
            "not a physical length"
        )
    return number


def _train_augment(args):
    from .core.augment import AugmentConfig

    if args.no_augment:
        return AugmentConfig.none()
    return AugmentConfig.shift() if args.shift_augment else AugmentConfig()


def cmd_train(args) -> int:
    from .core.datasets import load_pairs
    from .core.finetune import network_config
    from .core.modelio import load_model, new_bundle, with_distance_head
    from .core.progress import run_to_end
    from .core.training import checkpoint_path, train_iter

    _fill_defaults(args)
    checks.check_model_out(args.out)
    checks.check_together(args, "--val-images", "--val-masks")
    data = load_pairs(args.images, args.masks)
    val_data = load_pairs(args.val_images, args.val_masks) if args.val_images else None
    if args.target == "classes":
        checks.check_class_ids(list(data) + list(val_data or []))
    target = args.target
    choice = None
    if args.init == "auto":
        data, val_data, choice = _choose_start(data, val_data, args)
        args.init = choice.name
    if args.init:
        bundle = load_model(args.init)
        bundle.metadata.pop("start_choice", None)  # the start model's, not this run's
        parent = str(bundle.path)
        bundle.metadata.update(
            name=Path(args.out).name.split(".")[0],
            parent=parent,
            version=int(bundle.metadata.get("version", 0)) + 1,
        )
        if args.invert:
            bundle.metadata.setdefault("preprocess", {})["invert"] = args.invert
        if choice is not None:
            bundle.metadata["start_choice"] = choice.to_dict()
    else:
        n_classes = 3
        if target == "classes":
            n_classes = int(max(int(item.labels.max()) for item in data))
            if n_classes < 2:
                raise ValueError("--target classes needs masks with at least two class ids")
        config = network_config(args.arch, n_classes, target, not args.no_distance_head)
        bundle = new_bundle(
            config,
            Path(args.out).name.split(".")[0],
            target=target,
            seed=args.seed,
        )
        bundle.metadata["preprocess"]["invert"] = args.invert or "never"
    if args.no_distance_head and (args.init or target != "instances"):
        raise ValueError("--no-distance-head is for a new instance model (without --init)")
    if args.distance_head:
        if bundle.target != "instances":
            raise ValueError("--distance-head needs an instance model (--target instances)")
        if not bundle.config.distance_head:
            bundle = with_distance_head(bundle)
    bundle.metadata["pixel_size_um"] = _training_pixel_size(args.images, args.masks)
    if bundle.target == "classes":
        _store_class_style(bundle, args)
    elif args.class_names or args.class_colors:
        raise ValueError("--class-names/--class-colors need a class model (--target classes)")
    config = _train_config(args)
    printer = ProgressPrinter()
    checks.check_model_out(args.out, checks.model_bytes(bundle))
    side = checkpoint_path(args.out)
    side_before = side.stat().st_mtime_ns if side.exists() else None
    in_sample = None
    try:
        if args.init:
            run, in_sample = _fine_tune_run(bundle, data, val_data, config, args)
        else:
            run = train_iter(bundle, data, config, val_data, args.out)
        result = run_to_end(run, printer)
    except KeyboardInterrupt as exc:
        exc.detail = checks.interrupted_training(Path(args.out), side, side_before)
        raise
    summary = {
        "model": str(args.out),
        "steps": result.steps,
        "epochs": round(result.epochs, 2),
        "seconds": round(result.seconds, 1),
        "best_validation": result.best_metric,
        # --init: whether that validation ran on the training pairs themselves
        **({"validation_in_sample": in_sample} if in_sample is not None else {}),
        "diameter": result.bundle.diameter,
        "postprocess": result.bundle.postprocess,
        **({"start_choice": choice.to_dict()} if choice is not None else {}),
    }
    print(json.dumps(checks.json_safe(summary), indent=2))
    return 0


def _fill_defaults(args) -> None:
    """Budget and validation share left out: the fine-tune recipe's with ``--init``, a new
    model's (10 minutes, 0.1) without."""
    if args.minutes is None and args.epochs is None:
        args.minutes = DEFAULTS.minutes if args.init else 10.0
    if args.val_fraction is None:
        args.val_fraction = DEFAULTS.val_fraction if args.init else 0.1


def _train_config(args) -> TrainConfig:
    """The run's options: with ``--init`` the fine-tune recipe's
    (:func:`segloop.core.finetune.recipe_config`, what the Train button runs), else a new
    model's defaults; options given on the command line win either way."""
    from .core.finetune import recipe_config
    from .core.training import TrainConfig

    given = {
        "crop": args.crop,
        "batch_size": args.batch,
        "learning_rate": args.lr,
        "dice_weight": args.dice_weight,
    }
    options = {
        "minutes": args.minutes,
        "epochs": args.epochs,
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "target_diameter": _train_diameter(args.diameter),
        "device": args.device,
        "augment": _train_augment(args),
        "use_weight_map": not args.no_weight_map,
        **{key: value for key, value in given.items() if value is not None},
    }
    if args.init:
        return recipe_config(**options)
    scratch = {"dice_weight": DEFAULTS.dice_weight_scratch, "crop": 256, "batch_size": 4}
    return TrainConfig(**{"learning_rate": DEFAULTS.learning_rate_scratch, **scratch, **options})


def _training_pixel_size(images: str, masks: str) -> float | None:
    """Median pixel size (µm) of the training images, if every file records one."""
    import statistics

    from .core.datasets import pair_files
    from .core.units import read_pixel_size

    sizes = [read_pixel_size(image) for image, _mask in pair_files(images, masks)]
    if not sizes or not all(sizes):
        return None
    return round(statistics.median((y * x) ** 0.5 for y, x in sizes), 6)


def _choose_start(data, val_data, args):
    """``--init auto``: hold out the validation pairs first, then pick the shipped model
    that outlines the training pairs best (:mod:`segloop.core.start_choice`)."""
    from .core.finetune import split_corrections
    from .core.progress import run_to_end
    from .core.start_choice import choose_start_iter

    if args.target != "instances":
        raise ValueError(
            "--init auto picks among the shipped instance models: use --target instances"
        )
    for given, option in (
        (args.invert is not None, "--invert"),
        (args.diameter != "auto", "--diameter"),
        (args.no_distance_head, "--no-distance-head"),
        (bool(args.class_names or args.class_colors), "--class-names/--class-colors"),
    ):
        if given:  # refused before the choice, which takes seconds per model
            raise ValueError(
                f"--init auto scores each shipped model with its own settings: leave out "
                f"{option}, or name the start model (--init nuclei, cells, ...)"
            )
    if val_data is None:
        data, val_data = split_corrections(data, None, args.seed, args.val_fraction)
    choice = run_to_end(choose_start_iter(data), ProgressPrinter())
    scores = ", ".join(f"{name} {score['seg']:.3f}" for name, score in choice.scores.items())
    print(
        f"--init auto: starting from {choice.name} (SEG on the training pairs: {scores})",
        file=sys.stderr,
    )
    return data, val_data, choice


def _fine_tune_run(bundle, data, val_data, config, args):
    """``train --init``: the fine-tune service's recipe (split rule, replay, scale rule,
    post-processing checked on the training pairs when none are held out)."""
    from .core.finetune import adapt_iter, check_plan, replay_sample, split_corrections

    if val_data is None:
        data, val_data = split_corrections(data, None, args.seed, config.val_fraction)
    replay = replay_sample(bundle, len(data), DEFAULTS.replay_fraction, args.seed)
    check_set, config, in_sample = check_plan(data, val_data, config)
    return adapt_iter(bundle, data, check_set, config, replay, out_path=args.out), in_sample


def _store_class_style(bundle, args) -> None:
    """Put --class-names/--class-colors (or kept/default ones) into the model metadata."""
    from .core.classes import class_style_metadata, parse_class_names

    names = parse_class_names(args.class_names) or bundle.metadata.get("class_names")
    colors = args.class_colors.split(",") if args.class_colors else None
    colors = colors or bundle.metadata.get("class_colors")
    try:
        bundle.metadata.update(class_style_metadata(bundle.config.n_classes, names, colors))
    except ValueError as exc:
        raise ValueError(f"--class-names/--class-colors: {exc}") from None


def add_train_command(sub: argparse._SubParsersAction) -> None:
    """Register ``train`` on the ``segloop`` parser."""
    train = sub.add_parser("train", help="train or fine-tune a model on image/mask folders")
    train.add_argument("--images", required=True)
    train.add_argument(
        "--masks",
        required=True,
        help="instance labels (0 = background), same file names as --images",
    )
    train.add_argument("--out", required=True, help="model file to write (.safetensors)")
    train.add_argument(
        "--arch", default="unet", choices=["unet", "unet-classic", "segnet", "segnet-classic"]
    )
    budget = train.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes",
        type=checks.number("--minutes", 0.0, checks.MAX_MINUTES, low_open=True),
        default=None,
        help="wall-clock budget in minutes (default 10; with --init the fine-tune "
        f"recipe's, {DEFAULTS.minutes:g})",
    )
    budget.add_argument("--epochs", type=checks.integer("--epochs", 1, checks.MAX_EPOCHS))
    train.add_argument(
        "--init",
        default=None,
        help="start from this model (fine-tune): a shipped model's name, a model file, or "
        "'auto' (the shipped instance model that segments the training pairs best; a "
        "file named auto is ./auto)",
    )
    train.add_argument("--seed", type=checks.integer("--seed", *checks.SEED_RANGE), default=0)
    train.add_argument("--target", default="instances", choices=["instances", "classes"])
    train.add_argument(
        "--class-names",
        default=None,
        help="with --target classes: names of class ids 1..K, comma-separated "
        "(stored in the model; default 'class 1', 'class 2', ...)",
    )
    train.add_argument(
        "--class-colors",
        default=None,
        help="with --target classes: #rrggbb colours of class ids 1..K, comma-separated",
    )
    train.add_argument("--val-images", default=None)
    train.add_argument("--val-masks", default=None)
    train.add_argument(
        "--val-fraction",
        type=checks.number("--val-fraction", 0.0, 0.9),
        default=None,
        help="share of the pairs held out for validation (default 0.1; with --init the "
        f"fine-tune recipe's, {DEFAULTS.val_fraction:g}; with --init, when nothing is held "
        "out, post-processing is checked and tuned on the training pairs, as the Train "
        "button does)",
    )
    train.add_argument(
        "--crop",
        type=checks.integer("--crop", *checks.CROP_RANGE),
        default=None,
        help="crop side (default 256; with --init the fine-tune recipe's)",
    )
    train.add_argument(
        "--batch",
        type=checks.integer("--batch", *checks.BATCH_RANGE),
        default=None,
        help="crops per step (default 4; with --init the fine-tune recipe's)",
    )
    train.add_argument(
        "--lr",
        type=checks.number("--lr", 0.0, 10.0, low_open=True),
        default=None,
        help=f"learning rate (default {DEFAULTS.learning_rate_scratch:g}; with --init the "
        "fine-tune recipe's)",
    )
    train.add_argument(
        "--diameter",
        type=checks.diameter("--diameter", ("auto", "none")),
        default="auto",
        help="rescale training pairs so objects are this many pixels across; "
        "'auto' (default): only when objects are < 12 or > 45 px, or as "
        "the --init model was trained; 'none': native scale",
    )
    train.add_argument("--invert", default=None, choices=["never", "auto", "always"])
    train.add_argument("--device", type=checks.device, default="auto")
    augment = train.add_mutually_exclusive_group()
    augment.add_argument("--no-augment", action="store_true")
    augment.add_argument(
        "--shift-augment",
        action="store_true",
        help="add the augmentations for other labs' images: zoom 0.6-1.6x, defocus blur, "
        "inversion, shot noise (as the shipped nuclei/cells models)",
    )
    train.add_argument("--no-weight-map", action="store_true")
    train.add_argument(
        "--dice-weight",
        type=checks.number("--dice-weight", 0.0, 100.0),
        default=None,
        help="weight of a soft Dice term added to the weighted cross-entropy (default "
        f"{DEFAULTS.dice_weight_scratch:g}, with --init {DEFAULTS.dice_weight:g}; 0 turns it off)",
    )
    head = train.add_mutually_exclusive_group()
    head.add_argument(
        "--distance-head",
        action="store_true",
        help="instance models: also learn each pixel's distance to its object's edge and "
        "seed touching objects from it (the default for a new instance model; added to an "
        "--init model that lacks one)",
    )
    head.add_argument(
        "--no-distance-head",
        action="store_true",
        help="a new instance model without the distance head (3 classes only)",
    )
    train.set_defaults(func=cmd_train)
