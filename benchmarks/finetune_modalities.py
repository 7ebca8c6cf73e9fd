"""Leave one modality out: does the correct-and-retrain loop adapt a shipped model to a
modality it never saw, in CPU-minutes?

For every modality in ../shared/data the shipped ``nuclei`` model (trained on DSB2018
only) is fine-tuned through the core service (:func:`segloop.core.finetune.finetune_iter`,
what the Train button and ``segloop finetune`` run) on 1 or 2 "corrected" frames (their
ground truth stands in for the user's corrections), for fixed budgets, and scored on
frames never used: another sequence, far-apart frames, or other fields.

    python benchmarks/finetune_modalities.py --configs today crop128 --frames 2 --budgets 120

Each row goes to docs/results/finetune_modalities.json (appended, keyed by config,
modality, frames, budget). ``--summary`` prints the per-modality table, the median across
modalities, and which config a leave-one-modality-out choice picks for each modality
(the config with the best median SEG over the *other* modalities).

CTC and MICCAI data stay internal: projects and models go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from finetune_configs import CONFIGS  # same folder: benchmarks/
from finetune_loop import ecoli_frames
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential
from unlabelled_frames import unlabelled_frames

from segloop.core.datasets import load_labels
from segloop.core.evaluation import LabelledImage, evaluate_iter
from segloop.core.finetune import (
    DEFAULTS,
    build_request,
    check_predict_size,
    finetune_iter,
    replay_data,
)
from segloop.core.imageio import read_image
from segloop.core.modelio import load_model, save_model
from segloop.core.progress import run_to_end
from segloop.core.project import Project
from segloop.core.samples import NATIVE_RANGE
from segloop.core.segment import SegmentOptions
from segloop.core.training import median_diameter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "docs" / "results" / "finetune_modalities.json"


def _pairs(folder: Path, names: list[str], mask_folder: str = "masks") -> list[LabelledImage]:
    out = []
    for name in names:
        image = next((folder / "images").glob(f"{name}.*"))
        mask = next((folder / mask_folder).glob(f"{name}.*"))
        labels = relabel_sequential(load_labels(mask).astype(np.int32))[0]
        out.append(LabelledImage(read_image(image), labels, name))
    return out


def isbi(indices: list[int]) -> list[LabelledImage]:
    folder = SHARED / "isbi2012_em_membranes" / "train"
    out = []
    for index in indices:
        image = read_image(folder / "images" / f"train_{index:02d}.png")
        cells = read_image(folder / "masks" / f"train_{index:02d}.png") > 127
        out.append(LabelledImage(image, connected_components(cells).astype(np.int32), str(index)))
    return out


#: modality -> (corrected frames in order, scored frames), each a loader.
MODALITIES: dict[str, tuple[Callable[[], list], Callable[[], list]]] = {
    "ecoli_phase": (lambda: ecoli_frames([0, 1]), lambda: ecoli_frames([6, 7, 8, 9])),
    "dic_hela": (
        lambda: _pairs(SHARED / "ctc_dic_c2dh_hela" / "gt_frames", ["01_t002", "01_t005"]),
        lambda: _pairs(
            SHARED / "ctc_dic_c2dh_hela" / "gt_frames", ["01_t039", "01_t054", "01_t067"]
        ),
    ),
    "fluo_n2dl_hela": (  # corrected in sequence 01, scored on sequence 02
        lambda: _pairs(SHARED / "ctc_fluo_n2dl_hela_dense_gt", ["01_t013", "01_t052"]),
        lambda: _pairs(SHARED / "ctc_fluo_n2dl_hela_dense_gt", ["02_t075", "02_t079"]),
    ),
    "usiigaci_phase": (
        lambda: _pairs(SHARED / "usiigaci_phase_nih3t3", ["train_set1", "train_set2"]),
        lambda: _pairs(SHARED / "usiigaci_phase_nih3t3", ["val_set46", "val_set47", "val_set48"]),
    ),
    "bitdepth_dapi": (  # corrected: kidney 40x air; scored: other tissues and objectives
        lambda: _pairs(
            SHARED / "bitdepth_dapi_tissue_nuclei",
            ["40x_air__kidney_40x_air_1", "40x_air__kidney_40x_air_2"],
        ),
        lambda: _pairs(
            SHARED / "bitdepth_dapi_tissue_nuclei",
            [
                "20x__heart_20x_1",
                "40x_oil__heart_40x_oil_3",
                "63x_oil__liver_63x_oil_2",
                "40x_air__muscle_40x_air_1",
            ],
        ),
    ),
    "miccai_he": (
        lambda: _pairs(SHARED / "miccai2015_he_nuclei", ["image01", "image02"]),
        lambda: _pairs(SHARED / "miccai2015_he_nuclei", ["image10", "image11", "image12"]),
    ),
    "isbi_em": (lambda: isbi([0, 1]), lambda: isbi([25, 27, 29])),
}


def hematoxylin(items: list[LabelledImage]) -> list[LabelledImage]:
    """The same RGB frames as their hematoxylin channel (colour deconvolution,
    ``skimage.color.rgb2hed``; nuclei bright), the grey input a version would get if
    H&E images were converted that way instead of with BT.601 luma."""
    from segloop.core.imageio import to_grayscale

    return [
        LabelledImage(to_grayscale(item.image, colour="hematoxylin"), item.labels, item.name)
        for item in items
    ]


#: H&E converted to grey by colour deconvolution instead of luma (same frames)
MODALITIES["miccai_he_hema"] = tuple(  # type: ignore[assignment]
    (lambda load=load: hematoxylin(load())) for load in MODALITIES["miccai_he"]
)


def score(model, frames, diameter=None) -> dict:
    bundle = load_model(model)
    report = run_to_end(evaluate_iter(bundle, frames, SegmentOptions(diameter=diameter)))
    return {"seg": round(report.seg, 4), "f1": round(report.matches.f1, 4)}


#: Extra prediction modes a fine-tuned version is scored with (``--modes``): the
#: version's stored default is always scored (``after_seg``); each mode adds
#: ``after_seg[MODE]`` / ``after_f1[MODE]``. "native" is the corrections' scale.
MODES = ("native", "auto")


def score_modes(model, frames, modes) -> dict:
    out = {}
    for mode in modes:
        result = score(model, frames, mode)
        out.update({f"{key}[{mode}]": value for key, value in result.items()})
    return out


def _load_rows() -> list[dict]:
    return json.loads(OUT.read_text()) if OUT.exists() else []


#: What identifies a result row (a newer row with the same values replaces it).
ROW_KEYS = ("config", "modality", "frames", "budget_s")


def _save(row: dict) -> None:
    keys = ROW_KEYS
    rows = [r for r in _load_rows() if tuple(r.get(k) for k in keys) != tuple(row[k] for k in keys)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps([*rows, row], indent=1))
    print(json.dumps(row), flush=True)


def run_one(
    modality: str,
    config: str,
    frames: int,
    budget: float,
    base: str,
    modes: tuple[str, ...] = (),
    keep: Path | None = None,
) -> dict:
    corrected, scored = (make() for make in MODALITIES[modality])
    corrected = corrected[:frames]
    options = dict(CONFIGS[config])
    times = options.pop("start_diameter_times", None)
    if times is not None:
        measured = median_diameter(corrected)
        wanted = min(times * load_model(base).diameter, measured)
        options["target_diameter"] = None if measured <= NATIVE_RANGE[1] else float(wanted)
    if options.pop("rescale_to_start", False):  # even inside the native range
        options["target_diameter"] = float(load_model(base).diameter)
    tune_on_training = options.pop("tune_on_training", DEFAULTS.tune_on_training)
    zoom = options.pop("zoom", None)
    augment_overrides = options.pop("augment", None)
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp) / "project", base_model=base)
        for item in corrected:
            project.add_correction(item.image, item.labels, item.name)
        request = build_request(base, minutes=budget / 60, **options)
        request.score_base = False
        if zoom is not None:
            augment = replace(request.config.augment, scale_range=zoom)
            request.config = replace(request.config, augment=augment)
        if augment_overrides is not None:
            augment = replace(request.config.augment, **augment_overrides)
            request.config = replace(request.config, augment=augment)
        request.tune_on_training = tune_on_training
        if request.config.unlabelled_weight > 0:
            request.unlabelled = unlabelled_frames(modality)
        start = time.monotonic()
        result = run_to_end(finetune_iter(project, request))
        wall = time.monotonic() - start
        after = score(result.version.path, scored)
        after.update(score_modes(result.version.path, scored, modes))
        fit = score(result.version.path, corrected)  # the frames it trained on
        meta = result.version.metadata
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            suffix = "" if base == "nuclei" else f"@{base}"
            target = keep / f"{config}{suffix}_{modality}_{frames}f_{budget:.0f}s.safetensors"
            shutil.copyfile(result.version.path, target)
    return {
        "config": config,
        "modality": modality,
        "frames": frames,
        "budget_s": budget,
        "steps": result.steps,
        "train_s": round(result.seconds, 1),
        "steps_per_min": round(60 * result.steps / max(result.seconds, 1e-9), 1),
        "wall_s": round(wall, 1),
        "validated_on": meta["finetune"]["validated_on"],
        "scale": "rescaled" if meta.get("rescaled") else "native",
        "size_check": meta.get("size_check"),
        "colour_choice": meta.get("colour_choice"),
        "kept_start_postprocess": next(
            (v.get("tuned_kept_current") for v in meta.get("validation", []) if "tuned_f1" in v),
            None,
        ),
        **{f"after_{k}": v for k, v in after.items()},
        **{f"fit_{k}": v for k, v in fit.items()},
    }


def rescore(
    keep: Path, config: str, label: str, modalities, modes, frames, budget, size_check=False
) -> None:
    """Score the versions ``--keep`` stored for ``config`` again with the current
    prediction code (e.g. a changed ``diameter="auto"``), as rows ``label``. With
    ``size_check``, a version trained before the service checked the object size gets
    :func:`~segloop.core.finetune.check_predict_size` on its corrections first, as the
    service now runs it after training."""
    for modality in modalities:
        path = keep / f"{config}_{modality}_{frames}f_{budget:.0f}s.safetensors"
        if not path.is_file():
            continue
        corrected, scored = (make() for make in MODALITIES[modality])
        extra, after = {}, None
        with tempfile.TemporaryDirectory() as tmp:
            bundle = load_model(path) if size_check else None
            if bundle is not None and "size_check" not in bundle.metadata:
                margin = DEFAULTS.size_check_margin
                record = run_to_end(check_predict_size(bundle, corrected[:frames], margin))
                extra = {"size_check": record}
                path = save_model(bundle, Path(tmp) / path.name)
                if record and record["chosen"] == "auto" and not modes:
                    # the version predicts as it did: its scores are the original row's
                    after = _original_scores(config, modality, frames, budget)
            if after is None:
                after = {**score(path, scored), **score_modes(path, scored, modes)}
        row = {"config": label, "modality": modality, "frames": frames, "budget_s": budget}
        _save({**row, **{f"after_{k}": v for k, v in after.items()}, **extra})


def _original_scores(config: str, modality: str, frames: int, budget: float) -> dict | None:
    """SEG and F1 of the row ``config`` already in the results for this run, if any."""
    wanted = (config, modality, frames, budget)
    for row in _load_rows():
        if tuple(row.get(k) for k in ROW_KEYS) == wanted:
            return {"seg": row["after_seg"], "f1": row["after_f1"]}
    return None


def kept_version(path: Path) -> tuple[str, str, str, int, float]:
    """(``CONFIG[@START]``, start model, modality, frames, budget in s) of a ``--keep``
    file, named ``CONFIG[@START]_MODALITY_{FRAMES}f_{BUDGET}s.safetensors`` by
    :func:`run_one`."""
    config, rest = path.name[: -len(".safetensors")].split("_", 1)
    start = config.split("@")[1] if "@" in config else "nuclei"
    modality, frames, budget = rest.rsplit("_", 2)
    return config, start, modality, int(frames[:-1]), float(budget[:-1])


def forgetting(keep: Path, out: Path) -> None:
    """SEG / F1 of every ``--keep`` version on its start model's shipped validation images
    (what the versions table shows as "did it forget what it knew?"), to ``out``."""
    rows, images_of = {}, {}
    for path in sorted(keep.glob("*.safetensors")):
        base = kept_version(path)[1]
        if base not in images_of:  # the start model's images and its own scores, once
            images_of[base] = replay_data(load_model(base), "val")
            if images_of[base]:
                rows[base] = score(base, images_of[base])
        if not images_of[base]:
            continue  # the start model ships no validation images
        rows[path.name] = score(path, images_of[base])
        print(path.name, rows[path.name], flush=True)
    out.write_text(json.dumps(rows, indent=1))


def before_row(modality: str, base: str) -> dict:
    """The start model on the scored frames: native scale and the corrections' size."""
    corrected, scored = (make() for make in MODALITIES[modality])
    native = score(base, scored)
    typed = median_diameter(corrected)
    sized = score(base, scored, typed)
    best = max(native, sized, key=lambda s: s["seg"])
    return {"config": "before", "modality": modality, "frames": 0, "budget_s": 0, **best}


