"""``diameter="auto"``: find the objects' size and the scale to predict them at, from a
first pass at the model's own scale, the model's learned size estimate and a fixed point
of measuring passes (see docs/models.md, *Object size*)."""

from __future__ import annotations

import math

import numpy as np

from .modelio import ModelBundle
from .passes import postprocess, predict_at_scale
from .scale import estimate_diameter, rescale_image
from .size_model import estimate_size

#: Rescaling is skipped when the object size is within this factor of the model's.
SCALE_TOLERANCE = 1.15
#: Most prediction passes of ``diameter="auto"``, the first one included (see
#: :func:`measure_and_rescale`).
AUTO_MAX_PASSES = 4
#: Take the outlines of shrunk objects from the first (full-resolution) pass. Off: where
#: objects are several times the model's size that pass cuts them into pieces, and its
#: outlines then ruin the rescaled pass's objects (F1 0.83 -> 0.00 on the packaged
#: fluorescence sample at 6x; see docs/models.md, object size).
AUTO_REFINE = False
#: Keep the first pass when the measured size is inside the model's trained diameter
#: range (``metadata["diameter_range"]``); off: within SCALE_TOLERANCE of its diameter.
AUTO_USE_RANGE = True
#: ... but objects larger than this many times the model's diameter are shrunk even
#: inside that range (None: up to the range's top).
AUTO_UPPER: float | None = 1.6
#: The rescaled passes of 'auto' give the measured objects this many times the model's
#: diameter; None: the model's choice, ``metadata["predict"]["auto_target"]`` (1.0 when
#: unset; 1.3 for the shipped nuclei model, chosen on its validation images 0.33x-6x).
AUTO_TARGET: float | None = None
#: Coarse probes of 'auto' before the fixed point: passes at 1/AUTO_PROBE_STEP,
#: 1/AUTO_PROBE_STEP**2, ... of the first pass's scale (0: none). They find objects many
#: times larger than the model's, which the first pass sees as small fragments of texture
#: (nuclei validation images at 6x: F1 0.818 -> 0.864), but they also take blobs of
#: merged objects for such objects on images from other sources at their own size (DSB2018
#: test images: 0.885 -> 0.858), so they are off by default (docs/models.md, object size).
AUTO_PROBES = 0
AUTO_PROBE_STEP = 3.0
#: ... skipped when the shrunk frame's shorter side would be below this many pixels.
AUTO_PROBE_MIN_SIDE = 48
#: A probe's objects are believed only if they are more than this many times the top of
#: the trained range at the first pass's scale: objects the first pass cannot have seen
#: whole. Smaller ones it saw, and a probe that finds them larger has merged neighbours
#: (0: any probe whose objects are of a trained size at its own scale).
AUTO_PROBE_BEYOND = 2.0
#: ... and only if they cover more than this many times the image area that the first
#: pass's objects cover: the first pass found scattered pieces, not whole objects (a
#: probe over a confluent sheet of cells finds blobs of merged cells covering about as
#: much; 0: no such condition).
AUTO_PROBE_COVERAGE = 3.0
#: Use the model's learned size estimate (``metadata["size_model"]``, see
#: :mod:`segloop.core.size_model`) to start the fixed point of 'auto' when the estimate
#: is outside the trained sizes and over AUTO_SIZE_DISAGREE x the first pass's objects
#: (which are then pieces): nuclei validation images at 6x F1 0.818 -> 0.867.
AUTO_SIZE_MODEL = True
AUTO_SIZE_DISAGREE = 2.0
#: ... also when the estimate is the smaller one (off: only when it is larger).
AUTO_SIZE_SMALLER = False
#: Auto-estimated rescale factors are clamped to this range.
SCALE_LIMITS = (0.1, 10.0)


