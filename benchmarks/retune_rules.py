"""How should a fine-tuned version's post-processing be chosen when the only labelled
images are the corrections it was just trained on?

The same trained versions (``finetune_modalities.py --keep DIR``) are post-processed
four ways and scored on the frames that benchmark scores (never trained on):

- ``never``: the start model's settings (what ``--configs notune`` would use);
- ``always``: the quick grid's best F1 - count error on the corrections (in-sample);
- ``keep``: the start model's settings unless the grid's best has a higher SEG on the
  corrections (``TrainConfig.tune_keep_current``, the recipe's default since 2026-12-06);
- ``seg``: the grid's best F1 - count error + SEG.

Training is left out of the comparison, so run-to-run training noise does not decide it.

    python benchmarks/retune_rules.py --keep /tmp/versions4 /tmp/versions5 --frames 2 1

Rows go to docs/results/retune_rules.json; the summary prints the median and mean SEG per
rule and which rule a leave-one-modality-out choice picks for each modality (the best
median SEG over the other modalities' runs, both frame counts pooled).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from finetune_modalities import MODALITIES  # same folder: benchmarks/

from segloop.core.evaluation import evaluate_iter
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.segment import SegmentOptions
from segloop.core.training import TrainConfig, tune_iter

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "retune_rules.json"
#: rule -> TrainConfig options of the tuning (None: no tuning, the start model's settings)
RULES: dict[str, dict | None] = {
    "never": None,
    "always": {},
    "keep": {"tune_keep_current": True},
    "seg": {"tune_seg_weight": 1.0},
}


def run_one(path: Path, start: str, modality: str, frames: int) -> dict:
    corrected, scored = (make() for make in MODALITIES[modality])
    start_settings = load_model(start).postprocess
    row: dict = {"modality": modality, "frames": frames, "version": path.name}
    for rule, options in RULES.items():
        bundle = load_model(path)
        bundle.metadata["postprocess"] = dict(start_settings)  # as before the tuning
        if options is not None:
            config = TrainConfig(minutes=1, tune_grid="quick", device="cpu", **options)
            tuned = run_to_end(tune_iter(bundle, corrected[:frames], config))
            row[f"{rule}_kept_start"] = tuned.kept_baseline
        report = run_to_end(evaluate_iter(bundle, scored, SegmentOptions()))
        row[f"{rule}_seg"] = round(report.seg, 4)
        row[f"{rule}_f1"] = round(report.matches.f1, 4)
    print(json.dumps(row), flush=True)
    return row


def summary(rows: list[dict]) -> None:
    for frames in sorted({r["frames"] for r in rows}, reverse=True):
        part = [r for r in rows if r["frames"] == frames]
        print(f"\n{frames} frame(s), {len(part)} modalities")
        for rule in RULES:
            segs = [r[f"{rule}_seg"] for r in part]
            median, mean = statistics.median(segs), statistics.mean(segs)
            print(f"  {rule:7s} median SEG {median:.3f} mean {mean:.3f}")
    print("\nleave-one-modality-out choice (median SEG of the other modalities' rows):")
    for held in sorted({r["modality"] for r in rows}):
        others = [r for r in rows if r["modality"] != held]
        best = max(RULES, key=lambda rule: statistics.median(r[f"{rule}_seg"] for r in others))
        print(f"  {held}: {best}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--keep", type=Path, nargs="+", help="folders of finetune_modalities.py --keep"
    )
    parser.add_argument("--config", default="default", help="config whose versions to use")
    parser.add_argument("--frames", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--budget", type=float, default=120)
    parser.add_argument("--start", default="nuclei", help="the versions' start model")
    parser.add_argument("--summary", action="store_true", help="print the summary and stop")
    args = parser.parse_args()
    if args.summary:
        summary(json.loads(OUT.read_text()))
        return
    rows = []
    for frames in args.frames:
        for modality in sorted(MODALITIES):
            name = f"{args.config}_{modality}_{frames}f_{args.budget:.0f}s.safetensors"
            found = [folder / name for folder in args.keep if (folder / name).is_file()]
            if found:
                rows.append(run_one(found[0], args.start, modality, frames))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1))
    summary(rows)


if __name__ == "__main__":
    main()
