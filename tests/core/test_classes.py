"""Class names and colours stored in model metadata."""

from __future__ import annotations

import pytest

from segloop.core.classes import (
    DEFAULT_CLASS_COLORS,
    class_legend,
    class_style_metadata,
    parse_class_names,
    to_hex,
)


def test_parse_class_names():
    assert parse_class_names(" nucleus, cytoplasm ") == ["nucleus", "cytoplasm"]
    assert parse_class_names("") is None and parse_class_names(None) is None
    with pytest.raises(ValueError, match="empty"):
        parse_class_names("a,,b")
    with pytest.raises(ValueError, match="differ"):
        parse_class_names("a,a")


def test_to_hex_accepts_hex_and_float_rgba():
    assert to_hex("#FF8000") == "#ff8000"
    assert to_hex((1.0, 0.5, 0.0, 1.0)) == "#ff8000"
    for bad in ("red", "#12345", (2.0, 0.0, 0.0)):
        with pytest.raises(ValueError):
            to_hex(bad)


def test_style_metadata_checks_counts_and_fills_defaults():
    style = class_style_metadata(3)
    assert style["class_names"] == ["class 1", "class 2", "class 3"]
    assert style["class_colors"] == list(DEFAULT_CLASS_COLORS[:3])
    named = class_style_metadata(2, ["a", "b"], [(0, 0, 1), "#00ff00"])
    assert named == {"class_names": ["a", "b"], "class_colors": ["#0000ff", "#00ff00"]}
    with pytest.raises(ValueError, match="3 classes"):
        class_style_metadata(3, ["a", "b"])
    with pytest.raises(ValueError, match="colours"):
        class_style_metadata(2, None, ["#000000"])


def test_legend_of_class_and_instance_models():
    meta = {
        "target": "classes",
        "class_names": ["fg", "bg"],
        "class_colors": ["#ff0000", "#0000ff"],
    }
    legend = class_legend(meta, 2)
    assert [(e.value, e.name, e.color) for e in legend] == [
        (0, "unknown", None),
        (1, "fg", "#ff0000"),
        (2, "bg", "#0000ff"),
    ]
    # A hand-edited file with the wrong number of names falls back to defaults.
    broken = class_legend({"target": "classes", "class_names": ["only one"]}, 2)
    assert [e.name for e in broken] == ["unknown", "class 1", "class 2"]
    instances = class_legend({"target": "instances"}, 3)
    assert [e.name for e in instances] == ["background", "interior", "border"]
