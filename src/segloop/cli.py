"""``segloop`` command line: train, predict, count, weightmap, evaluate, models, info.

The sub-commands and options documented in README.md are a contract that outside
tooling relies on: add options, never rename or remove them. Errors print one line,
``segloop: error: ...``, and exit with status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import cli_checks as checks
from .cli_options import add_chunk_options as _add_chunk_options
from .cli_options import add_segment_options as _add_segment_options
from .cli_progress import ProgressPrinter
from .core.recipe import DEFAULTS

EXIT_ERROR = 1


def _segment_options(args):
    from .core.segment import SegmentOptions
    from .core.units import length_in_micrometres

    diameter = args.diameter
    if diameter not in (None, "auto", "native"):
        try:
            if length_in_micrometres(diameter) is None:
                diameter = float(str(diameter).removesuffix("px"))
            # else: a length ("12um"), turned into pixels per file from its pixel size
        except ValueError:
            raise ValueError(
                f"--diameter must be a number of pixels, a length such as 12um, 'auto' or "
                f"'native', not {diameter!r}"
            ) from None
    return SegmentOptions(
        tile=args.tile,
        batch=args.batch,
        device=args.device,
        diameter=diameter,
        min_size=args.min_size,
        unknown_threshold=args.unknown_threshold,
        tta=args.tta,
    )


def _train_diameter(value: str) -> float | str | None:
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    return float(value)


def _train_augment(args):
    from .core.augment import AugmentConfig

    if args.no_augment:
        return AugmentConfig(flips=False, rot90=False, elastic=False, intensity=False, noise=False)
    return AugmentConfig.shift() if args.shift_augment else AugmentConfig()


def cmd_train(args) -> int:
    from dataclasses import replace

    from .core.datasets import load_pairs
    from .core.modelio import load_model, new_bundle, with_distance_head
    from .core.models import preset
    from .core.progress import run_to_end
    from .core.training import TrainConfig, checkpoint_path, train_iter

    if args.minutes is None and args.epochs is None:
        args.minutes = 10.0
    checks.check_model_out(args.out)
    checks.check_together(args, "--val-images", "--val-masks")
    data = load_pairs(args.images, args.masks)
    val_data = load_pairs(args.val_images, args.val_masks) if args.val_images else None
    if args.target == "classes":
        checks.check_class_ids(list(data) + list(val_data or []))
    target = args.target
    if args.init:
        bundle = load_model(args.init)
        parent = str(bundle.path)
        bundle.metadata.update(
            name=Path(args.out).name.split(".")[0],
            parent=parent,
            version=int(bundle.metadata.get("version", 0)) + 1,
        )
        if args.invert:
            bundle.metadata.setdefault("preprocess", {})["invert"] = args.invert
    else:
        n_classes = 3
        if target == "classes":
            n_classes = int(max(int(item.labels.max()) for item in data))
            if n_classes < 2:
                raise ValueError("--target classes needs masks with at least two class ids")
        config = preset(args.arch, n_classes=n_classes)
        if target == "instances" and DEFAULTS.distance_head and not args.no_distance_head:
            config = replace(config, distance_head=True)
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
    recipe = DEFAULTS if args.init else None  # --init fine-tunes with the Train button's recipe
    config = TrainConfig(
        minutes=args.minutes,
        epochs=args.epochs,
        crop=args.crop or (recipe.crop if recipe else 256),
        batch_size=args.batch or (recipe.batch_size if recipe else 4),
        learning_rate=args.lr or (recipe.learning_rate if recipe else 1e-3),
        seed=args.seed,
        val_fraction=args.val_fraction,
        target_diameter=_train_diameter(args.diameter),
        device=args.device,
        augment=_train_augment(args),
        use_weight_map=not args.no_weight_map,
    )
    printer = ProgressPrinter()
    checks.check_model_out(args.out, checks.model_bytes(bundle))
    side = checkpoint_path(args.out)
    side_before = side.stat().st_mtime_ns if side.exists() else None
    try:
        if args.init:
            run = _fine_tune_run(bundle, data, val_data, config, args)
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
        "diameter": result.bundle.diameter,
        "postprocess": result.bundle.postprocess,
    }
    print(json.dumps(checks.json_safe(summary), indent=2))
    return 0


def _training_pixel_size(images: str, masks: str) -> float | None:
    """Median pixel size (µm) of the training images, if every file records one."""
    import statistics

    from .core.datasets import pair_files
    from .core.units import read_pixel_size

    sizes = [read_pixel_size(image) for image, _mask in pair_files(images, masks)]
    if not sizes or not all(sizes):
        return None
    return round(statistics.median((y * x) ** 0.5 for y, x in sizes), 6)


def _fine_tune_run(bundle, data, val_data, config, args):
    """``train --init``: the fine-tune service's recipe (split rule, replay, scale rule)."""
    from .core.finetune import adapt_iter, replay_sample, split_corrections

    if val_data is None:
        data, val_data = split_corrections(data, None, args.seed, args.val_fraction)
    replay = replay_sample(bundle, len(data), DEFAULTS.replay_fraction, args.seed)
    return adapt_iter(bundle, data, val_data, config, replay, out_path=args.out)


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


