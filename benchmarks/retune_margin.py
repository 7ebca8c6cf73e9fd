"""How much better must in-sample tuned post-processing outline the corrections before a
fine-tuned version takes it instead of its start model's settings?

The recipe tunes post-processing on the corrections it has just trained on and keeps the
start model's settings unless the tuned ones give a higher SEG there
(``TrainConfig.tune_keep_current``). In-sample, the network is over-confident, so small
SEG gains there can be noise. This benchmark records, for every kept fine-tuned version
(``finetune_modalities.py --keep DIR``, any config, budget and frame count; the start
model is read from the file name, ``default@cells_...`` for ``cells``):

- in-sample: F1, median count error and SEG on its corrections of the start model's
  settings and of the quick grid's best (``tune_postprocess`` without a baseline);
- out of sample: the same on the frames ``finetune_modalities.py`` scores (never trained
  on) with either settings, at the version's default object size.

Any keep rule can then be scored offline. ``--summary`` compares SEG margins (the tuned
settings win when their in-sample SEG is higher by more than the margin; 0 is the rule
until now), applied to any tuned settings or only to settings that drop more than the
start's (``evaluation.drops_more``: a higher foreground threshold, minimum size or
``min_peak``; the shipped form), and chooses one leaving one modality out: for each
modality, the rule with the best median, over the other modalities, of their mean SEG
across versions.

    python benchmarks/retune_margin.py --keep /tmp/versions /tmp/versions2 ...
    python benchmarks/retune_margin.py --summary

Rows go to docs/results/retune_margin.json, or ``--out`` (one per version file; re-runs
skip done ones).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path

import numpy as np
from finetune_modalities import MODALITIES, kept_version  # same folder: benchmarks/

import segloop.core.evaluation as evaluation
import segloop.core.training as training
from segloop.core.evaluation import drops_more
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.segment import SegmentOptions
from segloop.core.training import TrainConfig, tune_iter

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "retune_margin.json"
MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 1.0)


def _scores(result) -> list[float]:
    return [round(result.f1, 4), round(result.count_error, 4), round(result.seg, 4)]


def in_sample(bundle, corrected, start_settings: dict) -> tuple[list, list, dict]:
    """(start's scores, best's scores, best's settings) on the corrections."""
    found = {}
    original = training.tune_postprocess

    def both(probabilities, labels, diameter, distances=None, baseline=None, **options):
        best = original(probabilities, labels, diameter, distances, **options)
        keys = (*best.settings, "min_seed_size")
        current = {key: start_settings[key] for key in keys if key in start_settings}
        groups = options.get("groups")
        found["start"] = evaluation._score_settings(
            probabilities, labels, distances, current, 0.0, groups
        )
        found["best"] = best
        return best

    training.tune_postprocess = both
    try:
        config = TrainConfig(minutes=1, tune_grid="quick", device="cpu")
        run_to_end(tune_iter(bundle, corrected, config))
    finally:
        training.tune_postprocess = original
    return _scores(found["start"]), _scores(found["best"]), dict(found["best"].settings)


def out_of_sample(path: Path, scored, settings: dict) -> list[float]:
    bundle = load_model(path)
    bundle.metadata["postprocess"] = settings
    report = run_to_end(evaluation.evaluate_iter(bundle, scored, SegmentOptions()))
    return [
        round(report.matches.f1, 4),
        round(float(np.median(report.count_errors)), 4),
        round(report.seg, 4),
    ]


def run_one(path: Path) -> dict:
    config, start, modality, frames, budget = kept_version(path)
    corrected, scored = (make() for make in MODALITIES[modality])
    start_settings = dict(start_settings_of(start))
    bundle = load_model(path)
    bundle.metadata["postprocess"] = dict(start_settings)  # as before the version's tuning
    in_start, in_best, best_settings = in_sample(bundle, corrected[:frames], start_settings)
    return {
        "version": str(path),
        "config": config,
        "start": start,
        "modality": modality,
        "frames": frames,
        "budget_s": budget,
        "in_start": in_start,
        "in_best": in_best,
        "best_settings": best_settings,
        "out_start": out_of_sample(path, scored, start_settings),
        "out_best": out_of_sample(path, scored, {**start_settings, **best_settings}),
    }


@functools.cache
def start_settings_of(start: str) -> dict:
    """The start model's post-processing (a copy to read; loaded once per start)."""
    return dict(load_model(start).postprocess)


def chosen_seg(row: dict, margin: float, only_dropping: bool = True) -> float:
    """Out-of-sample SEG of the settings a keep rule with this SEG margin picks; with
    ``only_dropping`` (the shipped rule) the margin applies only to tuned settings that
    drop more than the start's (``evaluation.drops_more``)."""
    dropping = drops_more(row["best_settings"], start_settings_of(row["start"]))
    needed = margin if dropping or not only_dropping else 0.0
    tuned_wins = row["in_best"][2] > row["in_start"][2] + needed
    return row["out_best" if tuned_wins else "out_start"][2]


def per_modality(rows: list[dict], rule: tuple[bool, float], modalities: list[str]) -> list:
    return [
        statistics.mean(chosen_seg(r, rule[1], rule[0]) for r in rows if r["modality"] == m)
        for m in modalities
    ]


def summary(rows: list[dict]) -> None:
    modalities = sorted({r["modality"] for r in rows})
    print(f"{len(rows)} versions; mean out-of-sample SEG per modality ({', '.join(modalities)})")
    rules = [(only, margin) for only in (False, True) for margin in MARGINS]
    for rule in rules:
        values = per_modality(rows, rule, modalities)
        cells = " ".join(f"{v:.3f}" for v in values)
        median, mean = statistics.median(values), statistics.mean(values)
        name = f"{'dropping only' if rule[0] else 'any'} {rule[1]:<5}"
        print(f"  margin {name} {cells}  median {median:.3f} mean {mean:.3f}")
    for name, key in (("never tune", "out_start"), ("always tune", "out_best")):
        values = [
            statistics.mean(r[key][2] for r in rows if r["modality"] == m) for m in modalities
        ]
        cells = " ".join(f"{v:.3f}" for v in values)
        print(f"  {name:12s} {cells}  median {statistics.median(values):.3f}")
    print("leave one modality out (rule chosen on the others' median; ties: smaller, any):")
    picked, current = [], []
    for held in modalities:
        others = [m for m in modalities if m != held]
        rule = max(
            rules,
            key=lambda r: (statistics.median(per_modality(rows, r, others)), -r[1], -r[0]),
        )
        value = per_modality(rows, rule, [held])[0]
        before = per_modality(rows, (False, 0.0), [held])[0]
        picked.append(value)
        current.append(before)
        print(f"  {held}: {rule} -> SEG {value:.3f} (margin 0: {before:.3f})")
    print(
        f"  median over held-out modalities {statistics.median(picked):.3f} "
        f"(margin 0: {statistics.median(current):.3f}); mean {statistics.mean(picked):.3f} "
        f"({statistics.mean(current):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, nargs="*", default=[], help="folders of versions")
    parser.add_argument("--out", type=Path, default=OUT, help="results JSON")
    parser.add_argument("--summary", action="store_true", help="print the summary and stop")
    args = parser.parse_args()
    out = args.out
    rows = json.loads(out.read_text()) if out.exists() else []
    if not args.summary:
        done = {r["version"] for r in rows}
        for folder in args.keep:
            for path in sorted(folder.glob("*.safetensors")):
                if str(path) in done:
                    continue
                rows.append(run_one(path))
                print(json.dumps(rows[-1]), flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(rows, indent=1))
    summary(rows)


if __name__ == "__main__":
    main()
