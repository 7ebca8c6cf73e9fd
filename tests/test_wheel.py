"""The built wheel is small, carries the shipped model, and predicts without a network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "segloop" / "data" / "dsb2018_fluorescence.png"
#: three shipped models of 3.8 MB each (fp16), the samples and the code
MAX_WHEEL_MB = 14


def _offline_prefix() -> list[str]:
    """Run in a fresh network namespace (no network at all) where the OS allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


@pytest.mark.slow
def test_wheel_installs_and_predicts_offline(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("napari_segloop-*.whl")
    assert wheel.stat().st_size < MAX_WHEEL_MB * 2**20
    names = zipfile.ZipFile(wheel).namelist()
    assert "segloop/models/nuclei.safetensors" in names
    assert "segloop/napari/napari.yaml" in names
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    out = tmp_path / "out"
    code = (
        "import sys, segloop; assert segloop.__file__.startswith(sys.argv[1]), segloop.__file__;"
        "from segloop.cli import main;"
        "sys.exit(main(['predict', '--model', 'nuclei', '--out', sys.argv[2], sys.argv[3]]))"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [*_offline_prefix(), sys.executable, "-c", code, str(target), str(out), str(SAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    from segloop.core.imageio import read_image

    labels = read_image(out / f"{SAMPLE.stem}_labels.tif")
    assert labels.shape == read_image(SAMPLE).shape[:2] and labels.max() > 10
    assert np.unique(labels).size - 1 == labels.max()
