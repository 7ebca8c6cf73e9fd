"""Issue: cells of any size. Train with plain `segloop train --minutes M` on DIC-HeLa
sequence 01 (silver truth) and report CTC SEG on held-back gold frames.

    python benchmarks/dic_hela.py --minutes 15

Held back: gold frames t054 and t067 and every raw frame from t047 to t074 (consecutive
frames are near-duplicates, so neighbours are excluded from training too). CTC data is for
internal testing only: the trained model is written under /tmp, never into the package.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIC = ROOT.parent / "shared" / "data" / "ctc_dic_c2dh_hela"
HELD_OUT_GOLD = ("01_t054.tif", "01_t067.tif")
EXCLUDED_FRAMES = range(47, 75)


def build_training_folders(tmp: Path) -> tuple[Path, Path]:
    images, masks = tmp / "images", tmp / "masks"
    images.mkdir()
    masks.mkdir()
    for frame in sorted((DIC / "ctc_layout" / "01").glob("t*.tif")):
        number = int(frame.stem[1:])
        if number in EXCLUDED_FRAMES:
            continue
        (images / frame.name).symlink_to(frame)
        (masks / frame.name).symlink_to(
            DIC / "ctc_layout" / "01_ST" / "SEG" / f"man_seg{number:03d}.tif"
        )
    return images, masks


def build_eval_folders(tmp: Path) -> tuple[Path, Path]:
    images, masks = tmp / "eval_images", tmp / "eval_masks"
    images.mkdir()
    masks.mkdir()
    for name in HELD_OUT_GOLD:
        (images / name).symlink_to(DIC / "gt_frames" / "images" / name)
        (masks / name).symlink_to(DIC / "gt_frames" / "masks" / name)
    return images, masks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--model", default="/tmp/dic_hela.safetensors")
    parser.add_argument("--extra", nargs="*", default=[], help="extra `segloop train` options")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    segloop = [sys.executable, "-m", "segloop.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, masks = build_training_folders(tmp)
        start = time.time()
        if not args.skip_train:
            subprocess.run(
                [
                    *segloop,
                    "train",
                    "--images",
                    str(images),
                    "--masks",
                    str(masks),
                    "--out",
                    args.model,
                    "--minutes",
                    str(args.minutes),
                    *args.extra,
                ],
                check=True,
            )
        train_minutes = (time.time() - start) / 60
        eval_images, eval_masks = build_eval_folders(tmp)
        results = {}
        for diameter in (None, "auto"):
            cmd = [
                *segloop,
                "evaluate",
                "--model",
                args.model,
                "--images",
                str(eval_images),
                "--masks",
                str(eval_masks),
                "--json",
            ]
            if diameter:
                cmd += ["--diameter", diameter]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[diameter or "training scale"] = json.loads(out)["summary"]
    print(
        json.dumps(
            {
                "train_minutes": round(train_minutes, 1),
                "held_out": HELD_OUT_GOLD,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
