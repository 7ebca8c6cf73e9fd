"""Blend each fine-tuned version with its start model (WiSE-FT, Wortsman et al. 2022):
does a point between the two generalise better than the version itself?

The weights (batch-norm statistics included) become ``(1 - a) * start + a * version``
for each ``a`` in ``--alphas``; ``a = 1`` is the version. Each blend keeps the
version's metadata (its post-processing was tuned for ``a = 1``, so the blend is scored
with settings chosen for another network: a screen, not a tuned recipe). Scored on the
modality's scored frames (SEG, F1) and on its corrections (``fit_seg``).

    python benchmarks/finetune_modalities.py --configs steps500 steps500-seed1 \\
        --budgets 900 --out /tmp/base.json --keep /tmp/keep   # once per start model
    python benchmarks/weight_interpolation.py /tmp/keep --alphas 0.5 0.75 \\
        --out docs/results/finetune_wise.json

The versions' names (``--keep``) say their start model and modality.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from finetune_modalities import MODALITIES, kept_version, score  # same folder

from segloop.core.modelio import ModelBundle, load_model, save_model, with_distance_head


def blended(start: ModelBundle, version: ModelBundle, share: float) -> ModelBundle:
    """A copy of ``version`` whose weights are ``(1 - share) * start + share * version``
    (integer buffers, e.g. batch-norm step counts, are the version's)."""
    if version.config.distance_head and not start.config.distance_head:
        start = with_distance_head(start)  # how the fine-tune started
    start_state = start.network.state_dict()
    mixed = {
        key: torch.lerp(start_state[key].float(), value.float(), share)
        if value.is_floating_point()
        else value
        for key, value in version.network.state_dict().items()
    }
    network = load_model(version.path).network
    network.load_state_dict(mixed)
    return ModelBundle(version.config, network, version.metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("keep", type=Path, help="folder of --keep versions")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(row["file"], row["alpha"]) for row in rows}
    for path in sorted(args.keep.glob("*.safetensors")):
        config, start_name, modality, frames, _ = kept_version(path)
        version, start = load_model(path), load_model(start_name)
        corrected, scored = (make() for make in MODALITIES[modality])
        for alpha in args.alphas:
            if (path.name, alpha) in done:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                blend = save_model(blended(start, version, alpha), Path(tmp) / "blend.safetensors")
                after, fit = score(blend, scored), score(blend, corrected[:frames])
            row = {
                "file": path.name,
                "config": config,
                "start": start_name,
                "modality": modality,
                "alpha": alpha,
                "seg": after["seg"],
                "f1": after["f1"],
                "fit_seg": fit["seg"],
            }
            rows.append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=1))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
