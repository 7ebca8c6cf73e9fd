"""A frame-relative ``min_peak``: does it stop fine-tuned versions from dropping every
object of a frame whose distance peaks came out low?

``min_peak`` drops objects whose distance-head peak is below it (0.5 for `nuclei` and
`cells`). A version fine-tuned on two frames can predict lower peaks on new frames (E.
coli rods: 0.3-0.5), and then loses nearly every object. The rule tried lowers the
threshold per frame to ``RELATIVE x`` the 90th percentile of the frame's object peaks
when that is lower: ``min(min_peak, relative * q90(peaks))``. The kept fine-tuned
versions are scored with and without it (same weights, same frames):

    python benchmarks/relative_peak.py base /tmp/keep/*.safetensors
    python benchmarks/relative_peak.py --relative 0.6 rel0.6 /tmp/keep/*.safetensors

Rows (one JSON line per version) go to stdout; docs/results/relative_peak.json holds the
2026-12-07 run on the 14 versions of the shipped recipe (7 modalities x seeds 0, 1).
The rule is applied by replacing :func:`segloop.core.instances.drop_weak_objects` in this
process only; the package does not have it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from finetune_modalities import MODALITIES, score  # same folder: benchmarks/

from segloop.core import instances


def relative_drop(relative: float):
    """``drop_weak_objects`` with the frame-relative threshold."""

    def drop(labels: np.ndarray, values: np.ndarray, min_peak: float) -> np.ndarray:
        if min_peak <= 0 or labels.max(initial=0) == 0:
            return labels
        peaks = instances.object_peaks(labels, values)
        threshold = min(min_peak, relative * float(np.quantile(peaks, 0.9)))
        keep = np.concatenate([[False], peaks >= threshold])
        return instances.remove_small(np.where(keep[labels], labels, 0), 0)

    return drop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("label")
    parser.add_argument("versions", nargs="+", type=Path)
    parser.add_argument("--relative", type=float, default=0.0)
    args = parser.parse_args()
    if args.relative > 0:
        instances.drop_weak_objects = relative_drop(args.relative)
    for path in args.versions:
        modality = next(m for m in MODALITIES if f"_{m}_" in path.name)
        _, scored = (make() for make in MODALITIES[modality])
        row = {"label": args.label, "version": path.name, "modality": modality}
        print(json.dumps({**row, **score(path, scored)}), flush=True)


if __name__ == "__main__":
    main()
