#!/usr/bin/env bash
# Create .venv with the pinned dependencies (CPU PyTorch) and install segloop into it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements/pinned.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "segloop installed in $(pwd)/.venv"
