"""Large images and long stacks through ``segloop predict``: peak memory, speed, stitching.

    python benchmarks/chunked_predict.py [--side 20000] [--frames 300 30] [--frame-side 1024]
        [--out docs/results/chunked_predict.json] [--work DIR] [--skip-stacks]

Everything runs in one go, one ``segloop predict`` process at a time (peak RSS from
``os.wait4``), so the figures are side by side on the same machine:

1. a synthetic slide of ``--side``² uint8 pixels (bright disks of 12-18 px on a noisy
   background, on a jittered 36-px grid, so thousands of them straddle chunk borders and
   corners), written tile by tile as a tiled TIFF; its top-left 2048² crop as a second file;
2. ``segloop predict --model nuclei --diameter native --out-format zarr`` on both: wall
   time, Mpx/s (start-up included) and peak RSS;
3. the network alone on the 2048² crop (tiles through the network, no post-processing),
   Mpx/s in this process;
4. stitching: the slide's object count against the number of disks drawn, and for a
   sample of disks that straddle a chunk border, whether each came out as one object;
5. stacks of ``--frames`` frames of ``--frame-side``²: peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TILE = 512
STEP = 36
CHUNK = 2048


def disk_centres(side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centres (y, x) and radii of the disks of a ``side``² slide."""
    rng = np.random.default_rng(seed)
    grid = np.arange(STEP // 2, side - STEP // 2, STEP)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    centres = np.stack([yy.ravel(), xx.ravel()], axis=1)
    centres = centres + rng.integers(-6, 7, centres.shape)
    radii = rng.integers(6, 10, len(centres))
    return centres.clip(10, side - 11), radii


def tile_of(y0: int, x0: int, side: int, centres, radii, seed: int = 0) -> np.ndarray:
    """One TILE² tile of the slide: the disks that reach it, plus noise."""
    h, w = min(TILE, side - y0), min(TILE, side - x0)
    rng = np.random.default_rng((seed, y0, x0))
    tile = rng.normal(30, 8, (TILE, TILE)).astype(np.float32)
    near = np.flatnonzero(
        (centres[:, 0] + radii >= y0) & (centres[:, 0] - radii < y0 + h)
        & (centres[:, 1] + radii >= x0) & (centres[:, 1] - radii < x0 + w)
    )  # fmt: skip
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    for i in near:
        cy, cx, r = centres[i, 0] - y0, centres[i, 1] - x0, radii[i]
        ys, ye = max(cy - r, 0), min(cy + r + 1, TILE)
        xs, xe = max(cx - r, 0), min(cx + r + 1, TILE)
        if ys >= ye or xs >= xe:
            continue
        inside = (yy[ys:ye, xs:xe] - cy) ** 2 + (xx[ys:ye, xs:xe] - cx) ** 2 <= r * r
        tile[ys:ye, xs:xe][inside] = 190 + rng.normal(0, 10)
    return tile.clip(0, 255).astype(np.uint8)


def write_slide(path: Path, side: int) -> int:
    """Write the slide tile by tile; returns the number of disks."""
    import tifffile

    centres, radii = disk_centres(side)

    def tiles():
        for y0 in range(0, side, TILE):
            for x0 in range(0, side, TILE):
                yield tile_of(y0, x0, side, centres, radii)

    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(TILE, TILE),
                     compression="zlib", bigtiff=True)  # fmt: skip
    return len(centres)


def run_predict(inputs: list[Path], out: Path, extra: list[str]) -> dict:
    """One ``segloop predict`` process: wall seconds and peak RSS (MB)."""
    argv = [sys.executable, "-m", "segloop.cli", "predict", "--model", "nuclei",
            "--diameter", "native", "--out", str(out), *extra, *map(str, inputs)]  # fmt: skip
    start = time.perf_counter()
    log = out.with_name(out.name + ".log")
    with open(log, "w") as errors:  # a pipe would fill up with progress lines and block
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"predict failed ({status}): {log.read_text()[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def network_mpx_per_s(image: np.ndarray) -> float:
    """The network alone (tiling, normalisation, no post-processing) on ``image``."""
    from segloop.core.device import compute_settings
    from segloop.core.imageio import prepare_image
    from segloop.core.modelio import load_model
    from segloop.core.predict import predict_probabilities_iter
    from segloop.core.progress import run_to_end

    bundle = load_model("nuclei")
    frame = prepare_image(image)
    settings = compute_settings("auto")
    run_to_end(predict_probabilities_iter(bundle, frame[:512, :512], settings=settings))
    start = time.perf_counter()
    run_to_end(predict_probabilities_iter(bundle, frame, settings=settings))
    return image.size / 1e6 / (time.perf_counter() - start)


