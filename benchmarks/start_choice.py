"""Does scoring the shipped models on the corrections pick a good start for fine-tuning?

For every modality of ``finetune_modalities.py``, each shipped model that never saw it is
scored on the 2 corrected frames (:func:`segloop.core.start_choice.choose_start_iter`,
what ``--init auto`` runs) and the pick is compared with the fine-tuned SEG each start
reached on the scored frames (rows of docs/results/finetune_modalities.json,
finetune_start.json and tta_versions.json, 2 frames).

    python benchmarks/start_choice.py

Writes docs/results/start_choice.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune_modalities import MODALITIES  # same folder: benchmarks/

from segloop.core.progress import run_to_end
from segloop.core.start_choice import choose_start_iter

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "start_choice.json"

#: What each shipped model was trained on: a modality it saw cannot be left out.
SEEN = {"nuclei": set(), "cells": {"usiigaci_phase"}, "ecoli": {"ecoli_phase"}}


def main() -> None:
    rows = []
    for modality, (corrected, _scored) in sorted(MODALITIES.items()):
        frames = corrected()[:2]
        candidates = [name for name, seen in SEEN.items() if modality not in seen]
        choice = run_to_end(choose_start_iter(frames, candidates))
        row = {"modality": modality, **choice.to_dict()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    OUT.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
