"""`nuclei` on H&E (MICCAI 2015, internal evaluation only) with each colour -> grey
conversion, shipped defaults otherwise: what ``--colour hematoxylin`` gives a user with
H&E. The set chooses nothing (the shipped default stays luma, which DSB2018's colour
validation images prefer); results go to docs/results/miccai_colour.json.

    python benchmarks/colour_zero_shot.py
"""

from __future__ import annotations

import json
from pathlib import Path

from scale_robustness import SETS  # same folder: benchmarks/

from segloop.core.evaluation import evaluate_iter
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.segment import SegmentOptions

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "miccai_colour.json"


def main() -> None:
    data = SETS["miccai"]()
    bundle = load_model("nuclei")
    by_colour = {}
    for colour in ("luma", "hematoxylin"):
        report = run_to_end(evaluate_iter(bundle, data, SegmentOptions(colour=colour)))
        matches = report.matches
        by_colour[colour] = {
            "seg": round(report.seg, 4),
            "f1": round(matches.f1, 4),
            "precision": round(matches.precision, 4),
            "recall": round(matches.recall, 4),
        }
        print(colour, by_colour[colour], flush=True)
    record = {
        "model": "nuclei",
        "set": "MICCAI 2015 H&E (15 images, 2,905 nuclei; internal)",
        "settings": "shipped defaults (diameter auto) but colour",
        "by_colour": by_colour,
    }
    OUT.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
