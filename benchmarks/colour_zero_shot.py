"""`nuclei` with each colour -> grey conversion, shipped defaults otherwise, on its DSB2018
colour validation images (what may choose its default) and on H&E (MICCAI 2015, internal
evaluation only: what ``--colour hematoxylin`` gives a user with H&E; chooses nothing).
Results go to docs/results/miccai_colour.json.

    python benchmarks/colour_zero_shot.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from scale_robustness import SETS, SHARED  # same folder: benchmarks/

from segloop.core.evaluation import evaluate_iter
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.segment import SegmentOptions

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "miccai_colour.json"


def dsb_colour_val() -> list:
    """The colour images among `nuclei`'s validation split (DSB2018 metadata.csv)."""
    table = SHARED / "dsb2018_stage1_train_fixed" / "metadata.csv"
    with table.open() as handle:
        kinds = {row["id"]: row["heuristic_type"] for row in csv.DictReader(handle)}
    return [d for d in SETS["dsb_val"]() if kinds[d.name.split(".")[0]].startswith("color")]


def by_colour(bundle, data) -> dict:
    out = {}
    for colour in ("luma", "hematoxylin"):
        report = run_to_end(evaluate_iter(bundle, data, SegmentOptions(colour=colour)))
        matches = report.matches
        out[colour] = {
            "seg": round(report.seg, 4),
            "f1": round(matches.f1, 4),
            "precision": round(matches.precision, 4),
            "recall": round(matches.recall, 4),
        }
        print(colour, out[colour], flush=True)
    return out


def main() -> None:
    bundle = load_model("nuclei")
    record = {
        "model": "nuclei",
        "settings": "shipped defaults (diameter auto) but colour",
        "dsb_colour_val": {
            "set": "DSB2018 validation split, colour images (central 340 px crops)",
            "by_colour": by_colour(bundle, dsb_colour_val()),
        },
        "miccai": {
            "set": "MICCAI 2015 H&E (15 images, 2,905 nuclei; internal)",
            "by_colour": by_colour(bundle, SETS["miccai"]()),
        },
    }
    OUT.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
