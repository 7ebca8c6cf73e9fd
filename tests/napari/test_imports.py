"""Importing the plugin and its widgets must not import torch; the manifest is valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import segloop.napari

MODULES = (
    "segloop.napari",
    "segloop.napari._segment_widget",
    "segloop.napari._weightmap_widget",
    "segloop.napari._count_widget",
    "segloop.napari._finetune_widget",
    "segloop.napari.finetune_adapters",
    "segloop.napari.train_adapters",
    "segloop.napari._reader",
    "segloop.napari._writer",
    "segloop.napari._sample_data",
    "segloop.napari.adapters",
    "segloop.napari.workers",
)


def test_widgets_do_not_import_torch():
    code = "; ".join(
        [
            "import sys",
            *(f"import {name}" for name in MODULES),
            "import napari",
            "assert 'torch' not in sys.modules, 'torch was imported'",
            "print('ok')",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_manifest_is_valid_and_complete():
    from npe2 import PluginManifest

    path = Path(segloop.napari.__file__).with_name("napari.yaml")
    manifest = PluginManifest.from_file(path)
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {
        "Segment",
        "Weight map",
        "Count",
        "Fine-tune",
    }
    assert contributions.readers[0].accepts_directories
    assert contributions.writers[0].layer_types == ["labels"]
    assert {s.key for s in contributions.sample_data} == {
        "fluorescence",
        "histology",
        "ecoli",
        "fibroblasts",
    }
    for command in contributions.commands:
        module, _, attribute = command.python_name.partition(":")
        assert hasattr(__import__(module, fromlist=[attribute]), attribute), command.python_name


def test_lazy_widget_attributes():
    from segloop.napari._count_widget import CountWidget
    from segloop.napari._finetune_widget import FinetuneWidget

    assert segloop.napari.CountWidget is CountWidget
    assert segloop.napari.FinetuneWidget is FinetuneWidget


def test_widgets_open_through_napari(make_napari_viewer):
    from segloop.napari import CountWidget, FinetuneWidget, SegmentWidget, WeightMapWidget

    viewer = make_napari_viewer()
    expected = {"Segment": SegmentWidget, "Weight map": WeightMapWidget}
    expected["Count"] = CountWidget
    expected["Fine-tune"] = FinetuneWidget
    for name, widget_class in expected.items():
        _, widget = viewer.window.add_plugin_dock_widget("napari-segloop", name)
        assert isinstance(widget, widget_class) and widget.viewer == viewer


def test_widget_modules_reach_the_core_only_through_the_adapters():
    """House rule: widgets -> adapters -> core. The Qt widget modules (and their panels,
    plot and table helpers) import no ``segloop.core`` module, except for type hints."""
    import ast

    folder = Path(segloop.napari.__file__).parent
    hooks = {"_reader.py", "_writer.py", "_sample_data.py", "_preload.py"}  # npe2 hooks
    offenders = []
    for path in sorted(folder.glob("_*.py")):
        if path.name in hooks or path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        type_only = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segloop.core"):
                offenders.append(f"{path.name}:{node.lineno} {node.module}")
            if isinstance(node, ast.Import):
                offenders += [
                    f"{path.name}:{node.lineno} {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("segloop.core")
                ]
    assert offenders == []
