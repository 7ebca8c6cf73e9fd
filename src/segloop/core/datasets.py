"""Load image/mask pairs from folders (paired by identical file name)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .evaluation import LabelledImage
from .imageio import list_images, read_image, read_label_image, validate_image


def pair_files(images_dir: str | Path, masks_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair ``images_dir/NAME`` with ``masks_dir/NAME``.

    A mask with the same stem but another suffix (``a.png`` / ``a.tif``) also pairs, and
    so do Cell Tracking Challenge names (``t054.tif`` / ``man_seg054.tif``): an image
    without a same-name mask pairs by the last number in its name only when that is
    unambiguous, i.e. every mask has a distinct number, no other image has the same
    number, and no image of another name already took that mask (so ``s2_t01`` never
    pairs with the mask of ``s1_t01``). Images without a mask raise ``ValueError``
    listing a few of them.
    """
    for folder in (images_dir, masks_dir):
        if Path(folder).exists() and not Path(folder).is_dir():
            raise NotADirectoryError(f"{folder} is not a folder (images and masks are folders)")
    images = list_images([images_dir])
    masks = {p.name: p for p in list_images([masks_dir])}
    by_stem = {p.stem: p for p in masks.values()}
    by_number = _by_frame_number(masks.values())
    named = {image: masks.get(image.name) or by_stem.get(image.stem) for image in images}
    taken = {mask for mask in named.values() if mask is not None}
    image_numbers = [_frame_number(image) for image in images]
    pairs, unmatched, ambiguous = [], [], []
    for image, number in zip(images, image_numbers, strict=True):
        mask = named[image]
        if mask is None and by_number and number in by_number:
            candidate = by_number[number]
            if image_numbers.count(number) == 1 and candidate not in taken:
                mask = candidate
                taken.add(candidate)
            else:
                ambiguous.append(image.name)
                continue
        if mask is None:
            unmatched.append(image.name)
        else:
            pairs.append((image, mask))
    if ambiguous:
        raise ValueError(
            f"{len(ambiguous)} image(s) in {images_dir} have no mask of the same name in "
            f"{masks_dir} and pairing by frame number is ambiguous (another image has the "
            f"same number or took that mask), e.g. {', '.join(ambiguous[:3])}; give every "
            "image a mask of the same name"
        )
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


#: Largest label id a mask may hold (label images are handled as int32).
MAX_LABEL = 2**31 - 1


def load_labels(path: str | Path) -> np.ndarray:
    """Read an instance/class label image; it must be a single 2-D integer image.

    Raises
    ------
    ValueError
        Naming ``path``: RGB, stacks, non-integer, negative or too large (> 2**31 - 1)
        label values.
    """
    labels = read_label_image(path)  # a palette PNG mask gives its indices
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):
        raise ValueError(f"{path}: masks must be single-channel label images, not RGB")
    if labels.ndim != 2:
        raise ValueError(f"{path}: masks must be single 2-D label images, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"{path}: the mask is empty (shape {labels.shape})")
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind != "f" or not np.isfinite(labels).all():
            raise ValueError(f"{path}: masks must hold finite integer labels")
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"{path}: masks must hold integer labels")
        if labels.min() < 0:
            raise ValueError(f"{path}: masks must not hold negative labels")
        if labels.max() > MAX_LABEL:
            raise ValueError(f"{path}: label ids up to {labels.max():.0f} exceed {MAX_LABEL}")
        labels = labels.astype(np.int64)
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ValueError(f"{path}: masks must not hold negative labels (found {low})")
    if high > MAX_LABEL:
        raise ValueError(
            f"{path}: label ids up to {high} exceed {MAX_LABEL}; number the objects from 1 "
            "(e.g. skimage.segmentation.relabel_sequential)"
        )
    return labels.astype(np.int32, copy=False)


def load_pairs(images_dir: str | Path, masks_dir: str | Path) -> list[LabelledImage]:
    """Read all pairs of two folders into memory; errors name the file."""
    data = []
    for image_path, mask_path in pair_files(images_dir, masks_dir):
        image, labels = read_image(image_path), load_labels(mask_path)
        validate_image(image, str(image_path))
        if image.shape[:2] != labels.shape[:2] or image.ndim not in (2, 3):
            raise ValueError(
                f"{image_path}: image shape {image.shape} and mask shape {labels.shape} "
                f"({mask_path.name}) do not match"
            )
        if image.ndim == 3 and image.shape[-1] not in (3, 4):
            raise ValueError(
                f"{image_path}: training images must be single 2-D frames, got shape {image.shape}"
            )
        data.append(LabelledImage(image, labels, image_path.name))
    return data
