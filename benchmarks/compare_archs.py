"""U-Net (fast and classic) vs SegNet on ISBI 2012 EM membranes, same CPU budget each.

    python benchmarks/compare_archs.py --minutes 4

Split (contiguous blocks, as neighbouring slices are 50 nm apart): train 00-19,
validation 20-24, test 25-29. Masks become classes 1 = membrane, 2 = cell (no void).
Reported on the test block: pixel IoU of the cell class, instance F1@0.5 of cells
(connected components, as the data defines instances), inference time per 512x512 tile
and the peak extra memory of one 512x512 forward pass (a fresh child process per
architecture, resident-set growth during the pass).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from segloop.core.evaluation import LabelledImage
from segloop.core.imageio import read_image
from segloop.core.instances import connected_components
from segloop.core.metrics import match_instances, pixel_iou
from segloop.core.modelio import new_bundle, save_model
from segloop.core.models import preset
from segloop.core.progress import run_to_end
from segloop.core.segment import segment
from segloop.core.training import TrainConfig, train_iter

ROOT = Path(__file__).resolve().parents[1]
EM = ROOT.parent / "shared" / "data" / "isbi2012_em_membranes" / "train"

FORWARD_PROBE = """
import resource, sys, time, torch
from segloop.core.modelio import load_model
from segloop.core.predict import predict_probabilities
from segloop.core.models import tile_geometry
b = load_model(sys.argv[1]); torch.set_num_threads(2)
import numpy as np
img = np.random.rand(512, 512).astype('float32')
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
predict_probabilities(b, img, tile=512)  # first pass: its peak is the memory figure
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
for _ in range(3):
    predict_probabilities(b, img, tile=512)
secs = (time.perf_counter() - t) / 3
print(secs, (peak - before) / 1024)
"""


def load(indices):
    data = []
    for i in indices:
        mask = read_image(EM / "masks" / f"train_{i:02d}.png")
        classes = np.where(mask > 0, 2, 1).astype(np.int32)
        data.append(
            LabelledImage(
                read_image(EM / "images" / f"train_{i:02d}.png"), classes, f"train_{i:02d}"
            )
        )
    return data


def score(bundle, data):
    ious, total = [], None
    for item in data:
        result = segment(bundle, item.image)
        cells_pred = result.classes == 2
        cells_true = item.labels == 2
        ious.append(pixel_iou(cells_pred, cells_true))
        m = match_instances(connected_components(cells_true), connected_components(cells_pred))
        total = m if total is None else total + m
    return float(np.mean(ious)), total.f1


def probe(path: Path) -> dict:
    """Seconds per 512x512 tile and peak extra MiB of a first forward pass (child process)."""
    out = subprocess.run(
        [sys.executable, "-c", FORWARD_PROBE, str(path)], check=True, capture_output=True, text=True
    ).stdout.split()
    return {
        "s_per_512_tile": round(float(out[0]), 3),
        "forward_peak_extra_MiB": round(float(out[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--archs", nargs="+", default=["unet", "segnet", "unet-classic"])
    parser.add_argument(
        "--probe-only",
        action="store_true",
        help="re-measure speed/memory of models saved by an earlier run",
    )
    parser.add_argument("--out", default="docs/results/compare_archs.json")
    args = parser.parse_args()
    if args.probe_only:
        rows = json.loads(Path(args.out).read_text())
        for row in rows:
            row.update(probe(Path("/tmp") / f"em_{row['arch']}.safetensors"))
        Path(args.out).write_text(json.dumps(rows, indent=1))
        print(json.dumps(rows, indent=1))
        return
    train, val, test = load(range(20)), load(range(20, 25)), load(range(25, 30))
    rows = []
    for arch in args.archs:
        bundle = new_bundle(preset(arch, n_classes=2), f"em-{arch}", target="classes")
        config = TrainConfig(
            minutes=args.minutes,
            crop=256,
            batch_size=4,
            val_interval_s=1e9,
            use_weight_map=False,
            tune_postprocess=False,
        )
        start = time.time()
        result = run_to_end(train_iter(bundle, train, config, val))
        path = save_model(bundle, Path("/tmp") / f"em_{arch}.safetensors")
        iou, f1 = score(bundle, test)
        params = sum(p.numel() for p in bundle.network.parameters())
        rows.append(
            {
                "arch": arch,
                "params_M": round(params / 1e6, 2),
                "steps": result.steps,
                "train_min": round((time.time() - start) / 60, 1),
                "cell_iou": round(iou, 4),
                "instance_f1": round(f1, 4),
                **probe(path),
            }
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
