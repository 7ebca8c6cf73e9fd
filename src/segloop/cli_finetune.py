"""``segloop project`` and ``segloop finetune``: the Fine-tune widget's loop, headless.

``segloop project add`` stores corrected frames in a project folder exactly as the
widget's *Save corrections* does; ``segloop finetune`` runs exactly what its *Train*
button runs (:func:`segloop.core.finetune.finetune_iter` with the same request).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _project(folder: str, base_model: str | None = None, create: bool = True):
    """The project in ``folder``; with ``create`` False a folder that holds no project is
    an error (a mistyped path must not look like an empty project, nor be created)."""
    from .core.project import Project

    root = Path(folder).expanduser()
    if not create and not ((root / "project.json").is_file() or (root / "corrections").is_dir()):
        raise OSError(
            f"--project {folder}: no project there (create one with `segloop project add`)"
        )
    try:
        return Project(Path(folder).expanduser(), base_model)
    except (OSError, ValueError) as exc:
        raise OSError(f"--project {folder}: cannot use this folder ({exc})") from None


def cmd_project_add(args) -> int:
    from .core.imageio import read_image, read_label_image, validate_image
    from .core.project import parse_frames

    image = read_image(args.image)
    validate_image(image, str(args.image))
    labels = read_label_image(args.labels)  # a palette PNG gives its indices
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):
        raise ValueError(f"{args.labels}: labels must be a label image, not RGB colours")
    if labels.dtype.kind not in "iu" or labels.ndim not in (2, 3):
        raise ValueError(f"{args.labels}: labels must be a 2-D or (T, H, W) integer image")
    colour = image.ndim == labels.ndim + 1 and image.shape[-1] in (3, 4)
    # colour frames are stored as they are: the fine-tune chooses how they become grey
    if (image.shape[:-1] if colour else image.shape) != labels.shape:
        raise ValueError(
            f"{args.image} is {image.shape} but {args.labels} is {labels.shape}: "
            "the labels must be drawn on this image"
        )
    name = args.name or Path(args.image).name.split(".")[0]
    stack = labels.ndim == 3
    frames = parse_frames(args.frames or "all", labels.shape[0]) if stack else [None]
    if not stack and args.frames is not None:
        parse_frames(args.frames, 1)  # a 2-D image is frame 0 of a one-frame stack
    project = _project(args.project)
    saved, skipped = [], []
    for frame in frames:
        frame_labels = labels if frame is None else labels[frame]
        if not frame_labels.any():
            skipped.append(frame)
            continue
        frame_image = image if frame is None else image[frame]
        ident = project.add_correction(
            frame_image,
            frame_labels.astype("int64"),
            name,
            source=str(Path(args.image).resolve()),
            frame=frame,
            sparse=args.sparse,
        )
        saved.append(ident)
    if not saved:
        raise ValueError(f"{args.labels}: the labels are empty (no object in the chosen frames)")
    for ident in saved:
        print(ident)
    return 0


def cmd_project_list(args) -> int:
    project = _project(args.project, create=False)
    rows = []
    for ident in project.correction_ids():
        info = project.correction_info(ident)
        rows.append({"id": ident, **info, "history": len(project.history(ident))})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mode = "sparse" if row.get("sparse") else "dense"
        print(
            f"{row['id']:<30} {row.get('n_objects', 0):>5} objects  {mode:<6} "
            f"{row.get('origin', 'user'):<5} saved {row.get('saved', '')}  "
            f"{row['history']} earlier"
        )
    return 0


def _version_row(version) -> dict[str, Any]:
    record = version.finetune
    metrics = record.get("metrics", {})
    return {
        "version": version.version,
        "path": str(version.path),
        "base": record.get("base"),
        "trained_on": record.get("trained_on", []),
        "validated_on": record.get("validated_on", []),
        "steps": record.get("steps"),
        "seconds": record.get("seconds"),
        "stopped": bool(record.get("stopped")),
        "before": metrics.get("before", {}),
        "after": metrics.get("after", {}),
    }


def cmd_project_versions(args) -> int:
    project = _project(args.project, create=False)
    rows = [_version_row(v) for v in project.versions()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        after = (row["after"] or {}).get("corrections") or {}
        score = f"F1 {after['f1']:.3f}" if after.get("f1") is not None else ""
        print(
            f"v{row['version']:<4} {len(row['trained_on'])} images  {row['steps']} steps  "
            f"{row['seconds']} s  {score}  {row['path']}"
        )
    return 0


def finetune_request(args, project) -> Any:
    """The :class:`FinetuneRequest` of ``segloop finetune``'s options (the widget builds
    its own with the same :func:`~segloop.core.finetune.build_request`)."""
    from .core.finetune import build_request

    return build_request(
        args.init or project.base_model or "nuclei",
        minutes=args.minutes,
        epochs=args.epochs,
        learning_rate=args.lr,
        crop=args.crop,
        batch_size=args.batch,
        augment=not args.no_augment,
        weight_map=not args.no_weight_map,
        w0=args.w0,
        sigma=args.sigma,
        seed=args.seed,
        val_ids=[v for v in args.val.split(",") if v] if args.val is not None else None,
        replay_fraction=args.replay,
        arch=args.arch,
        target=args.target,
        class_names=args.class_names.split(",") if args.class_names else None,
        device=args.device,
    )


def cmd_finetune(args) -> int:
    from .cli import ProgressPrinter
    from .core.finetune import finetune_iter
    from .core.progress import run_to_end

    project = _project(args.project, create=False)
    if not project.correction_ids():
        raise ValueError(
            f"--project {args.project}: no corrections saved yet; add some with "
            "`segloop project add`"
        )
    request = finetune_request(args, project)
    unknown = sorted(set(request.val_ids or []) - set(project.correction_ids()))
    if unknown:
        raise ValueError(f"--val: no correction {unknown[0]!r} in {args.project}")
    result = run_to_end(finetune_iter(project, request), ProgressPrinter())
    if result.version is None:
        raise RuntimeError("training stopped before its first step; no version was saved")
    record = result.version.finetune
    metadata = result.version.metadata
    print(
        json.dumps(
            {
                "version": result.version.version,
                "model": str(result.version.path),
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "trained_on": record["trained_on"],
                "validated_on": record["validated_on"],
                "metrics": record["metrics"],
                **({"start_choice": record["start_choice"]} if record.get("start_choice") else {}),
                **({"colour_choice": colour} if (colour := metadata.get("colour_choice")) else {}),
            },
            indent=2,
        )
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``project`` and ``finetune`` on the ``segloop`` parser."""
    from . import cli_checks as checks
    from .core.recipe import ARCHITECTURES, AUTO_START, DEFAULTS, SCRATCH, TARGETS

    project = sub.add_parser("project", help="store corrections; list corrections and versions")
    actions = project.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="store a corrected image (or frames of a stack)")
    add.add_argument("--project", required=True, help="project folder (created if needed)")
    add.add_argument("image", help="the image (2-D, 2-D + channels, or a T x H x W stack)")
    add.add_argument("labels", help="corrected labels of the same size (0 = background)")
    add.add_argument(
        "--sparse",
        action="store_true",
        help="label 0 means unlabelled (ignored by training), not background",
    )
    add.add_argument("--frames", default=None, help="stack frames: all (default), 3,5,9 or 2-6")
    add.add_argument("--name", default=None, help="correction name (default: the image's)")
    add.set_defaults(func=cmd_project_add)
    for action, func, text in (
        ("list", cmd_project_list, "list the saved corrections"),
        ("versions", cmd_project_versions, "list the trained versions"),
    ):
        listing = actions.add_parser(action, help=text)
        listing.add_argument("--project", required=True)
        listing.add_argument("--json", action="store_true")
        listing.set_defaults(func=func)

    tune = sub.add_parser(
        "finetune", help="train on every correction of a project (what the Train button runs)"
    )
    tune.add_argument("--project", required=True)
    tune.add_argument(
        "--init",
        default=None,
        help=f"model to start from (shipped name or file; default: the project's base model, "
        f"else nuclei), '{AUTO_START}' for the shipped model that segments the corrections "
        f"best before training (each is scored on them), or '{SCRATCH}' for a new network",
    )
    budget = tune.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes",
        type=checks.number("--minutes", 0.0, checks.MAX_MINUTES, low_open=True),
        default=None,
        help=f"budget (default {DEFAULTS.minutes:g})",
    )
    budget.add_argument("--epochs", type=checks.integer("--epochs", 1, checks.MAX_EPOCHS))
    tune.add_argument("--seed", type=checks.integer("--seed", *checks.SEED_RANGE), default=0)
    tune.add_argument(
        "--lr",
        type=checks.number("--lr", 0.0, 10.0, low_open=True),
        default=None,
        help=f"learning rate (default {DEFAULTS.learning_rate:g})",
    )
    tune.add_argument(
        "--crop",
        type=checks.integer("--crop", *checks.CROP_RANGE),
        default=None,
        help=f"crop side (default {DEFAULTS.crop})",
    )
    tune.add_argument(
        "--batch",
        type=checks.integer("--batch", *checks.BATCH_RANGE),
        default=None,
        help=f"crops per step (default {DEFAULTS.batch_size})",
    )
    tune.add_argument(
        "--val",
        default=None,
        help="comma-separated correction ids held out for validation ('' for none); "
        "default: none held out (post-processing is checked and tuned on the corrections "
        "trained on)",
    )
    tune.add_argument(
        "--replay",
        type=checks.number("--replay", 0.0, 100.0),
        default=None,
        help=f"replay images of the start model per correction (default "
        f"{DEFAULTS.replay_fraction:g})",
    )
    tune.add_argument("--arch", default="unet", choices=ARCHITECTURES, help="with --init scratch")
    tune.add_argument("--target", default="instances", choices=TARGETS, help="with --init scratch")
    tune.add_argument("--class-names", default=None, help="with --target classes")
    tune.add_argument("--no-augment", action="store_true", help="no flips/elastic/intensity")
    tune.add_argument("--no-weight-map", action="store_true", help="plain cross-entropy")
    tune.add_argument("--w0", type=checks.number("--w0", 0.0, 1e6), default=10.0)
    tune.add_argument("--sigma", type=checks.number("--sigma", 0.01, 1e4), default=5.0)
    tune.add_argument("--device", type=checks.device, default="auto")
    tune.set_defaults(func=cmd_finetune)
