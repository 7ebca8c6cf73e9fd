"""Fit a shipped model's learned size estimate (:mod:`segloop.core.size_model`) and store
it in the model file; the weights are not touched.

    python scripts/fit_size_model.py nuclei [--weights MODEL] [--out PATH] [--dry-run]

Training frames: every image of the model's ``train`` split (scripts/splits/<model>.json)
at its own scale and at three scales drawn log-uniformly from 0.3x-8x (seeded), each cut
to the central 768/scale pixels before rescaling, so that the rescaled frame holds the
3x3 crops the features are averaged over. The ridge penalty is chosen on the ``val``
split, each image cut to its central 340 px and rescaled 0.33x-6x (as
``benchmarks/scale_robustness.py`` does): the smallest mean absolute log error.
The ``test`` split is not read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from segloop.core.imageio import prepare_image
from segloop.core.modelio import load_model, save_model
from segloop.core.scale import estimate_diameter, rescale_raw_image
from segloop.core.size_model import (
    CROP,
    MAX_CROPS_PER_SIDE,
    fit_size_model,
    predict_diameter,
    style_features,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from scale_robustness import CUT, _central  # noqa: E402
from training_data import MODELS_DIR, RECIPES, load_split  # noqa: E402

VAL_SCALES = (0.33, 0.5, 1.0, 2.0, 4.0, 6.0)
TRAIN_SCALE_RANGE = (0.3, 8.0)
RIDGES = (1.0, 3.0, 10.0, 30.0, 100.0)


def frame_features(bundle, image: np.ndarray, labels: np.ndarray, scale: float, cut: bool):
    """Features and true median diameter (px after rescaling) of one image at ``scale``."""
    if cut:  # only what the crops will see, so that 8x stays small
        side = math.ceil(MAX_CROPS_PER_SIDE * CROP / scale)
        height, width = labels.shape
        y0, x0 = max(0, (height - side) // 2), max(0, (width - side) // 2)
        window = (slice(y0, y0 + side), slice(x0, x0 + side))
        image, labels = image[window], labels[window]
    diameter = estimate_diameter(labels, area_weighted=True) * scale
    pre = bundle.preprocess
    low, high = pre["percentiles"]
    frame = prepare_image(rescale_raw_image(image, scale), invert=pre["invert"], low=low, high=high)
    return style_features(bundle.network, frame), diameter


def collect(bundle, data, scales_of, cut: bool):
    features, diameters, scales = [], [], []
    start = time.monotonic()
    for index, item in enumerate(data):
        for scale in scales_of(index):
            row, diameter = frame_features(bundle, item.image, item.labels, scale, cut)
            features.append(row)
            diameters.append(diameter)
            scales.append(scale)
        if index % 100 == 0:
            print(f"  {index}/{len(data)} images, {time.monotonic() - start:.0f} s", flush=True)
    return np.array(features), np.array(diameters), np.array(scales)


def log_errors(size_model: dict, features: np.ndarray, diameters: np.ndarray) -> np.ndarray:
    estimates = [predict_diameter(size_model, row) for row in features]
    return np.log(estimates) - np.log(diameters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=["nuclei"])
    parser.add_argument(
        "--weights", type=Path, default=None, help="model file to fit (default: the shipped one)"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the --weights file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="fit and report, save nothing")
    args = parser.parse_args(argv)
    path = args.weights or MODELS_DIR / f"{args.model}.safetensors"
    bundle = load_model(path)
    split = load_split(args.model, RECIPES[args.model])
    rng = np.random.default_rng(args.seed)
    low, high = np.log(TRAIN_SCALE_RANGE)
    drawn = [[1.0, *np.exp(rng.uniform(low, high, 3))] for _ in split["train"]]
    print(f"train: {len(split['train'])} images x 4 scales")
    train = collect(bundle, split["train"], lambda i: drawn[i], cut=True)
    print(f"val: {len(split['val'])} images x {len(VAL_SCALES)} scales")
    val_images = [_central(item, CUT) for item in split["val"]]
    val = collect(bundle, val_images, lambda i: VAL_SCALES, cut=False)
    results = {}
    for ridge in RIDGES:
        fitted = fit_size_model(train[0], train[1], ridge)
        errors = log_errors(fitted, val[0], val[1])
        keep = np.isfinite(errors)
        results[ridge] = (float(np.mean(np.abs(errors[keep]))), fitted, errors)
        print(f"ridge {ridge}: val mean |log error| {results[ridge][0]:.3f}")
    ridge = min(results, key=lambda r: results[r][0])
    mae, fitted, errors = results[ridge]
    per_scale = {}
    for scale in VAL_SCALES:
        chosen = (val[2] == scale) & np.isfinite(errors)
        part = errors[chosen]
        per_scale[str(scale)] = {
            "median_ratio": round(float(np.exp(np.median(part))), 3),
            "within_1.5x": round(float(np.mean(np.abs(part) < math.log(1.5))), 3),
        }
    fitted.update(
        ridge=ridge,
        fitted_on=f"{args.model} train split: {len(split['train'])} images x 4 scales "
        f"(1x and 3 drawn from {TRAIN_SCALE_RANGE[0]}-{TRAIN_SCALE_RANGE[1]}x, seed "
        f"{args.seed})",
        val_mean_abs_log_error=round(mae, 4),
        val_by_scale=per_scale,
    )
    print(f"chosen ridge {ridge}:", json.dumps(per_scale))
    if args.dry_run:
        return 0
    bundle.metadata["size_model"] = fitted
    out = save_model(bundle, args.out or path, half=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
