#!/usr/bin/env bash
# Create .venv with the pinned dependencies (CPU PyTorch) and install segloop into it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements/pinned.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
# optional extra for the bioimage.io export tests: bioimageio.core/spec (pinned in pyproject)
.venv/bin/python -m pip install --quiet -c requirements/pinned.txt -e ".[bioimageio]"
echo "segloop installed in $(pwd)/.venv"
