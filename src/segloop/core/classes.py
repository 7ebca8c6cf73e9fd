"""Class names and colours of a model's class map (stored in the model's metadata).

A class map holds one integer per pixel. For an ``"instances"`` model the values are
0 = background, 1 = interior, 2 = border; for a ``"classes"`` model they are the user's
class ids 1..K and 0 = unknown/void (below the unknown threshold, or never labelled).
The metadata keys ``class_names`` and ``class_colors`` list the names and ``#rrggbb``
colours of classes 1..K (for a ``"classes"`` model) so that every viewer of the model's
output shows the same legend. This module does not import torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Colours for classes 1, 2, 3, … when a model stores none (matplotlib's tab10).
DEFAULT_CLASS_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
#: The three classes of an ``"instances"`` model's class map (values 1 and 2).
INSTANCE_CLASSES = {1: ("interior", "#ffd92f"), 2: ("border", "#e7298a")}
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class ClassEntry:
    """One value of a class map: its name and display colour (``None`` = transparent)."""

    value: int
    name: str
    color: str | None


def parse_class_names(text: str | Sequence[str] | None) -> list[str] | None:
    """Class names from ``"a,b,c"`` (or a list); ``None``/empty gives ``None``.

    Raises
    ------
    ValueError
        If a name is empty or repeated.
    """
    if text is None:
        return None
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if names == [""]:
        return None
    if any(not n for n in names):
        raise ValueError(f"class names must not be empty: {text!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must differ: {text!r}")
    return names


def to_hex(color: str | Sequence[float]) -> str:
    """``#rrggbb`` from a hex string or an RGB(A) sequence of floats in 0..1.

    Raises
    ------
    ValueError
        If ``color`` is neither.
    """
    if isinstance(color, str):
        if not _HEX.match(color):
            raise ValueError(f"colour {color!r} is not of the form #rrggbb")
        return color.lower()
    values = [float(v) for v in color][:3]
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"colour {color!r} is not RGB(A) in 0..1")
    return "#" + "".join(f"{round(v * 255):02x}" for v in values)


def class_style_metadata(
    n_classes: int,
    names: Sequence[str] | None = None,
    colors: Sequence[str | Sequence[float]] | None = None,
) -> dict[str, list[str]]:
    """Checked ``class_names``/``class_colors`` metadata for a model with ``n_classes``.

    Missing names become ``"class k"``, missing colours the default palette.

    Raises
    ------
    ValueError
        If a list does not have exactly ``n_classes`` entries or a colour is invalid.
    """
    names = list(names) if names else [f"class {k}" for k in range(1, n_classes + 1)]
    if len(names) != n_classes:
        raise ValueError(
            f"{len(names)} class names given ({', '.join(names)}) but the model has "
            f"{n_classes} classes (ids 1..{n_classes})"
        )
    if colors:
        hex_colors = [to_hex(c) for c in colors]
        if len(hex_colors) != n_classes:
            raise ValueError(f"{len(hex_colors)} class colours given for {n_classes} classes")
    else:
        palette = DEFAULT_CLASS_COLORS
        hex_colors = [palette[k % len(palette)] for k in range(n_classes)]
    return {"class_names": names, "class_colors": hex_colors}


def class_legend(metadata: Mapping[str, Any], n_classes: int) -> list[ClassEntry]:
    """Every value a model's class map can hold, with its name and colour.

    Parameters
    ----------
    metadata : mapping
        The model's metadata (``target``, optional ``class_names``/``class_colors``).
    n_classes : int
        Output channels of the network.

    Returns
    -------
    list of ClassEntry
        Value 0 first (background or unknown, transparent).
    """
    if metadata.get("target", "instances") != "classes":
        return [ClassEntry(0, "background", None)] + [
            ClassEntry(value, name, color) for value, (name, color) in INSTANCE_CLASSES.items()
        ]
    stored_names = metadata.get("class_names") or None
    stored_colors = metadata.get("class_colors") or None
    try:
        style = class_style_metadata(n_classes, stored_names, stored_colors)
    except ValueError:  # a hand-edited file: fall back to defaults rather than fail
        style = class_style_metadata(n_classes)
    entries = [ClassEntry(0, "unknown", None)]
    for value, (name, color) in enumerate(
        zip(style["class_names"], style["class_colors"], strict=True), start=1
    ):
        entries.append(ClassEntry(value, name, color))
    return entries
