"""End-to-end ``segloop predict`` speed against the network alone, on many small images.

    python benchmarks/end_to_end.py [--files 84] [--side 512] [--out docs/results/end_to_end.json]

Writes ``--files`` synthetic ``--side``² nuclei images (the slide generator of
``chunked_predict.py``), then, side by side in one run:

- ``segloop predict --model nuclei`` on all of them in one call, with one file at a time
  (``SEGLOOP_IN_FLIGHT=1``) and with two files in flight (the default), start-up included,
  and the same figure less the start-up (a ``segloop predict`` of one 64² image);
- the network alone on the same images in this process (normalisation and tiles through
  the network, no post-processing, no I/O).

It also times the stages of one image (network, post-processing) to show where the time
goes, and, when cellpose is installed (optional, never a dependency) and its ``nuclei``
weights are on disk, runs cellpose on the same images in this process for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chunked_predict import disk_centres, tile_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int, side: int) -> list[Path]:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    centres, radii = disk_centres(side * 8)
    paths = []
    for i in range(count):
        y0, x0 = (i // 8) % 8 * side, i % 8 * side
        image = tile_of(y0, x0, side * 8, centres, radii, seed=i)[:side, :side]
        path = folder / f"frame{i:03d}.tif"
        tifffile.imwrite(path, image)
        paths.append(path)
    return paths


def predict_seconds(folder: Path, out: Path, at_once: int) -> float:
    env = dict(os.environ, SEGLOOP_IN_FLIGHT=str(at_once))
    argv = [sys.executable, "-m", "segloop.cli", "predict", "--model", "nuclei", "--out", str(out),
            str(folder)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def stages(paths: list[Path]) -> dict:
    """Network-only seconds for all images, and one image's network / post-processing."""
    from segloop.core import segment as seg
    from segloop.core.device import compute_settings
    from segloop.core.imageio import prepare_image, read_image
    from segloop.core.modelio import load_model
    from segloop.core.predict import predict_probabilities_iter
    from segloop.core.progress import run_to_end

    bundle = load_model("nuclei")
    settings = compute_settings("auto")
    frames = [prepare_image(read_image(p)) for p in paths]
    run_to_end(predict_probabilities_iter(bundle, frames[0], settings=settings))  # warm up
    start = time.perf_counter()
    outputs = [run_to_end(predict_probabilities_iter(bundle, f, settings=settings)) for f in frames]
    network = time.perf_counter() - start
    start = time.perf_counter()
    for probs in outputs[:10]:
        seg._postprocess(bundle, probs, seg.SegmentOptions(), 1.0)
    post_per_image = (time.perf_counter() - start) / 10
    return {
        "network_only_s": round(network, 2),
        "network_per_image_s": round(network / len(frames), 3),
        "postprocess_per_image_s": round(post_per_image, 3),
    }


def cellpose_side_by_side(paths: list[Path], segloop_mpx_per_s: float) -> dict:
    """cellpose's ``nuclei`` model on the same images, if it is installed and offline-ready."""
    try:
        from cellpose import models
    except ImportError:
        return {"cellpose": "not installed"}
    from segloop.core.imageio import read_image

    images = [read_image(p) for p in paths]
    try:
        model = models.Cellpose(gpu=False, model_type="nuclei")  # cellpose 3
    except Exception as exc:  # weights missing offline, or another API version
        return {"cellpose": f"unavailable: {type(exc).__name__}: {exc}"[:300]}
    start = time.perf_counter()
    model.eval(images, diameter=None, channels=[0, 0])
    seconds = time.perf_counter() - start
    mpx = sum(image.size for image in images) / 1e6
    return {
        "cellpose_seconds": round(seconds, 1),
        "cellpose_mpx_per_s": round(mpx / seconds, 3),
        "segloop_vs_cellpose": round(segloop_mpx_per_s / (mpx / seconds), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=84)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segloop-e2e"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/end_to_end.json")
    args = parser.parse_args(argv)
    paths = write_images(args.work / "in", args.files, args.side)
    mpx = args.files * args.side**2 / 1e6
    results: dict = {"files": args.files, "side": args.side, "mpx": round(mpx, 2)}
    for at_once in (1, 2):
        seconds = predict_seconds(args.work / "in", args.work / f"out{at_once}", at_once)
        results[f"predict_{at_once}_at_once"] = {
            "seconds": round(seconds, 1),
            "mpx_per_s": round(mpx / seconds, 3),
        }
        print(at_once, results[f"predict_{at_once}_at_once"], flush=True)
    import tifffile

    tiny = args.work / "tiny"
    tiny.mkdir(exist_ok=True)
    tifffile.imwrite(tiny / "tiny.tif", tifffile.imread(paths[0])[:64, :64])
    results["startup_s"] = round(predict_seconds(tiny, args.work / "out_tiny", 1), 1)
    for at_once in (1, 2):
        run = results[f"predict_{at_once}_at_once"]
        run["mpx_per_s_after_startup"] = round(mpx / (run["seconds"] - results["startup_s"]), 3)
    results.update(stages(paths))
    results["network_only_mpx_per_s"] = round(mpx / results["network_only_s"], 3)
    for at_once in (1, 2):
        run = results[f"predict_{at_once}_at_once"]
        network = results["network_only_mpx_per_s"]
        results[f"end_to_end_vs_network_{at_once}"] = round(run["mpx_per_s"] / network, 3)
        ratio = run["mpx_per_s_after_startup"] / network
        results[f"end_to_end_vs_network_{at_once}_after_startup"] = round(ratio, 3)
    results.update(cellpose_side_by_side(paths, results["predict_2_at_once"]["mpx_per_s"]))
    one = sorted((args.work / "out1").glob("*_labels.tif"))
    two = sorted((args.work / "out2").glob("*_labels.tif"))
    results["same_labels"] = len(one) == len(two) == args.files and all(
        _labels(x) == _labels(y) for x, y in zip(one, two, strict=True)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def _labels(path: Path) -> bytes:
    import tifffile

    return tifffile.imread(path).tobytes()


if __name__ == "__main__":
    sys.exit(main())
