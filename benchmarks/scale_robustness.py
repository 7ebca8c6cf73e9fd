"""Does the default object-size handling hold when objects are smaller or larger than in
training? Scores a model on its validation images rescaled 0.33x-6x, and on shared sets
it never trained on, for several object-size modes.

    python benchmarks/scale_robustness.py --model nuclei --sets dsb_val bitdepth \
        --modes native auto auto-1 --scales 0.33 0.5 1 2 4 6

``dsb_val`` is the nuclei model's validation split (scripts/splits/nuclei.json), each
image cut to its central 340 x 340 pixels at most so that the 6x version stays within
2,040 pixels a side (the same cut at every scale, so the rows compare like with like).
It is where the size-mode defaults are chosen. ``bitdepth`` (DAPI tissue at 20x-63x),
``fluo_n2dl`` (CTC, internal) and ``miccai`` (H&E, internal) are checks at their own
scale: the model never trained on them and they choose nothing. ``usiigaci_test`` and
``dic_hela`` are the same for the cells model.

Modes: ``native`` (no rescaling), ``auto`` (the shipped multi-pass measurement),
``auto-1`` (one measuring pass then one rescaled pass with the first pass's outlines, the
behaviour before issue #20), ``auto-2`` (the same without the outlines), ``auto-refine``
(the multi-pass measurement with the first pass's outlines), ``auto-range`` (the first
pass kept anywhere inside the trained range), ``auto-up1.6`` (kept from the range's low
end up to 1.6x the model's diameter, what ``auto`` does), ``auto-tol`` / ``auto-tol1.3``
(the first pass kept only within 1.15x / 1.3x of the model's diameter instead of inside
its trained range), ``auto-probes2`` (two coarse probes before the fixed point, an option
kept off: ``auto`` is ``auto-probes0``), ``auto-size`` / ``auto-nosize`` (with /
without the model's learned size estimate; ``auto-disagree1.5``: used when it differs
from the first pass's objects by over 1.5x instead of 2x; ``auto-larger``: only when
it is the larger), ``auto-target1.25``
(the rescaled passes give the objects 1.25x the model's diameter instead of 1x); variants
join with ``+`` (``auto-probes2+target1.3``); ``auto-beyond0`` believes any probe whose
objects are of a trained size at its own scale (the first version of the probes),
``auto-coverage0`` drops the probes' coverage condition (the second version). ``true``
(the true median diameter, as a user who knows it would type), ``oracle`` (the image
brought back to its original scale exactly: the ceiling of any size estimator, what is
left being the detail lost or interpolated by the rescaling itself), ``default`` (the
model's stored default: what a user gets without choosing).
Rows are appended to docs/results/scale_robustness.json keyed by model, set, mode, scale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential

import segloop.core.auto_size as auto_size_module
from segloop.core.datasets import load_labels, load_pairs
from segloop.core.evaluation import LabelledImage, evaluate_iter
from segloop.core.imageio import read_image
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.scale import estimate_diameter, rescale_labels, rescale_raw_image
from segloop.core.segment import SegmentOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "docs" / "results" / "scale_robustness.json"
CUT = 340


def _central(item: LabelledImage, side: int = CUT) -> LabelledImage:
    height, width = item.labels.shape
    y0, x0 = max(0, (height - side) // 2), max(0, (width - side) // 2)
    window = (slice(y0, y0 + side), slice(x0, x0 + side))
    labels = relabel_sequential(item.labels[window].astype(np.int32))[0]
    return LabelledImage(item.image[window], labels, item.name)


def _folder_pairs(folder: Path, names: list[str] | None = None) -> list[LabelledImage]:
    out = []
    for image_path in sorted((folder / "images").iterdir()):
        if names is not None and image_path.name not in names and image_path.stem not in names:
            continue
        mask = next((folder / "masks").glob(image_path.stem + ".*"))
        labels = relabel_sequential(load_labels(mask).astype(np.int32))[0]
        out.append(LabelledImage(read_image(image_path), labels, image_path.name))
    return out


def _dsb(part: str, cut: bool) -> list[LabelledImage]:
    split = json.loads((ROOT / "scripts" / "splits" / "nuclei.json").read_text())
    folder = SHARED / "dsb2018_stage1_train_fixed"
    by_name = {d.name: d for d in load_pairs(folder / "images", folder / "masks")}
    return [_central(by_name[name]) if cut else by_name[name] for name in split[part]]


def dsb_val() -> list[LabelledImage]:
    return _dsb("val", cut=True)


def bitdepth(tissues: tuple[str, ...] | None = None) -> list[LabelledImage]:
    from segloop.core.splits import bitdepth_tissue

    data = _folder_pairs(SHARED / "bitdepth_dapi_tissue_nuclei")
    return [d for d in data if tissues is None or bitdepth_tissue(d.name) in tissues]


def bitdepth_by_objective(objective: str) -> list[LabelledImage]:
    from segloop.core.splits import bitdepth_objective

    return [d for d in bitdepth() if bitdepth_objective(d.name) == objective]


def ecoli_test() -> list[LabelledImage]:
    from finetune_loop import ecoli_frames  # same folder: benchmarks/

    return ecoli_frames([6, 7, 8, 9])


SETS = {
    "dsb_val": dsb_val,
    "dsb_test": lambda: _dsb("test", cut=False),
    "bitdepth": bitdepth,
    # the tissue the retrained nuclei model holds out (scripts/splits/nuclei_bitdepth.json)
    "bitdepth_liver": lambda: bitdepth(("liver",)),
    # one objective each (another magnification of the same lab's sections)
    **{
        f"bitdepth_{objective}": (lambda o=objective: bitdepth_by_objective(o))
        for objective in ("20x", "40x_air", "40x_oil", "63x_oil")
    },
    "ecoli_test": ecoli_test,
    "fluo_n2dl": lambda: _folder_pairs(SHARED / "ctc_fluo_n2dl_hela_dense_gt"),
    "miccai": lambda: _folder_pairs(SHARED / "miccai2015_he_nuclei"),
    "usiigaci_test": lambda: _folder_pairs(
        SHARED / "usiigaci_phase_nih3t3", [f"val_set{i}" for i in range(46, 51)]
    ),
    "dic_hela": lambda: _folder_pairs(SHARED / "ctc_dic_c2dh_hela" / "gt_frames"),
}


def rescaled(data: list[LabelledImage], scale: float) -> list[LabelledImage]:
    if scale == 1.0:
        return data
    return [
        LabelledImage(
            rescale_raw_image(item.image, scale), rescale_labels(item.labels, scale), item.name
        )
        for item in data
    ]


def _apply_variant(mode: str) -> None:
    """Set auto_size_module's 'auto' knobs for one variant name, e.g. ``auto-target1.3``."""
    if mode == "auto-range":  # the whole trained range, up to its top
        auto_size_module.AUTO_UPPER = None
    if mode.startswith("auto-up"):  # the range's low end, this many x the diameter up
        auto_size_module.AUTO_UPPER = float(mode[len("auto-up") :])
    if mode.startswith("auto-tol"):  # tolerance band instead of the trained range
        auto_size_module.AUTO_USE_RANGE = False
        if mode != "auto-tol":
            auto_size_module.SCALE_TOLERANCE = float(mode[len("auto-tol") :])
    if mode.startswith("auto-probes"):  # this many coarse probes (0: before the probes)
        auto_size_module.AUTO_PROBES = int(mode[len("auto-probes") :])
    if mode.startswith("auto-beyond"):  # probes believed beyond this x the range's top
        auto_size_module.AUTO_PROBE_BEYOND = float(mode[len("auto-beyond") :])
    if mode.startswith("auto-coverage"):  # probes believed above this x the coverage
        auto_size_module.AUTO_PROBE_COVERAGE = float(mode[len("auto-coverage") :])
    if mode.startswith("auto-target"):  # rescaled passes aim at this many x the diameter
        auto_size_module.AUTO_TARGET = float(mode[len("auto-target") :])
    if mode in ("auto-size", "auto-nosize"):  # with / without the learned size estimate
        auto_size_module.AUTO_SIZE_MODEL = mode == "auto-size"
    if mode == "auto-larger":  # the size estimate used only when larger than found
        auto_size_module.AUTO_SIZE_SMALLER = False
    if mode.startswith("auto-disagree"):  # size estimate used beyond this x disagreement
        auto_size_module.AUTO_SIZE_DISAGREE = float(mode[len("auto-disagree") :])
    if mode == "auto-1":  # before issue #20: one rescaled pass, outlines refined
        auto_size_module.AUTO_MAX_PASSES, auto_size_module.AUTO_REFINE = 2, True
    if mode == "auto-refine":
        auto_size_module.AUTO_REFINE = True
    if mode == "auto-2":
        auto_size_module.AUTO_MAX_PASSES = 2


