"""Evaluate the shipped `nuclei` model on the fixed DSB2018 test split, against a classical
scikit-image baseline, per modality, on images with many touching nuclei, and on the same
images rescaled by 0.5x and 2x (with --diameter auto).

    python benchmarks/nuclei_eval.py [--model nuclei] [--scales 0.5 2]

Touching-heavy images: connected components of the true foreground recover < 80 % of
the nuclei. Results go to docs/results/nuclei_eval.json.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from segloop.core.datasets import load_pairs
from segloop.core.evaluation import LabelledImage, evaluate_iter
from segloop.core.imageio import prepare_image
from segloop.core.instances import split_touching
from segloop.core.metrics import MatchCounts, count_error, match_instances
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.scale import rescale_labels, rescale_raw_image
from segloop.core.segment import SegmentOptions

ROOT = Path(__file__).resolve().parents[1]
DSB = ROOT.parent / "shared" / "data" / "dsb2018_stage1_train_fixed"


def baseline(image: np.ndarray) -> np.ndarray:
    """Otsu threshold + distance-transform watershed (bright-background images inverted);
    min_distance picked on the validation split (F1 0.60, 0.66, 0.69, 0.70 for 5, 7, 9, 12)."""
    gray = prepare_image(image, invert="auto")
    mask = gray > threshold_otsu(gray)
    mask = ndi.binary_opening(mask, iterations=1)
    return split_touching(mask, min_distance=12, min_size=15)  # best of 5,7,9,12 on val


def summarise(counts: MatchCounts, errors: list[float]) -> dict:
    return {
        **{k: round(v, 4) for k, v in counts.as_dict().items() if isinstance(v, float)},
        "tp": counts.tp,
        "fp": counts.fp,
        "fn": counts.fn,
        "median_count_error": round(float(np.median(errors)), 4) if errors else None,
        "n_images": len(errors),
    }


def touching_ratio(labels: np.ndarray) -> float:
    n = len(np.unique(labels)) - 1
    return ndi.label(labels > 0)[1] / n if n else 1.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--part", default="test", choices=["val", "test"])
    parser.add_argument("--scales", type=float, nargs="*", default=[0.5, 2.0])
    parser.add_argument("--limit", type=int, default=None, help="first N images of the part")
    parser.add_argument(
        "--diameters", nargs="+", default=["none", "auto"], help="for the rescaled copies"
    )
    parser.add_argument("--out", default="docs/results/nuclei_eval.json")
    args = parser.parse_args()
    split = json.loads((ROOT / "scripts" / "splits" / "nuclei.json").read_text())
    kinds = {
        r["id"] + ".png": r["heuristic_type"] for r in csv.DictReader((DSB / "metadata.csv").open())
    }
    wanted = set(split[args.part])
    data = [d for d in load_pairs(DSB / "images", DSB / "masks") if d.name in wanted]
    data = data[: args.limit] if args.limit else data
    bundle = load_model(args.model)
    report = run_to_end(evaluate_iter(bundle, data, SegmentOptions()))
    rows = {r["name"]: r for r in report.per_image}
    groups = {
        "all": [d.name for d in data],
        "touching (CC/n < 0.8)": [d.name for d in data if touching_ratio(d.labels) < 0.8],
    }
    for kind in sorted(set(kinds[d.name] for d in data)):
        groups[kind] = [d.name for d in data if kinds[d.name] == kind]
    result = {"model": args.model, "part": args.part, "groups": {}}
    base_counts, base_errors = {}, {}
    for d in data:
        pred = baseline(d.image)
        base_counts[d.name] = match_instances(d.labels, pred)
        base_errors[d.name] = count_error(d.labels, pred)
    for group, names in groups.items():
        model_counts = sum(
            (
                MatchCounts(rows[n]["tp"], rows[n]["fp"], rows[n]["fn"], rows[n]["sum_iou"])
                for n in names
            ),
            MatchCounts(0, 0, 0, 0.0),
        )
        model_errors = [
            abs(rows[n]["n_pred"] - rows[n]["n_true"]) / max(rows[n]["n_true"], 1) for n in names
        ]
        result["groups"][group] = {
            "segloop": summarise(model_counts, model_errors),
            "otsu_watershed": summarise(
                sum((base_counts[n] for n in names), MatchCounts(0, 0, 0, 0.0)),
                [base_errors[n] for n in names],
            ),
        }
    result["pixel_iou"] = round(report.pixel_iou, 4)
    for scale in args.scales:
        scaled = [
            LabelledImage(
                rescale_raw_image(d.image, scale), rescale_labels(d.labels, scale), d.name
            )
            for d in data
        ]
        for name in args.diameters:
            options = SegmentOptions(diameter=None if name == "none" else name)
            rep = run_to_end(evaluate_iter(bundle, scaled, options))
            result[f"scale {scale} diameter {name}"] = rep.summary()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