def measure_and_rescale(bundle, frame, options, settings, should_stop, stage, factor, first_pass):
    """'auto': find the objects' size and the scale to predict them at.

    A pass at the wrong scale mismeasures: objects several times larger than the network
    knows come out as pieces, often of a size it *does* know. So the size is found as a
    fixed point: measure what a pass found, predict again at the scale that gives those
    objects the model's diameter, and repeat until a pass finds objects of the size it
    was scaled for (or AUTO_MAX_PASSES ran). Objects that measure smaller than the
    model's diameter are trusted at once (pieces are never smaller than a nucleus-sized
    blob), which keeps the expensive enlarging passes to one.

    The pass returned is the first one when the objects' size at that pass's scale is
    one the network was trained on (:func:`_inside`: from the low end of
    ``metadata["diameter_range"]`` up to AUTO_UPPER x the model's diameter), since it
    knows those sizes as they come; otherwise the last one. AUTO_UPPER (1.6) was chosen
    on the nuclei model's validation images rescaled 0.33x-6x (docs/models.md).

    Returns (factor, measured diameter in input pixels, probs, classes, labels).
    """
    model_diameter = bundle.diameter
    first = (factor, *first_pass)
    current = yield from _coarse_start(bundle, frame, options, settings, should_stop, stage, first)
    if current is first:
        current = yield from _size_start(
            bundle, frame, options, settings, should_stop, stage, first
        )
    used = model_diameter / factor
    target = auto_target(bundle)
    for n_pass in range(1, AUTO_MAX_PASSES + 1):
        factor, probs, classes, labels = current
        measured = estimate_diameter(labels, area_weighted=True)
        if math.isnan(measured):
            break
        used = measured
        new_factor = float(np.clip(target * model_diameter / measured, *SCALE_LIMITS))
        converged = abs(math.log(new_factor / factor)) <= math.log(SCALE_TOLERANCE)
        if converged or n_pass == AUTO_MAX_PASSES:
            break
        if (
            n_pass == 1
            and current is first
            and measured * factor < model_diameter
            and _inside(bundle, measured * factor)
        ):
            break  # small or as trained: no fragments to fear, keep the first pass
        if n_pass > 1 and measured * factor < model_diameter and new_factor > factor:
            # enlarging after a shrinking pass: take this pass's size as found
            break
        label = f"{stage} (x{new_factor:.2g})"
        current = yield from _pass(bundle, frame, new_factor, options, settings, should_stop, label)
    if current is not first and _inside(bundle, used * first[0]):
        current = first  # the size found is one the network knows at the first scale
    factor, probs, classes, labels = current
    return factor, used, probs, classes, labels


def _coarse_start(bundle, frame, options, settings, should_stop, stage, first):
    """The pass the fixed point of :func:`measure_and_rescale` starts from (the first
    one unless AUTO_PROBES, off by default, asks for coarse probes).

    Objects many times larger than the network knows can come out of the first pass as
    a few small pieces of their texture, which measure like objects of a size it knows
    (on the nuclei model's validation images at 6x: 1 object found of 15, 16 px where
    the nuclei are 313 px). So the frame is also predicted at AUTO_PROBES coarser
    scales (each 1/AUTO_PROBE_STEP of the last; together ~12% of the first pass's cost),
    and the coarsest pass whose objects have, at its scale, a size inside the model's
    trained range, are at the first pass's scale more than AUTO_PROBE_BEYOND x the
    range's top, and cover more than AUTO_PROBE_COVERAGE x the area the first pass's
    objects cover, is the start. Objects of a size the network knows at the first scale
    vanish or shrink below that range in the probes; a probe that finds them larger has
    merged neighbours into blobs (two nuclei validation images at 0.5x-2x), the reason
    for the second condition; over confluent cells a probe finds blobs of merged cells as
    large as huge nuclei, the reason for the third (without it: F1 0.60 -> 0.00 on the
    cells model's Usiigaci test fields). On the nuclei validation images at 6x the first
    pass's pieces covered 4.5-2,000x less area than the probe's nuclei. Even so, on
    DSB2018 test images at their own size the probes cost 0.027 F1, hence off.
    """
    if not AUTO_PROBES:
        return first
    stored = bundle.metadata.get("diameter_range")
    low, high = (
        (float(v) for v in stored) if stored else (0.5 * bundle.diameter, 2.0 * bundle.diameter)
    )
    start, factor = first, first[0]
    first_coverage = float(np.mean(first[3] > 0))
    for _ in range(AUTO_PROBES):
        factor /= AUTO_PROBE_STEP
        if min(frame.shape[-2:]) * factor < AUTO_PROBE_MIN_SIDE or factor < SCALE_LIMITS[0]:
            break
        label = f"{stage} (probe x{factor:.2g})"
        probe = yield from _pass(bundle, frame, factor, options, settings, should_stop, label)
        labels = probe[3]
        measured = estimate_diameter(labels, area_weighted=True)
        if math.isnan(measured) or not low <= measured * factor <= high:
            continue
        larger = measured * first[0] > AUTO_PROBE_BEYOND * high
        if larger and np.mean(labels > 0) > AUTO_PROBE_COVERAGE * first_coverage:
            start = probe
    return start