def _inputs(paths: Sequence[str]) -> list[Path]:
    from .bigimage import is_zarr_path
    from .core.imageio import list_images

    zarrs = [Path(p) for p in paths if is_zarr_path(p)]
    others = [p for p in paths if not is_zarr_path(p)]
    return (list_images(others) if others else []) + zarrs


def cmd_predict(args) -> int:
    from .batch import ChunkOptions, predict_files

    checks.check_output_folder(args.out, "--out")
    chunking = ChunkOptions(args.chunk, args.halo, args.out_format, args.level)
    written = predict_files(
        args.model,
        _inputs(args.inputs),
        Path(args.out),
        _segment_options(args),
        probabilities=args.probabilities,
        dask=args.dask,
        progress=ProgressPrinter(),
        pixel_size=args.pixel_size,
        chunking=chunking,
    )
    for path in written:
        print(path)
    return 0


def cmd_count(args) -> int:
    from .batch_count import count_files

    checks.check_output_file(args.csv, "--csv")
    if args.objects:
        checks.check_output_file(args.objects, "--objects")
    from .batch import ChunkOptions

    count_files(
        args.model,
        _inputs(args.inputs),
        Path(args.csv),
        _segment_options(args),
        objects_csv=Path(args.objects) if args.objects else None,
        progress=ProgressPrinter(),
        pixel_size=args.pixel_size,
        chunking=ChunkOptions(args.chunk, args.halo, "tiff", args.level),
    )
    print(args.csv)
    return 0


def cmd_weightmap(args) -> int:
    from .core.datasets import load_labels
    from .core.imageio import write_tiff
    from .core.weightmap import weight_map

    checks.check_output_file(args.out, "--out")
    labels = load_labels(args.mask)
    write_tiff(args.out, weight_map(labels, w0=args.w0, sigma=args.sigma))
    print(args.out)
    return 0


def cmd_evaluate(args) -> int:
    from .batch import file_options
    from .core.datasets import load_pairs
    from .core.evaluation import evaluate_iter
    from .core.modelio import load_model
    from .core.progress import run_to_end

    bundle = load_model(args.model)
    data = load_pairs(args.images, args.masks)
    options = file_options(_segment_options(args), args.pixel_size, args.images)
    report = run_to_end(evaluate_iter(bundle, data, options), ProgressPrinter())
    summary = report.summary()
    if args.json:
        report_json = {"summary": summary, "per_image": report.per_image}
        print(json.dumps(checks.json_safe(report_json), indent=2, allow_nan=False))
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {value:.4f}" if isinstance(value, float) else f"{key:>20}: {value}")
    return 0


def cmd_models(args) -> int:
    from .core.modelio import read_header, shipped_models

    for name in shipped_models():
        _config, metadata, _path = read_header(name)
        print(f"{name:<12} {metadata.get('description', '')}")
    return 0