def stitching_check(labels_zarr: Path, side: int, n_sample: int = 3000) -> dict:
    """Object count of the slide, and straddling disks that came out as one object."""
    import zarr

    from segloop.core.chunked import ChunkPlan, count_ids

    array = zarr.open_group(str(labels_zarr), mode="r")["0"]
    n_objects = count_ids(ChunkPlan(side, side, chunk=CHUNK), array)
    centres, radii = disk_centres(side)
    straddle = np.flatnonzero(
        ((centres[:, 0] % CHUNK) < radii + 1) | ((CHUNK - centres[:, 0] % CHUNK) <= radii + 1)
        | ((centres[:, 1] % CHUNK) < radii + 1) | ((CHUNK - centres[:, 1] % CHUNK) <= radii + 1)
    )  # fmt: skip
    straddle = straddle[(centres[straddle] > CHUNK // 2).all(axis=1)]
    rng = np.random.default_rng(1)
    sample = rng.choice(straddle, min(n_sample, len(straddle)), replace=False)
    whole = 0
    for i in sample:
        (cy, cx), r = centres[i], int(radii[i]) - 2
        window = np.asarray(array[cy - r : cy + r + 1, cx - r : cx + r + 1])
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        ids = np.unique(window[(yy**2 + xx**2) <= r * r])
        whole += int(len(ids) == 1 and ids[0] != 0)
    return {"objects": n_objects, "straddling_sampled": len(sample), "straddling_whole": whole}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument("--frames", type=int, nargs="+", default=[300, 30])
    parser.add_argument("--frame-side", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segloop-chunked-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/chunked_predict.json")
    parser.add_argument("--skip-stacks", action="store_true")
    parser.add_argument("--skip-slide", action="store_true", help="keep the slide results in --out")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = json.loads(args.out.read_text()) if args.skip_slide else {}
    results.update(machine=f"{platform.machine()}, {os.cpu_count()} cores", chunk=CHUNK)
    if not args.skip_slide:
        slide_part(args, results)
    network_part(args, results)
    if not args.skip_stacks:
        results["stacks"] = stacks_part(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def slide_part(args, results: dict) -> None:
    """The slide and its 2048² crop: speed, memory, stitching."""
    import tifffile

    slide = args.work / "slide.tif"
    start = time.perf_counter()
    n_disks = write_slide(slide, args.side)
    import zarr

    crop_image = np.asarray(
        zarr.open(tifffile.imread(slide, aszarr=True), mode="r")[:CHUNK, :CHUNK]
    )
    crop = args.work / "crop.tif"
    tifffile.imwrite(crop, crop_image, tile=(TILE, TILE), compression="zlib")
    results["slide"] = {
        "side": args.side,
        "disks": n_disks,
        "written_s": round(time.perf_counter() - start, 1),
    }
    print("slide written", results["slide"], flush=True)

    runs = {}
    for name, path in (("crop_2048", crop), ("slide", slide)):
        out = args.work / f"out_{name}"
        runs[name] = run_predict([path], out, ["--out-format", "zarr", "--chunk", str(CHUNK)])
        pixels = (CHUNK if name == "crop_2048" else args.side) ** 2
        runs[name]["mpx_per_s"] = round(pixels / 1e6 / runs[name]["seconds"], 3)
        print(name, runs[name], flush=True)
    results["predict"] = runs
    results["slide_vs_crop_throughput"] = round(
        runs["slide"]["mpx_per_s"] / runs["crop_2048"]["mpx_per_s"], 3
    )
    check = stitching_check(args.work / "out_slide" / "slide_labels.zarr", args.side)
    check["count_error"] = round(abs(check["objects"] - n_disks) / n_disks, 5)
    results["stitching"] = check
    print("stitching", check, flush=True)


def network_part(args, results: dict) -> None:
    """The network alone on the 2048² crop, against the slide's end-to-end throughput."""
    import tifffile

    crop_image = tifffile.imread(args.work / "crop.tif")
    results["network_only_mpx_per_s"] = round(network_mpx_per_s(crop_image), 3)
    slide = results["predict"]["slide"]["mpx_per_s"]
    results["slide_end_to_end_vs_network"] = round(slide / results["network_only_mpx_per_s"], 3)
    print("network only", results["network_only_mpx_per_s"], flush=True)


def stacks_part(args) -> dict:
    """Peak memory of stacks of several lengths."""
    import tifffile

    stacks = {}
    if args.frames:
        centres, radii = disk_centres(args.frame_side)
        frame = tile_of(0, 0, min(args.frame_side, TILE), centres, radii)
        frame = np.tile(frame, (args.frame_side // frame.shape[0] + 1,) * 2)[
            : args.frame_side, : args.frame_side
        ]
        for n in args.frames:
            path = args.work / f"stack_{n}.tif"
            with tifffile.TiffWriter(path, bigtiff=True) as tif:
                for t in range(n):
                    tif.write(np.roll(frame, 7 * t, axis=1), contiguous=True)
            out = args.work / f"out_stack_{n}"
            stacks[str(n)] = run_predict([path], out, ["--out-format", "zarr"])
            stacks[str(n)]["mpx_per_s"] = round(
                n * args.frame_side**2 / 1e6 / stacks[str(n)]["seconds"], 3
            )
            print("stack", n, stacks[str(n)], flush=True)
            path.unlink()
    return stacks


if __name__ == "__main__":
    sys.exit(main())
