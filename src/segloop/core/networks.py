"""New networks and start models for the recipe of :mod:`segloop.core.finetune`: the
network a from-scratch run builds (sized for the corrections' class ids), the check
that a start model can learn them, and the scale a start model is fine-tuned at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from .evaluation import LabelledImage
from .modelio import ModelBundle, new_bundle
from .recipe import ARCHITECTURES, DEFAULTS, TARGETS
from .samples import NATIVE_RANGE

if TYPE_CHECKING:
    from .finetune import FinetuneRequest


def n_classes_of(items: Sequence[LabelledImage], target: str) -> int:
    """Output classes of a new model: 3 for instances, else the largest class id (>= 2)."""
    if target == "instances":
        return 3
    top = max(int(c.labels.max()) for c in items)
    if top > DEFAULTS.max_classes:
        raise ValueError(
            f"the labels hold values up to {top}: for target 'classes' paint class ids "
            "(1, 2, 3... with 0 = unlabelled), or choose target 'instances'"
        )
    return max(top, 2)


def check_start_model(bundle: ModelBundle, items: Sequence[LabelledImage]) -> None:
    """Raise ValueError unless a class model has outputs for every class id used."""
    if bundle.target != "classes":
        return
    top = max((int(c.labels.max()) for c in items), default=0)
    if top > bundle.config.n_classes:
        raise ValueError(
            f"model {bundle.name!r} knows classes 1..{bundle.config.n_classes} but the "
            f"corrections use class {top}; train a new class model from scratch instead"
        )


def network_config(
    arch: str, n_classes: int, target: str, distance_head: bool = DEFAULTS.distance_head
):
    """The ``ModelConfig`` of a new network: the architecture's preset, with a distance
    head for an instance model unless ``distance_head`` is False (the recipe's default,
    used by Train from scratch and ``segloop train``)."""
    from .models import preset

    config = preset(arch, n_classes=n_classes)
    if target == "instances" and distance_head:
        config = replace(config, distance_head=True)
    return config


def new_model(request: FinetuneRequest, items: Sequence[LabelledImage], name: str) -> ModelBundle:
    """A fresh network for ``request`` (scratch), sized for the class ids in ``items``."""
    from .classes import class_style_metadata

    if request.arch not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}")
    if request.target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}")
    config = network_config(request.arch, n_classes_of(items, request.target), request.target)
    bundle = new_bundle(config, name, target=request.target, seed=request.config.seed)
    bundle.metadata["arch"] = request.arch
    if request.target == "classes":
        colors = request.class_colors
        colors = colors[: config.n_classes] if colors and len(colors) >= config.n_classes else None
        bundle.metadata.update(class_style_metadata(config.n_classes, request.class_names, colors))
    return bundle


def fine_tune_scale(
    bundle: ModelBundle, target_diameter: float | str | None, measured: float | None
) -> float | str | None:
    """The training ``target_diameter`` for fine-tuning ``bundle`` on objects
    ``measured`` pixels across.

    With ``"auto"``, a model trained at native scale keeps native scale while the
    corrected objects are within :data:`NATIVE_RANGE`; outside it (e.g. 110 px DIC cells
    for an 18 px nuclei model) they are rescaled to the model's diameter, so the network
    sees objects of the size it knows. Rescaled models always rescale.
    """
    if target_diameter != "auto" or bundle.target != "instances":
        return target_diameter
    if bundle.metadata.get("rescaled") or not bundle.diameter or measured is None:
        return target_diameter
    inside = NATIVE_RANGE[0] <= measured <= NATIVE_RANGE[1]
    return target_diameter if inside else bundle.diameter
