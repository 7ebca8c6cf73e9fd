"""Options shared by several ``segloop`` sub-commands (segmentation, chunking).

Part of the CLI contract (see :mod:`segloop.cli`): options are only ever added.
"""

from __future__ import annotations

import argparse

from . import cli_checks as checks


def add_chunk_options(parser: argparse.ArgumentParser) -> None:
    """``--chunk``, ``--halo``, ``--level``: how large and Zarr inputs are cut."""
    parser.add_argument(
        "--chunk",
        type=checks.integer("--chunk", 256, 65536),
        default=2048,
        help="images larger than this on a side (and Zarr ones) are segmented in chunks "
        "of this side, with bounded memory, and stitched (default 2048)",
    )
    parser.add_argument(
        "--halo",
        type=checks.integer("--halo", 0, 4096),
        default=None,
        help="overlap around each chunk in pixels (default: 2x the model's object "
        "diameter, at least 64); objects up to this size are stitched exactly",
    )
    parser.add_argument(
        "--level",
        type=checks.level,
        default=0,
        help="resolution level of a multiscale OME-Zarr input: a number (default 0, full "
        "resolution) or 'auto', the level whose pixels best match the model's object size",
    )


def add_segment_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and the segmentation options of predict, count and evaluate."""
    parser.add_argument("--model", required=True, help="shipped model name or model file path")
    parser.add_argument(
        "--tile",
        type=checks.integer("--tile", *checks.TILE_RANGE),
        default=None,
        help="output tile side in pixels (16-4096)",
    )
    parser.add_argument(
        "--batch",
        type=checks.integer("--batch", *checks.BATCH_RANGE),
        default=4,
        help="tiles per forward pass",
    )
    parser.add_argument(
        "--device", type=checks.device, default="auto", help="auto, cpu, cuda or mps"
    )
    parser.add_argument(
        "--diameter",
        type=checks.diameter("--diameter", ("auto", "native")),
        default=None,
        help="object diameter in pixels, a length (12um, converted with the pixel size), "
        "'auto' (measure it with a first pass) or 'native' (no rescaling); default: the "
        "model's choice (`segloop info` shows it)",
    )
    parser.add_argument(
        "--pixel-size",
        type=checks.pixel_size,
        default=None,
        help="micrometres per pixel (0.65, 650nm or y,x); overrides the pixel size read from "
        "OME-TIFF/ImageJ TIFF/OME-Zarr metadata. Adds µm columns to count tables",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation: average the 8 flips/rotations (8x slower); "
        "default: the model's choice",
    )
    parser.add_argument(
        "--colour",
        choices=["luma", "hematoxylin"],
        default=None,
        help="how RGB images become the network's grey input: 'luma' (BT.601) or "
        "'hematoxylin' (colour deconvolution: nuclei bright in H&E); default: the model's "
        "choice (`segloop info` shows preprocess.colour)",
    )
    parser.add_argument(
        "--min-size",
        type=checks.integer("--min-size", 0, 10**9),
        default=None,
        help="smallest object area kept",
    )
    parser.add_argument(
        "--unknown-threshold",
        type=checks.number("--unknown-threshold", 0.0, 1.0),
        default=0.0,
        help="class models: label 0 (unknown) where the top class probability is below this",
    )
