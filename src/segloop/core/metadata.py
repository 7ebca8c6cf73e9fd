"""Model metadata keys, declared once, and the model-file header reader (torch-free).

A segloop model file is a ``.safetensors`` file whose string header holds
``{"format": "segloop-model/1", "config": <json>, "metadata": <json>}``. This module
reads that header with the standard library alone, so the napari widgets can list models and
versions without importing torch. :data:`METADATA_KEYS` says what every metadata key
holds; :data:`FINETUNE_KEYS` does the same for the version record of a fine-tune run
(``metadata["finetune"]``, written by :mod:`segloop.core.finetune`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Header ``format`` value of segloop model files.
FORMAT = "segloop-model/1"

#: Metadata key -> (JSON type, meaning).
METADATA_KEYS: dict[str, tuple[str, str]] = {
    "name": ("str", "model name shown in lists"),
    "version": ("int", "version number (1 for a new model, parent's + 1 when fine-tuned)"),
    "parent": ("str | null", "path or name of the model this one was fine-tuned from"),
    "created": ("str", "ISO-8601 UTC time the model was first created"),
    "description": ("str", "one line shown by `segloop models`"),
    "target": ("str", "'instances' (background/interior/border) or 'classes' (user classes)"),
    "arch": ("str", "architecture preset ('unet', 'unet-classic', 'segnet')"),
    "preprocess": (
        "dict",
        "input normalisation: invert, percentiles, colour (how RGB becomes grey: 'luma' or "
        "'hematoxylin')",
    ),
    "postprocess": ("dict", "instance post-processing thresholds (tuned on validation)"),
    "predict": (
        "dict",
        "prediction defaults: diameter, tta, auto_target (the object size the rescaled "
        "passes of `diameter: auto` aim at, in units of `diameter`; 1.0 when unset)",
    ),
    "diameter": ("float", "median object diameter (px) as the network saw it"),
    "native_diameter": ("float", "median object diameter (px) of the training images"),
    "rescaled": ("bool", "training images were rescaled to `diameter`"),
    "diameter_range": (
        "list[float]",
        "10th-90th percentile of the per-image median object diameters (px) the network "
        "was trained on, widened by its zoom augmentation; `diameter: auto` keeps "
        "images whose objects measure inside it at their own scale",
    ),
    "size_model": (
        "dict",
        "learned object-size estimate for `diameter: auto` (segloop.core.size_model): "
        "ridge weights on the encoder's log mean activations, bias, how it was fitted "
        "and its validation error; fitted to these weights, dropped by any training",
    ),
    "size_check": (
        "dict",
        "fine-tuned versions: F1@0.5 on the check corrections with `diameter: auto` and at "
        "the corrections' scale, the margin, and the prediction default chosen from them",
    ),
    "pixel_size_um": (
        "float | null",
        "median pixel size (µm) of the training images as read, before any rescaling; "
        "null when their files record none",
    ),
    "training_data": (
        "list[dict]",
        "data sets the shipped weights were trained on: name, licence, the copyright "
        "notice their licence asks copies to keep, citation",
    ),
    "class_names": ("list[str]", "names of class ids 1..K (class models)"),
    "class_colors": ("list[str]", "#rrggbb colours of class ids 1..K (class models)"),
    "replay": ("str", "folder under segloop/data/replay with the images this model replays"),
    "training": ("dict", "training facts: config, images, steps, seconds, stopped"),
    "history": ("list[dict]", "loss curve (thinned): step, epoch, loss, seconds"),
    "validation": (
        "list[dict]",
        "validation checks: step, seconds, f1/seg/ap or accuracy; the post-processing "
        "tuning's tuned_f1 / tuned_count_error / tuned_seg and tuned_kept_current (the "
        "model's settings were kept: in-sample tuning that outlined no better)",
    ),
    "finetune": ("dict", "version record of a fine-tune run (see FINETUNE_KEYS)"),
    "colour_choice": (
        "dict",
        "fine-tunes on colour corrections: the start model's SEG / F1 on them per "
        "`preprocess.colour` mode and the one chosen",
    ),
    "start_choice": (
        "dict",
        "`segloop train --init auto`: the shipped model chosen and every candidate's SEG "
        "and F1 on the training pairs (a project version keeps it in finetune.start_choice)",
    ),
    "widened_from": ("int", "base channels of the network this one was widened from"),
}

#: ``metadata["finetune"]`` key -> (JSON type, meaning).
FINETUNE_KEYS: dict[str, tuple[str, str]] = {
    "base": ("str", "model the run started from (name or path), or 'scratch:<arch>'"),
    "base_version": ("int", "version number of that model (0 for scratch)"),
    "trained_on": ("list[str]", "correction ids trained on"),
    "validated_on": ("list[str]", "correction ids held out for validation and scores"),
    "replay_images": ("int", "images of the base model's own training data replayed"),
    "n_corrected_objects": ("int", "objects in the corrections trained on"),
    "seconds": ("float", "training wall-clock seconds"),
    "steps": ("int", "optimizer steps"),
    "stopped": ("bool", "ended early by Stop (the best weights so far were kept)"),
    "seed": ("int", "random seed of the run"),
    "recipe": (
        "dict",
        "learning rate, crop, batch, budget, replay fraction, Dice weight and weight map "
        "used; tuned_on_training, "
        "tune_keep_current and tune_keep_margin (how the post-processing was chosen); "
        "unlabelled_frames (frames nobody corrected, learned through pseudo-labels)",
    ),
    "metrics": ("dict", "before/after scores on the corrections and the base validation"),
    "start_choice": (
        "dict | null",
        "with start 'auto': the chosen shipped model and each one's SEG/F1 on the "
        "corrections before training (null when the start was named)",
    ),
}


class HeaderError(ValueError):
    """A file is not a readable segloop model file."""


#: The safetensors format's limit on the JSON header's size.
MAX_HEADER_BYTES = 100_000_000


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file, read as the format defines it.

    The file starts with the header's size (8 bytes, little-endian), then that JSON
    header (UTF-8, starting with ``{``): one entry per tensor, with its byte range in the
    data that follows, and the optional ``__metadata__`` object of strings. As
    ``safetensors`` does, the byte ranges must tile the data exactly, from its start to
    the end of the file, so a half-copied file is refused.
    ``safetensors.safe_open`` checks the same, but while a worker thread listed 300
    versions with it, the GUI thread waited up to 105-176 ms at a time for the GIL (1-7 ms
    with these plain file reads, which release it; ``benchmarks/gui_project_open.py``).

    Raises
    ------
    ValueError
        When the file is not a complete safetensors file.
    OSError
        When it cannot be read.
    """
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError("too short for a safetensors header")
        size = int.from_bytes(prefix, "little")
        if size > min(MAX_HEADER_BYTES, file_size - 8):
            raise ValueError(f"header of {size} bytes in a file of {file_size}")
        raw = handle.read(size)
    try:
        text = raw.decode("utf-8")
        if not text.startswith("{"):
            raise ValueError("the header is not a JSON object")
        header = json.loads(text)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"the header is not UTF-8 JSON ({type(exc).__name__})") from exc
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("__metadata__ must map names to strings")
    _check_tensor_ranges(header.values(), file_size - 8 - size)
    return metadata