def summary() -> None:
    rows = _load_rows()
    before = {
        (r["modality"], r["config"][len("before") :]): r
        for r in rows
        if r["config"].startswith("before")
    }
    runs = [r for r in rows if not r["config"].startswith("before")]
    groups = sorted({(r["config"], r["frames"], r["budget_s"]) for r in runs})
    for config, frames, budget in groups:
        part = {
            r["modality"]: r
            for r in runs
            if (r["config"], r["frames"], r["budget_s"]) == (config, frames, budget)
        }
        print(f"\n## {config}, {frames} frame(s), {budget:.0f} s")
        print(
            "| modality | SEG before | SEG after | gain | F1 before | F1 after "
            "| steps per budget minute | wall s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        gains, segs, speeds = [], [], []
        base_suffix = config[config.index("@") :] if "@" in config else ""
        for modality, row in sorted(part.items()):
            old = before.get((modality, base_suffix), {})
            gain = row["after_seg"] - old.get("seg", float("nan"))
            gains.append(gain)
            segs.append(row["after_seg"])
            speeds.append(60 * row["steps"] / row["budget_s"])
            print(
                f"| {modality} | {old.get('seg', float('nan')):.3f} | {row['after_seg']:.3f} | "
                f"{gain:+.3f} | {old.get('f1', float('nan')):.3f} | {row['after_f1']:.3f} | "
                f"{speeds[-1]:.0f} | {row['wall_s']:.0f} |"
            )
        print(
            f"| **median ({len(segs)})** | | **{statistics.median(segs):.3f}** | "
            f"**{statistics.median(gains):+.3f}** | | | {statistics.median(speeds):.0f} | |"
        )
    _leave_one_out(runs)


def _leave_one_out(runs: list[dict]) -> None:
    """For each modality, the config with the best median SEG on the other modalities."""
    for frames, budget in sorted({(r["frames"], r["budget_s"]) for r in runs}):
        table = {}
        for r in runs:
            if (r["frames"], r["budget_s"]) == (frames, budget):
                table.setdefault(r["config"], {})[r["modality"]] = r["after_seg"]
        modalities = sorted(set.intersection(*(set(v) for v in table.values())))
        if len(table) < 2 or len(modalities) < 2:
            continue
        print(f"\nleave-one-modality-out choice, {frames} frame(s), {budget:.0f} s:")
        picked = []
        for held in modalities:
            others = [m for m in modalities if m != held]
            best = max(table, key=lambda c: statistics.median(table[c][m] for m in others))
            picked.append(table[best][held])
            print(f"  {held}: {best} (SEG {table[best][held]:.3f})")
        print(f"  median SEG of the left-out choices: {statistics.median(picked):.3f}")


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=["default"], choices=sorted(CONFIGS))
    parser.add_argument("--modalities", nargs="+", default=sorted(MODALITIES))
    parser.add_argument("--frames", type=int, nargs="+", default=[2])
    parser.add_argument("--budgets", type=float, nargs="+", default=[120])
    parser.add_argument(
        "--base",
        default="nuclei",
        help="start model; rows of another than nuclei are labelled config@BASE",
    )
    parser.add_argument("--summary", action="store_true", help="print the tables and stop")
    parser.add_argument(
        "--modes", nargs="*", default=[], choices=MODES, help="also score these diameters"
    )
    parser.add_argument("--keep", type=Path, help="copy every fine-tuned version here")
    parser.add_argument("--out", type=Path, default=OUT, help="results JSON (rows appended)")
    parser.add_argument(
        "--rescore",
        metavar="LABEL",
        help="score the --keep versions of --configs again (current code) as rows LABEL",
    )
    parser.add_argument(
        "--size-check",
        action="store_true",
        help="with --rescore: run the service's object-size check on older versions first",
    )
    parser.add_argument(
        "--forgetting",
        type=Path,
        metavar="FILE",
        help="score the --keep versions on their start model's validation images, to FILE",
    )
    args = parser.parse_args()
    OUT = args.out
    if args.forgetting:
        forgetting(args.keep, args.forgetting)
        return
    if args.summary:
        summary()
        return
    if args.rescore:
        for frames in args.frames:
            for budget in args.budgets:
                rescore(
                    args.keep,
                    args.configs[0],
                    args.rescore,
                    args.modalities,
                    tuple(args.modes),
                    frames,
                    budget,
                    args.size_check,
                )
        return
    suffix = "" if args.base == "nuclei" else f"@{args.base}"
    done = {(r["config"], r["modality"], r["frames"], r["budget_s"]) for r in _load_rows()}
    for modality in args.modalities:
        if ("before" + suffix, modality, 0, 0) not in done:
            _save({**before_row(modality, args.base), "config": "before" + suffix})
    for modality in args.modalities:  # configs side by side, under the same machine load
        for frames in args.frames:
            for budget in args.budgets:
                for config in args.configs:
                    row = run_one(
                        modality, config, frames, budget, args.base, tuple(args.modes), args.keep
                    )
                    _save({**row, "config": config + suffix})


if __name__ == "__main__":
    main()
