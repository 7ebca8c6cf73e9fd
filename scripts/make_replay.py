"""Copy a small replay/validation sample of a shipped model's CC0 training data into the
package, so fine-tuning can replay it (against forgetting) and score the base model's own
validation images before/after.

    python scripts/make_replay.py nuclei --train 12 --val 6

Images are cropped to at most 256x256 (top-left) to keep the wheel small; the picks are a
seeded sample of the split's train/val parts, stratified by DSB heuristic type.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DSB = ROOT.parent / "shared" / "data" / "dsb2018_stage1_train_fixed"
OUT = ROOT / "src" / "segloop" / "data" / "replay"


def pick(names, kinds, n, rng):
    by_kind: dict[str, list[str]] = {}
    for name in names:
        by_kind.setdefault(kinds[name], []).append(name)
    quota = {
        "fluorescence_like": 0.7,
        "color_histology_or_brightfield_like": 0.2,
        "gray_brightfield_like": 0.1,
    }
    chosen = []
    for kind, share in quota.items():
        pool = sorted(by_kind.get(kind, []))
        k = min(len(pool), max(1, round(n * share)))
        chosen += [pool[i] for i in rng.choice(len(pool), k, replace=False)]
    return chosen[:n]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=["nuclei"])
    parser.add_argument("--train", type=int, default=12)
    parser.add_argument("--val", type=int, default=6)
    args = parser.parse_args()
    split = json.loads((ROOT / "scripts" / "splits" / f"{args.model}.json").read_text())
    kinds = {
        row["id"] + ".png": row["heuristic_type"]
        for row in csv.DictReader((DSB / "metadata.csv").open())
    }
    rng = np.random.default_rng(7)
    for part, n in (("train", args.train), ("val", args.val)):
        folder = OUT / args.model / part
        folder.mkdir(parents=True, exist_ok=True)
        for name in pick(split[part], kinds, n, rng):
            image = np.asarray(Image.open(DSB / "images" / name))[:256, :256]
            mask = np.asarray(Image.open(DSB / "masks" / name))[:256, :256]
            stem = name[:16]
            Image.fromarray(image).save(folder / f"{stem}.png", optimize=True)
            Image.fromarray(mask.astype(np.uint16)).save(
                folder / f"{stem}_masks.png", optimize=True
            )
    (OUT / args.model / "README.md").write_text(
        "Replay (train/) and base-validation (val/) samples of the DSB2018 stage1 training set "
        "(CC0; Caicedo et al., Nature Methods 2019), picked by scripts/make_replay.py from "
        f"scripts/splits/{args.model}.json; cropped to at most 256x256.\n"
    )


if __name__ == "__main__":
    main()