def _size_start(bundle, frame, options, settings, should_stop, stage, first):
    """The pass at the scale the learned size model gives, when AUTO_SIZE_MODEL is on,
    the model has one, its estimate is outside the sizes the network was trained on
    (:func:`_inside`) and over AUTO_SIZE_DISAGREE x the size of the first pass's objects
    (with AUTO_SIZE_SMALLER also under 1/AUTO_SIZE_DISAGREE x). When that pass found
    nothing, only an estimate over the model's diameter is used: an empty frame is not
    enlarged for nothing. Otherwise ``first``."""
    if not AUTO_SIZE_MODEL or "size_model" not in bundle.metadata:
        return first
    factor = first[0]
    seen = frame if factor == 1.0 else rescale_image(frame, factor)
    estimate = estimate_size(bundle, seen)  # network pixels
    if estimate is None or _inside(bundle, estimate):
        return first
    found = estimate_diameter(first[3], area_weighted=True) * factor
    if math.isnan(found):  # pieces too faint to keep, or an empty frame: never enlarged
        use = estimate > bundle.diameter
    else:
        use = estimate > AUTO_SIZE_DISAGREE * found or (
            AUTO_SIZE_SMALLER and estimate * AUTO_SIZE_DISAGREE < found
        )
    if not use:
        return first
    new_factor = float(np.clip(factor * bundle.diameter / estimate, *SCALE_LIMITS))
    label = f"{stage} (x{new_factor:.2g})"
    return (yield from _pass(bundle, frame, new_factor, options, settings, should_stop, label))


def _pass(bundle, frame, factor, options, settings, should_stop, stage):
    """One measuring pass at ``factor`` (no flip averaging): (factor, probs, classes,
    labels)."""
    probs = yield from predict_at_scale(
        bundle, frame, factor, options, settings, should_stop, stage, False
    )
    classes, labels = postprocess(bundle, probs, options, 1.0 / factor**2)
    return (factor, probs, classes, labels)


def auto_target(bundle: ModelBundle) -> float:
    """How many times the model's diameter the rescaled passes of 'auto' aim at."""
    if AUTO_TARGET is not None:
        return float(AUTO_TARGET)
    return float(bundle.predict_defaults.get("auto_target") or 1.0)


def _inside(bundle: ModelBundle, seen_diameter: float) -> bool:
    """Whether objects of ``seen_diameter`` network pixels are of a size the model was
    trained on: from the low end of its stored diameter range up to AUTO_UPPER x its
    diameter (without a stored range, within SCALE_TOLERANCE of its diameter)."""
    stored = bundle.metadata.get("diameter_range") if AUTO_USE_RANGE else None
    if stored:
        upper = float(stored[1]) if AUTO_UPPER is None else AUTO_UPPER * bundle.diameter
        return float(stored[0]) <= seen_diameter <= upper
    ratio = seen_diameter / bundle.diameter
    return 1.0 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE
