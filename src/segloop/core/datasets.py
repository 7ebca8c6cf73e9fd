"""Load image/mask pairs from folders (paired by identical file name)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .evaluation import LabelledImage
from .imageio import list_images, read_image


def pair_files(images_dir: str | Path, masks_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair ``images_dir/NAME`` with ``masks_dir/NAME``.

    A mask with the same stem but another suffix (``a.png`` / ``a.tif``) also pairs, and
    so do Cell Tracking Challenge names (``t054.tif`` / ``man_seg054.tif``).
    Images without a mask raise ``ValueError`` listing a few of them.
    """
    images = list_images([images_dir])
    masks = {p.name: p for p in list_images([masks_dir])}
    by_stem = {p.stem: p for p in masks.values()}
    by_number = _by_frame_number(masks.values())
    pairs, unmatched = [], []
    for image in images:
        mask = masks.get(image.name) or by_stem.get(image.stem)
        if mask is None and by_number:
            mask = by_number.get(_frame_number(image))
        if mask is None:
            unmatched.append(image.name)
        else:
            pairs.append((image, mask))
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} image(s) in {images_dir} have no mask of the same name in "
            f"{masks_dir}, e.g. {', '.join(unmatched[:3])}"
        )
    return pairs


def _frame_number(path: Path) -> int | None:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None


def _by_frame_number(masks) -> dict[int, Path]:
    """Cell Tracking Challenge naming (``t054.tif`` / ``man_seg054.tif``): pair by the
    last number in the name, used only when every mask has a distinct number."""
    numbered = {}
    for mask in masks:
        number = _frame_number(mask)
        if number is None or number in numbered:
            return {}
        numbered[number] = mask
    return numbered


def load_labels(path: str | Path) -> np.ndarray:
    """Read an instance/class label image; it must be a single 2-D integer image."""
    labels = read_image(path)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):
        raise ValueError(f"{path}: masks must be single-channel label images, not RGB")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"{path}: masks must hold integer labels")
        labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"{path}: masks must not hold negative labels")
    return labels.astype(np.int32, copy=False)


def load_pairs(images_dir: str | Path, masks_dir: str | Path) -> list[LabelledImage]:
    """Read all pairs of two folders into memory."""
    data = []
    for image_path, mask_path in pair_files(images_dir, masks_dir):
        image, labels = read_image(image_path), load_labels(mask_path)
        if image.shape[:2] != labels.shape[:2] or labels.ndim != 2:
            raise ValueError(
                f"{image_path.name}: image shape {image.shape} and mask shape {labels.shape} "
                "do not match"
            )
        data.append(LabelledImage(image, labels, image_path.name))
    return data