def run(model: str, set_name: str, mode: str, scale: float, data: list[LabelledImage]) -> dict:
    bundle = load_model(model)
    saved = {
        name: getattr(auto_size_module, name)
        for name in (
            "AUTO_MAX_PASSES",
            "AUTO_REFINE",
            "AUTO_USE_RANGE",
            "AUTO_UPPER",
            "SCALE_TOLERANCE",
            "AUTO_TARGET",
            "AUTO_PROBES",
            "AUTO_PROBE_BEYOND",
            "AUTO_PROBE_COVERAGE",
            "AUTO_SIZE_MODEL",
            "AUTO_SIZE_DISAGREE",
            "AUTO_SIZE_SMALLER",
        )
    }
    for variant in mode.split("+"):  # e.g. auto-probes2+target1.3: both variants at once
        _apply_variant(
            variant if variant.startswith(("auto", "true", "oracle")) else f"auto-{variant}"
        )
    start = time.perf_counter()
    try:
        if mode == "true":  # per image: its own true median diameter
            reports = [
                run_to_end(
                    evaluate_iter(
                        bundle, [item], SegmentOptions(diameter=estimate_diameter(item.labels))
                    )
                )
                for item in data
            ]
            tp = sum(r.matches.tp for r in reports)
            fp = sum(r.matches.fp for r in reports)
            fn = sum(r.matches.fn for r in reports)
            errors = [e for r in reports for e in r.count_errors]
            weights = [r.matches.tp + r.matches.fn for r in reports]
            seg = float(np.average([r.seg for r in reports], weights=weights))
        else:
            if mode == "oracle":  # factor 1/scale exactly: back to the original pixels
                diameter = bundle.diameter * scale
            else:
                diameter = {"default": None}.get(mode, "auto" if mode.startswith("auto") else mode)
            report = run_to_end(evaluate_iter(bundle, data, SegmentOptions(diameter=diameter)))
            tp, fp, fn = report.matches.tp, report.matches.fp, report.matches.fn
            errors, seg = report.count_errors, report.seg
    finally:
        for name, value in saved.items():
            setattr(auto_size_module, name, value)
    seconds = time.perf_counter() - start
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    return {
        "model": model,
        "set": set_name,
        "mode": mode,
        "scale": scale,
        "f1": round(f1, 4),
        "precision": round(tp / max(1, tp + fp), 4),
        "recall": round(tp / max(1, tp + fn), 4),
        "seg": round(float(seg), 4),
        "median_count_error": round(float(np.median(errors)), 4),
        "n_images": len(data),
        "n_objects": int(tp + fn),
        "seconds": round(seconds, 1),
    }


