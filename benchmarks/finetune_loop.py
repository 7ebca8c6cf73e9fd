"""Does the correct-and-retrain loop help? Fine-tune a model that never saw DIC images on
1, 2 and 4 "corrected" DIC-HeLa frames (their gold truth stands in for the user's
corrections) for fixed CPU budgets, and score frames that were never used.

    python benchmarks/finetune_loop.py --base nuclei --budgets 60 180

Corrected frames: t002, t005, t021, t031 (first n of them). Scored frames: t039, t054,
t067 (CTC SEG over the annotated cells, and instance F1@0.5; t067 is only partly
annotated, which lowers precision but not SEG). CTC data stays internal: projects and
models go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from segloop.core.datasets import load_labels
from segloop.core.evaluation import LabelledImage, evaluate_iter
from segloop.core.imageio import read_image
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.project import Project, fine_tune_iter
from segloop.core.segment import SegmentOptions
from segloop.core.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
GT = ROOT.parent / "shared" / "data" / "ctc_dic_c2dh_hela" / "gt_frames"
CORRECTED = ("01_t002", "01_t005", "01_t021", "01_t031")
SCORED = ("01_t039", "01_t054", "01_t067")


def frame(name: str) -> LabelledImage:
    return LabelledImage(
        read_image(GT / "images" / f"{name}.tif"), load_labels(GT / "masks" / f"{name}.tif"), name
    )


def score(model_path, frames) -> dict:
    report = run_to_end(evaluate_iter(load_model(model_path), frames, SegmentOptions()))
    return {"seg": round(report.seg, 4), "f1": round(report.matches.f1, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="nuclei")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--budgets", type=float, nargs="+", default=[60, 180])
    parser.add_argument("--out", default="docs/results/finetune_loop.json")
    args = parser.parse_args()
    scored = [frame(name) for name in SCORED]
    rows = [{"corrected_frames": 0, "budget_s": 0, **score(args.base, scored)}]
    print(json.dumps(rows[-1]), flush=True)
    for n in args.frames:
        for budget in args.budgets:
            with tempfile.TemporaryDirectory() as tmp:
                project = Project(Path(tmp) / "project", base_model=args.base)
                for name in CORRECTED[:n]:
                    item = frame(name)
                    project.add_correction(item.image, item.labels, name)
                config = TrainConfig(minutes=budget / 60, learning_rate=3e-4, val_interval_s=1e9)
                start = time.time()
                info, result = run_to_end(fine_tune_iter(project, args.base, config, val_ids=[]))
                rows.append(
                    {
                        "corrected_frames": n,
                        "budget_s": budget,
                        "steps": result.steps,
                        "wall_s": round(time.time() - start),
                        **score(info.path, scored),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
