"""Flip/rotation averaging (``--tta``) for fine-tuned versions: does it pay?

For every kept fine-tuned version (``finetune_modalities.py --keep DIR``; the modality is
read from the file name) the frames ``finetune_modalities.py`` scores are segmented with
the version's defaults, once as they are and once with the 8 flips/rotations averaged,
and SEG / F1 are recorded with the prediction time. Two frames and two CPU-minutes leave
a network that is unsure away from what it saw; averaging its outputs over the
symmetries is the classic cheap fix, at 8x the prediction time.

    python benchmarks/tta_versions.py --keep /tmp/versions [--configs default seed1]
        [--out docs/results/tta_versions.json]

Only the configs named are scored (``CONFIG[@START]`` prefixes of the kept files).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from finetune_modalities import MODALITIES, kept_version  # same folder: benchmarks/

from segloop.core.evaluation import evaluate_iter
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.segment import SegmentOptions

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "tta_versions.json"


def score(path: Path, frames, tta: bool) -> dict:
    """SEG, F1 and seconds of one version with or without flip/rotation averaging."""
    bundle = load_model(path)
    start = time.perf_counter()
    report = run_to_end(evaluate_iter(bundle, frames, SegmentOptions(tta=tta)))
    return {
        "seg": round(report.seg, 4),
        "f1": round(report.matches.f1, 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, nargs="+", required=True)
    parser.add_argument("--configs", nargs="+", default=["default", "seed1"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = json.loads(args.out.read_text()) if args.out.exists() else {}
    for folder in args.keep:
        for path in sorted(folder.glob("*.safetensors")):
            config, start, modality, _, _ = kept_version(path)
            if config.split("@")[0] not in args.configs:
                continue
            frames = MODALITIES[modality][1]()
            row = {"config": config, "start": start, "modality": modality}
            row["plain"] = score(path, frames, False)
            row["tta"] = score(path, frames, True)
            rows[path.name] = row
            print(path.name, json.dumps(row), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