def cmd_info(args) -> int:
    from .core.modelio import read_header

    config, metadata, path = read_header(args.model)
    metadata.pop("history", None)
    print(
        json.dumps({"path": str(path), "config": config.to_dict(), "metadata": metadata}, indent=2)
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (documented in README.md)."""
    parser = checks.CheckedParser(prog="segloop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

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
        help="CPU time budget (default 10)",
    )
    budget.add_argument("--epochs", type=checks.integer("--epochs", 1, checks.MAX_EPOCHS))
    train.add_argument("--init", default=None, help="start from this model (fine-tune)")
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
        "--val-fraction", type=checks.number("--val-fraction", 0.0, 0.9), default=0.1
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
        help="learning rate (default 1e-3; with --init the fine-tune recipe's)",
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

    predict = sub.add_parser("predict", help="segment images; write instance and class TIFFs")
    _add_segment_options(predict)
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--probabilities",
        action="store_true",
        help="also write <stem>_probabilities.tif (float32, C x H x W) and, for models "
        "with a distance head, <stem>_distance.tif (float32, H x W)",
    )
    predict.add_argument(
        "--dask",
        type=checks.dask_address,
        default=None,
        help="dask.distributed scheduler address, or local:N for N local workers",
    )
    predict.add_argument(
        "--out-format",
        choices=("tiff", "zarr"),
        default="tiff",
        help="tiff (default; tiled BigTIFF for chunked inputs) or zarr (OME-Zarr, written "
        "chunk by chunk; a labels group inside an OME-Zarr input)",
    )
    _add_chunk_options(predict)
    predict.add_argument("inputs", nargs="+", help="image files, folders or .zarr")
    predict.set_defaults(func=cmd_predict)

    count = sub.add_parser("count", help="count objects per image/frame into a CSV")
    _add_segment_options(count)
    count.add_argument("--csv", required=True, help="per image/frame counts")
    count.add_argument("--objects", default=None, help="optional per-object table CSV")
    _add_chunk_options(count)
    count.add_argument("inputs", nargs="+", help="image files, folders or .zarr")
    count.set_defaults(func=cmd_count)

    wmap = sub.add_parser("weightmap", help="U-Net boundary weight map of a label image")
    wmap.add_argument("mask")
    wmap.add_argument("--out", required=True)
    wmap.add_argument("--w0", type=checks.number("--w0", 0.0, 1e6), default=10.0)
    wmap.add_argument("--sigma", type=checks.number("--sigma", 0.01, 1e4), default=5.0)
    wmap.set_defaults(func=cmd_weightmap)

    evaluate = sub.add_parser("evaluate", help="metrics of a model on image/mask folders")
    _add_segment_options(evaluate)
    evaluate.add_argument("--images", required=True)
    evaluate.add_argument("--masks", required=True)
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_evaluate)

    models = sub.add_parser("models", help="list shipped models")
    models.set_defaults(func=cmd_models)
    info = sub.add_parser("info", help="show a model's config and metadata")
    info.add_argument("model")
    info.set_defaults(func=cmd_info)
    from .cli_finetune import add_commands  # project, finetune

    add_commands(sub)
    # export --format bioimageio (issue #22): parser and command in bioimageio_export
    from .bioimageio_export import add_export_command

    add_export_command(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (SIGINT): the command stops and cleans up."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segloop`` console script."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == EXIT_ERROR:  # an option value refused by cli_checks (message printed)
            return EXIT_ERROR
        raise
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. called from a worker): no handler
        previous = None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        detail = getattr(exc, "detail", "")
        print(
            f"segloop: error: interrupted by {name}" + (f"; {detail}" if detail else ""),
            file=sys.stderr,
        )
        return 143 if name == "SIGTERM" else 130
    except MemoryError:
        print(
            "segloop: error: out of memory (try smaller images, --tile or --batch)", file=sys.stderr
        )
        return EXIT_ERROR
    except ImportError as exc:
        print(f"segloop: error: a module is missing: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, OSError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"segloop: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
