"""Issue #20: train with plain `segloop train --minutes M` on DIC-HeLa sequence 01 and
report CTC SEG on a far-apart time block of the same sequence.

    python benchmarks/dic_hela.py --minutes 15 --label defaults
    python benchmarks/dic_hela.py --minutes 15 --label dist --extra --distance-head

Training frames: t000-t046 and t075-t083 of seq 01 with their silver truth (``01_ST``,
dense, computer-made). Held out: the block t047-t074 (280 minutes of the time-lapse, 47
frames away from the nearest training frame at its centre). It is scored two ways:

- ``gold``: the manual frames inside it (t054, t067; t067 has 3 of ~18 cells annotated,
  so only SEG, which ignores unannotated cells, means something there);
- ``silver``: every third frame of the block against its silver truth (10 frames, dense),
  SEG and F1@0.5; more cells, a steadier number.

Training defaults are chosen on these numbers, never on sequence 02 (kept aside outside
this project). CTC data is for internal testing only: the trained model is written
under /tmp, never into the package. Results are appended to --json (one row per label).
``--block 0 28`` holds out the first block instead (gold t002, t005, t021).
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
#: the held-out block by default (--block 47 75)
DEFAULT_BLOCK = (47, 75)


def gold_frames(block: range) -> tuple[str, ...]:
    """The manual (gold) frames of seq 01 inside ``block``."""
    gold = sorted((DIC / "gt_frames" / "images").glob("01_t*.tif"))
    return tuple(path.name for path in gold if int(path.stem[4:]) in block)


def _link(folder: Path, name: str, target: Path) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).symlink_to(target)


def build_training_folders(tmp: Path, block: range) -> tuple[Path, Path]:
    """Every frame of seq 01 outside the held-out block, with its silver truth."""
    images, masks = tmp / "images", tmp / "masks"
    for frame in sorted((DIC / "ctc_layout" / "01").glob("t*.tif")):
        number = int(frame.stem[1:])
        if number in block:
            continue
        _link(images, frame.name, frame)
        _link(masks, frame.name, DIC / "ctc_layout" / "01_ST" / "SEG" / f"man_seg{number:03d}.tif")
    return images, masks


def build_eval_folders(tmp: Path, block: range) -> dict[str, tuple[Path, Path]]:
    """``gold``: manual frames of the block; ``silver``: every third frame, silver truth."""
    sets = {}
    gold_images, gold_masks = tmp / "gold_images", tmp / "gold_masks"
    for name in gold_frames(block):
        _link(gold_images, name, DIC / "gt_frames" / "images" / name)
        _link(gold_masks, name, DIC / "gt_frames" / "masks" / name)
    sets["gold"] = (gold_images, gold_masks)
    silver_images, silver_masks = tmp / "silver_images", tmp / "silver_masks"
    for number in block[::3]:
        name = f"t{number:03d}.tif"
        _link(silver_images, name, DIC / "ctc_layout" / "01" / name)
        _link(silver_masks, name, DIC / "ctc_layout" / "01_ST" / "SEG" / f"man_seg{number:03d}.tif")
    sets["silver"] = (silver_images, silver_masks)
    return sets


def evaluate(segloop: list[str], model: str, images: Path, masks: Path) -> dict:
    cmd = [*segloop, "evaluate", "--model", model, "--images", str(images)]
    out = subprocess.run(
        [*cmd, "--masks", str(masks), "--json"], check=True, capture_output=True, text=True
    ).stdout
    summary = json.loads(out)["summary"]
    keys = ("seg", "f1", "precision", "recall", "median_count_error", "n_images")
    return {key: round(summary[key], 4) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--label", default="defaults")
    parser.add_argument("--model", default=None, help="default /tmp/dic_<label>.safetensors")
    parser.add_argument("--json", default=str(ROOT / "docs" / "results" / "dic_hela.json"))
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument(
        "--block", type=int, nargs=2, default=DEFAULT_BLOCK, help="held-out frames FIRST STOP"
    )
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="train options")
    args = parser.parse_args()
    if not DIC.exists():
        sys.exit(f"{DIC} not found")
    block = range(*args.block)
    model = args.model or f"/tmp/dic_{args.label}.safetensors"
    segloop = [sys.executable, "-m", "segloop.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, masks = build_training_folders(tmp, block)
        start = time.time()
        summary = {}
        if not args.skip_train:
            out = subprocess.run(
                [*segloop, "train", "--images", str(images), "--masks", str(masks)]
                + ["--out", model, "--minutes", str(args.minutes), *args.extra],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            ).stdout
            summary = json.loads(out[out.index("{") :])
        train_minutes = (time.time() - start) / 60
        eval_sets = build_eval_folders(tmp, block)
        results = {name: evaluate(segloop, model, *pair) for name, pair in eval_sets.items()}
    row = {
        "label": args.label,
        "block": [block.start, block.stop - 1],
        "gold": list(gold_frames(block)),
        "train_options": args.extra,
        "train_minutes": round(train_minutes, 1),
        "steps": summary.get("steps"),
        "diameter": summary.get("diameter"),
        "results": results,
    }
    print(json.dumps(row, indent=1))
    path = Path(args.json)
    table = json.loads(path.read_text()) if path.exists() else {}
    rows = [r for r in table.get("rows", []) if r.get("label") != args.label] + [row]
    table["protocol"] = {
        "train": "seq 01 frames outside the held-out block (--block), silver truth",
        "gold": "the manual frames inside the block",
        "silver": "every third frame of the block, against its silver truth",
    }
    table["rows"] = rows
    path.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
