"""Test-time batch-norm adaptation (AdaBN): does re-estimating the BatchNorm statistics
on each image help the shipped models on images from other labs?

Before every prediction pass (so at each scale that ``diameter: auto`` tries), one
forward pass of the whole image in training mode measures each BatchNorm layer's mean
and variance on that image; the layer then predicts with ``share`` x those statistics +
(1 - share) x the stored ones. ``share`` 0 is the shipped behaviour.

    python benchmarks/test_time_norm.py nuclei bitdepth,miccai,fluo_n2dl,dsb_val 0,0.25,0.5,0.75
    python benchmarks/test_time_norm.py cells usiigaci_test,dic_hela 0,0.25,0.5,0.75

Sets as in ``scale_robustness.py``. Rows go to docs/results/test_time_norm.json.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import scale_robustness  # same folder: benchmarks/
import torch

import segloop.core.passes as passes
import segloop.core.predict as predict
from segloop.core.evaluation import evaluate_iter
from segloop.core.modelio import load_model
from segloop.core.progress import run_to_end
from segloop.core.segment import SegmentOptions

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "test_time_norm.json"
SHIPPED_PASS = predict.predict_probabilities_iter
SHARE = {"value": 0.0}


def _image_statistics(network: torch.nn.Module, image: np.ndarray) -> None:
    """Mix each BatchNorm layer's stored statistics with those of ``image``."""
    layers = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stored = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
    x = torch.from_numpy(np.ascontiguousarray(image[None] if image.ndim == 2 else image))
    x = x.float()[None]
    pad_h, pad_w = (-x.shape[-2]) % 16, (-x.shape[-1]) % 16
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # the plain average of what this pass sees
        m.train()
    with torch.no_grad():
        network(x)
    share = SHARE["value"]
    for m, (mean, var) in zip(layers, stored, strict=True):
        m.running_mean.mul_(share).add_(mean * (1 - share))
        m.running_var.mul_(share).add_(var * (1 - share))
        m.momentum = 0.1
        m.eval()


def adapted_pass(bundle, image, *args, **kwargs):
    """``predict_probabilities_iter`` with the statistics of ``image`` mixed in."""
    if SHARE["value"] <= 0:
        return (yield from SHIPPED_PASS(bundle, image, *args, **kwargs))
    saved = copy.deepcopy(bundle.network.state_dict())
    _image_statistics(bundle.network, image)
    try:
        return (yield from SHIPPED_PASS(bundle, image, *args, **kwargs))
    finally:
        bundle.network.load_state_dict(saved)


def main() -> None:
    model, sets, shares = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
    passes.predict_probabilities_iter = adapted_pass
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    for set_name in sets:
        data = scale_robustness.SETS[set_name]()
        for share in map(float, shares):
            SHARE["value"] = share
            start = time.monotonic()
            report = run_to_end(evaluate_iter(load_model(model), data, SegmentOptions()))
            row = {
                "model": model,
                "set": set_name,
                "share": share,
                "seg": round(report.seg, 4),
                "f1": round(report.matches.f1, 4),
                "seconds": round(time.monotonic() - start, 1),
            }
            print(json.dumps(row), flush=True)
            key = (model, set_name, share)
            rows = [r for r in rows if (r["model"], r["set"], r["share"]) != key]
            rows.append(row)
            OUT.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
