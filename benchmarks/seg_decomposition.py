"""Where does a fine-tuned version lose its SEG: in the foreground or in the seeds?

For every kept fine-tuned version (``finetune_modalities.py --keep DIR``; the modality
is read from the file name) the frames ``finetune_modalities.py`` scores are segmented
with the version's defaults, and three outlines are scored against the ground truth:

- ``actual``: the version's instances;
- ``true_seeds``: one seed per true object (its deepest pixel) inside the version's
  foreground, grown by a watershed on its seed map (``instances.seed_map_of``): the
  version's foreground with perfect seeds, so what better seeding or splitting could
  reach;
- ``true_foreground``: the version's objects grown over the true foreground (and cut to
  it): its own seeds and splits on a perfect foreground.

It also reports the version's foreground precision and recall (pixels), and SEG when
only the foreground threshold changes (the rest of its settings kept), to see whether a
threshold could close the gap. Every number is a diagnosis on the scored frames: none
of them chooses a default.

    python benchmarks/seg_decomposition.py --keep /tmp/versions [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from finetune_modalities import MODALITIES, kept_version  # same folder: benchmarks/
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from segloop.core.instances import instances_from_probabilities, seed_map_of
from segloop.core.metrics import seg_counts
from segloop.core.modelio import load_model
from segloop.core.passes import instance_settings
from segloop.core.segment import SegmentOptions, segment

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "seg_decomposition.json"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def deepest_pixels(labels: np.ndarray) -> np.ndarray:
    """One marker per object, at the pixel farthest from its edge."""
    depth = ndi.distance_transform_edt(labels > 0)
    markers = np.zeros_like(labels)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        inside = np.where(labels[box] == index, depth[box], -1.0)
        row, col = np.unravel_index(np.argmax(inside), inside.shape)
        markers[box][row, col] = index
    return markers


def decompose(path: Path, frames) -> dict:
    """The scores above for one version on its modality's scored frames."""
    bundle = load_model(path)
    sums: dict = defaultdict(lambda: [0.0, 0])  # key -> [sum of Jaccards, true objects]
    hits = predicted = true = 0

    def add(key, reference: np.ndarray, labels: np.ndarray) -> None:
        jaccard, n_true = seg_counts(reference, labels)
        sums[key][0] += jaccard
        sums[key][1] += n_true

    for item in frames:
        result = segment(bundle, item.image)
        found, reference = result.instances, item.labels
        mask, truth = found > 0, reference > 0
        hits += int((mask & truth).sum())
        predicted += int(mask.sum())
        true += int(truth.sum())
        landscape = -seed_map_of(result.probabilities, 0.0, result.distance)
        seeded = watershed(landscape, np.where(mask, deepest_pixels(reference), 0), mask=mask)
        grown = watershed(ndi.distance_transform_edt(~mask), np.where(truth, found, 0), mask=truth)
        for key, labels in (("actual", found), ("true_seeds", seeded), ("true_foreground", grown)):
            add(key, reference, labels)
        area_scale = 1.0 / result.scale_factors[0] ** 2
        for threshold in THRESHOLDS:
            settings = instance_settings(bundle, SegmentOptions(fg_threshold=threshold), area_scale)
            labels = instances_from_probabilities(
                result.probabilities, **settings, distance=result.distance
            )
            add(threshold, reference, labels)
    seg = {key: round(total / max(count, 1), 3) for key, (total, count) in sums.items()}
    row = {key: seg[key] for key in ("actual", "true_seeds", "true_foreground")}
    row["foreground_precision"] = round(hits / max(predicted, 1), 3)
    row["foreground_recall"] = round(hits / max(true, 1), 3)
    row["fg_threshold"] = bundle.postprocess["fg_threshold"]
    row["seg_by_fg_threshold"] = {str(t): seg[t] for t in THRESHOLDS}
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = json.loads(args.out.read_text()) if args.out.exists() else {}
    for folder in args.keep:
        for path in sorted(folder.glob("*.safetensors")):
            modality = kept_version(path)[2]
            row = decompose(path, MODALITIES[modality][1]())
            rows[path.name] = {"modality": modality, **row}
            print(path.name, json.dumps(rows[path.name]), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