def save(row: dict) -> None:
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    key = ("model", "set", "mode", "scale")
    rows = [r for r in rows if tuple(r[k] for k in key) != tuple(row[k] for k in key)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows + [row], indent=1))


def summary(model: str, set_name: str) -> None:
    """Markdown table of F1 (median count error) per mode and scale."""
    rows = [r for r in json.loads(OUT.read_text()) if r["model"] == model and r["set"] == set_name]
    scales = sorted({r["scale"] for r in rows})
    modes = sorted({r["mode"] for r in rows})
    print("| mode | " + " | ".join(f"{s:g}x" for s in scales) + " | mean |")
    print("|---" * (len(scales) + 2) + "|")
    for mode in modes:
        cells, f1s = [], []
        for scale in scales:
            found = [r for r in rows if r["mode"] == mode and r["scale"] == scale]
            if found:
                f1s.append(found[0]["f1"])
                cells.append(f"{found[0]['f1']:.3f} ({100 * found[0]['median_count_error']:.0f} %)")
            else:
                cells.append("")
        mean = f"{np.mean(f1s):.3f}" if len(f1s) == len(scales) else ""
        print(f"| {mode} | " + " | ".join(cells) + f" | {mean} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--sets", nargs="+", default=["dsb_val"], choices=sorted(SETS))
    parser.add_argument("--modes", nargs="+", default=["native", "auto"])
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0])
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set")
    parser.add_argument("--summary", action="store_true", help="print the tables and stop")
    args = parser.parse_args()
    if args.summary:
        for set_name in args.sets:
            print(f"\n{args.model} on {set_name}: F1@0.5 (median count error)\n")
            summary(args.model, set_name)
        return
    for set_name in args.sets:
        base = SETS[set_name]()[: args.limit]
        for scale in args.scales:
            data = rescaled(base, scale)
            for mode in args.modes:
                row = run(args.model, set_name, mode, scale, data)
                save(row)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
