#!/usr/bin/env bash
# Retrain the shipped `nuclei` model from ../shared/data, run by run, as it was made
# (docs/models.md, "training"). About 5 CPU-hours on 2 cores; each run is a wall-clock
# budget, so a slower or busier machine takes as long but makes fewer steps.
#
#   bash scripts/retrain_nuclei.sh [work-folder]     (default: runs/nuclei)
#
# Everything is written to the work folder; the last step scores the test split once
# (docs/results/nuclei_test.json) and only then copies the model into the package.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/nuclei}
mkdir -p "$work"
model="$work/nuclei.safetensors"
train=(.venv/bin/python scripts/train_models.py nuclei --out "$model" --skip-test)

# stage 1: three classes (background / interior / border)
"${train[@]}" --minutes 60                                    # run 1
"${train[@]}" --resume --minutes 60                           # run 2
# stage 2: add the distance head, then keep training
"${train[@]}" --add-distance-head                             # run 3: 50 min, lr 5e-4, seed 1
"${train[@]}" --resume --minutes 35 --learning-rate 2.5e-4 --seed 2   # run 4
"${train[@]}" --resume --minutes 60 --learning-rate 5e-4 --seed 3 --val-images 66   # run 5
# defaults (object-size mode, post-processing) picked on the validation split
.venv/bin/python scripts/train_models.py nuclei --out "$model" --evaluate-only --tune --skip-test
.venv/bin/python scripts/train_models.py nuclei --out "$model" --evaluate-only   # test split, once
cp "$model" src/segloop/models/nuclei.safetensors