def _check_tensor_ranges(entries, buffer_size: int) -> None:
    """The tensors' ``data_offsets`` (pairs of non-negative ints) must tile
    ``[0, buffer_size)`` without gaps or overlaps."""
    ranges = []
    for entry in entries:
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(v) is int and v >= 0 for v in offsets)
            or offsets[0] > offsets[1]
        ):
            raise ValueError(f"a tensor entry has no valid data_offsets ({offsets!r})")
        ranges.append((offsets[0], offsets[1]))
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise ValueError(f"the tensors' data is not contiguous at byte {position}")
        position = end
    if position != buffer_size:
        raise ValueError(f"the tensors end at byte {position} of a {buffer_size}-byte buffer")


def read_model_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON config and metadata stored in a model file's header (no weights read).

    Raises
    ------
    HeaderError
        When the file is not a safetensors file or not a segloop model.
    """
    try:
        header = safetensors_metadata(path)
    except (OSError, ValueError) as exc:
        raise HeaderError(f"{path}: not a readable model file ({exc})") from exc
    if header.get("format") != FORMAT:
        raise HeaderError(f"{path}: not a segloop model (format {header.get('format')!r})")
    try:
        config, metadata = json.loads(header["config"]), json.loads(header.get("metadata", "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        raise HeaderError(f"{path}: broken model config ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(metadata, dict):
        raise HeaderError(f"{path}: broken model config (config and metadata must be objects)")
    return config, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata JSON of a segloop model file, read from its header only."""
    return read_model_header(Path(path))[1]
