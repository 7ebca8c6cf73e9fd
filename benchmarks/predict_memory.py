"""Time and peak memory of `segloop predict` on a large synthetic image.

    python benchmarks/predict_memory.py [--sizes 1024 2048 4096] [--model nuclei]
        [--diameter native|auto|D]

Runs the CLI in a child process and reads its peak resident memory (ru_maxrss), so the
number includes torch, the model, the image, the probability canvas and the outputs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage.draw import disk


def synthetic_nuclei(size: int, seed: int = 0) -> np.ndarray:
    """Bright blobs (radius 6-12) on a dark noisy background, uint16."""
    rng = np.random.default_rng(seed)
    image = rng.normal(200, 20, (size, size))
    n = size * size // 2500
    for y, x, r in zip(
        rng.integers(0, size, n), rng.integers(0, size, n), rng.integers(6, 12, n), strict=True
    ):
        rr, cc = disk((y, x), r, shape=image.shape)
        image[rr, cc] += 1500
    return np.clip(image, 0, 65535).astype(np.uint16)


def run(model: str, size: int, tile: int | None, diameter: str | None = None) -> dict:
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"big{size}.tif"
        tifffile.imwrite(path, synthetic_nuclei(size))
        cmd = [
            sys.executable,
            "-m",
            "segloop.cli",
            "predict",
            "--model",
            model,
            "--out",
            str(Path(tmp) / "out"),
            str(path),
        ]
        if tile:
            cmd += ["--tile", str(tile)]
        if diameter:
            cmd += ["--diameter", diameter]
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "size": size,
        "tile": tile,
        "diameter": diameter or "model default",
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(max(peak, before) / 1024),
        "megapixels": size * size / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--diameter", default=None, help="passed to segloop predict")
    args = parser.parse_args()
    rows = [run(args.model, size, args.tile, args.diameter) for size in args.sizes]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
