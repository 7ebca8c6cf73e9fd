"""Frames nobody corrected, per modality of ``finetune_modalities.py``: what a user
fine-tuning on two corrected frames also has in the stack or folder in front of them.

They are never the scored frames nor the corrected ones, and they are chosen by a rule
that looks at file names only (no scores): the next frames of the same time-lapse or
stack, far from the scored ones; the next fields of the same experiment; the same
tissue at the other objectives (BitDepth; its scored frames are other tissues).
Fluo-N2DL-HeLa has no frames beyond the four with ground truth in ../shared, so it
gets none (its rows equal the plain recipe's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segloop.core.imageio import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _files(folder: Path, names: list[str]) -> list[np.ndarray]:
    return [read_image(next(folder.glob(f"{name}.*"))) for name in names]


def unlabelled_frames(modality: str) -> list[np.ndarray]:
    """Raw 2-D frames of ``modality`` (see the module docstring); [] when there are none."""
    if modality == "ecoli_phase":  # corrected t0-t1, scored t6-t9
        stack = read_image(SHARED / "ecoli_phase_vanvliet2018_subset/images/trpL_150310-11.tif")
        return [stack[t] for t in (2, 3, 4, 5)]
    if modality == "dic_hela":  # corrected t002/t005, scored t039/t054/t067
        folder = SHARED / "ctc_dic_c2dh_hela/ctc_layout/01"
        return _files(folder, ["t010", "t015", "t020", "t025"])
    if modality == "usiigaci_phase":  # corrected fields 1-2, scored 46-48
        folder = SHARED / "usiigaci_phase_nih3t3/images"
        return _files(folder, [f"train_set{i}" for i in (3, 4, 5, 6)])
    if modality == "bitdepth_dapi":  # corrected kidney 40x air 1-2, scored other tissues
        folder = SHARED / "bitdepth_dapi_tissue_nuclei/images"
        names = ["40x_air__kidney_40x_air_3", "20x__kidney_20x_1"]
        return _files(folder, names + ["40x_oil__kidney_40x_oil_1", "63x_oil__kidney_63x_oil_1"])
    if modality == "miccai_he":  # corrected images 1-2, scored 10-12
        folder = SHARED / "miccai2015_he_nuclei/images"
        return _files(folder, ["image03", "image04", "image05", "image06"])
    if modality == "isbi_em":  # corrected slices 0-1, scored 25/27/29
        folder = SHARED / "isbi2012_em_membranes/train/images"
        return _files(folder, ["train_10", "train_12", "train_14", "train_16"])
    return []
