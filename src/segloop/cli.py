"""segloop command line: segment, count and retrain cells (one sub-command per job).

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
from .cli_train import add_train_command

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
        colour=args.colour,
    )


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

    inputs = _inputs(args.inputs)
    outputs = [("--csv", Path(args.csv)), ("--csv (its .json side file)", Path(f"{args.csv}.json"))]
    if args.objects:
        outputs += [
            ("--objects", Path(args.objects)),
            ("--objects (its .json side file)", Path(f"{args.objects}.json")),
        ]
    checks.check_outputs_spare_inputs(outputs, inputs)
    count_files(
        args.model,
        inputs,
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
    checks.check_outputs_spare_inputs([("--out", Path(args.out))], [Path(args.mask)])
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
    options = _segment_options(args)
    pixel_size = args.pixel_size or _common_pixel_size(args.images, args.masks, options)
    options = file_options(options, pixel_size, args.images)
    report = run_to_end(evaluate_iter(bundle, data, options), ProgressPrinter())
    summary = report.summary()
    if args.json:
        report_json = {"summary": summary, "per_image": report.per_image}
        print(json.dumps(checks.json_safe(report_json), indent=2, allow_nan=False))
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {value:.4f}" if isinstance(value, float) else f"{key:>20}: {value}")
    return 0


def _common_pixel_size(images, masks, options):
    """The pixel size the evaluated images record, when a diameter has a length unit
    (one ``--diameter`` for all of them, so they must agree)."""
    from .core.datasets import pair_files
    from .core.units import length_in_micrometres, read_pixel_size

    diameter = options.diameter
    if not isinstance(diameter, str) or diameter in ("auto", "native"):
        return None
    if length_in_micrometres(diameter) is None:
        return None
    sizes = {read_pixel_size(image) for image, _ in pair_files(images, masks)}
    if len(sizes) > 1:
        raise ValueError(
            f"{images}: the images record different pixel sizes, so --diameter {diameter} "
            "is not one size in pixels; give --pixel-size or a diameter in pixels"
        )
    return next(iter(sizes), None)


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
    size_model = metadata.get("size_model")
    if isinstance(size_model, dict) and isinstance(size_model.get("weights"), list):
        weights = f"{len(size_model['weights'])} regression weights (not shown)"
        metadata["size_model"] = {**size_model, "weights": weights}
    print(
        json.dumps({"path": str(path), "config": config.to_dict(), "metadata": metadata}, indent=2)
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (documented in README.md)."""
    from . import __version__

    parser = checks.CheckedParser(prog="segloop", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"segloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    add_train_command(sub)

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
