"""Make the screenshots of docs/napari.md (segment, weightmap, count, finetune, classes .png).

Run under a display, e.g. headless::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py [--model MODEL]
        [--only segment weightmap count finetune classes]
    xvfb-run -a -s "-screen 0 1366x768x24" python scripts/screenshots.py --only window \
        --window 1366x768

The ``window`` shots open the four widgets one by one, as the Plugins menu does, in a
window of ``--window`` size, and show the Count and Fine-tune tabs.

It opens napari, loads the shipped DSB2018 fluorescence sample, docks each segloop widget in
turn, runs it and saves a screenshot of the whole window. For ``finetune.png`` the sample is
cut into four 128 x 128 tiles (a 2-D + t stack), its hand-made masks stand in for the
corrected labels, and the model is fine-tuned briefly in a temporary project folder.
``--model`` takes a shipped model name or a model file; by default the shipped ``nuclei``
model (or the first shipped model). Without any shipped model a small U-Net is trained for
``--train-seconds`` on the two sample images and the script says so (the screenshot then
shows a model that saw the image).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEventLoop, Qt, QTimer

import napari

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
PLUGIN = "napari-segloop"
SAMPLE = "fluorescence"
IMAGE = f"nuclei {SAMPLE}"
MIN_SIZE = 30  # drop small fragments (pixels), as a user would in the Segment widget


def wait_until(predicate: Callable[[], bool], timeout: float = 300.0) -> None:
    """Run the Qt event loop until ``predicate()`` is true (or raise after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: (predicate() or time.monotonic() > deadline) and loop.quit())
    timer.start(50)
    loop.exec()
    timer.stop()
    if not predicate():
        raise TimeoutError("timed out waiting for the widget")


def settle(seconds: float = 0.5) -> None:
    """Let napari draw (run the event loop for ``seconds``)."""
    end = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() > end)


def pick_model(requested: str | None, train_seconds: float) -> str:
    """Model reference to use: requested, a shipped one, or a quickly trained file."""
    from segloop.napari.adapters import shipped_model_names

    if requested:
        return requested
    shipped = shipped_model_names()
    for name in ("nuclei", *shipped):
        if name in shipped:
            print(f"using shipped model {name!r}")
            return name
    return train_quick_model(train_seconds)


def train_quick_model(seconds: float) -> str:
    """Train a fast U-Net on the two sample images for ``seconds``; returns its path."""
    from segloop.core.evaluation import LabelledImage
    from segloop.core.imageio import to_grayscale
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import preset
    from segloop.core.training import TrainConfig, train
    from segloop.napari._sample_data import SAMPLES, sample_layers

    data = []
    for key in SAMPLES:
        (image, _, _), (masks, _, _) = sample_layers(key)
        grey = to_grayscale(image)
        if key == "histology":
            grey = grey.max() - grey  # dark nuclei on a bright background: invert
        data.append(LabelledImage(grey, masks, key))
    bundle = new_bundle(preset("unet"), "quick-demo")
    print(f"no shipped model: training a demo model for {seconds:.0f} s on the sample images")
    train(bundle, data, TrainConfig(minutes=seconds / 60, crop=128, val_fraction=0.0))
    path = Path(tempfile.mkdtemp()) / "quick-demo.safetensors"
    return str(save_model(bundle, path))


def dock(viewer: napari.Viewer, name: str, width: int = 460):
    """Dock segloop widget ``name`` alone on the right; returns the widget."""
    for other in list(viewer.window.dock_widgets):
        if other.startswith(PLUGIN) or "(napari-segloop)" in other:
            viewer.window.remove_dock_widget(viewer.window.dock_widgets[other])
    dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    dock_widget.setMinimumWidth(width)
    return widget


def show_only(viewer: napari.Viewer, *names: str) -> None:
    """Make exactly the layers ``names`` visible."""
    for layer in viewer.layers:
        layer.visible = layer.name in names


def shoot(viewer: napari.Viewer, name: str) -> Path:
    settle(1.0)
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def choose_model(segment, model: str) -> None:
    """Pick ``model`` (a shipped name or a file) in a Segment widget."""
    from segloop.napari.adapters import shipped_model_names

    if model in shipped_model_names():
        segment.model_combo.setCurrentIndex(segment.model_combo.findData(model))
    else:
        segment.add_model_file(model)


def segment_step(viewer: napari.Viewer, model: str, save: bool = True) -> None:
    widget = dock(viewer, "Segment")
    choose_model(widget, model)
    widget.min_size_spin.setValue(MIN_SIZE)
    widget.run()
    wait_until(lambda: not widget.running)
    show_only(viewer, IMAGE, f"{IMAGE} instances")
    viewer.layers.selection.active = viewer.layers[f"{IMAGE} instances"]
    settle()
    viewer.reset_view()
    if save:
        shoot(viewer, "segment.png")


def weightmap_step(viewer: napari.Viewer) -> None:
    widget = dock(viewer, "Weight map")
    widget.labels_combo.set_layer(viewer.layers[f"{IMAGE} instances"])
    widget.run()
    wait_until(lambda: not widget.running)
    show_only(viewer, f"{IMAGE} instances weight map")
    viewer.layers.selection.active = viewer.layers[f"{IMAGE} instances weight map"]
    viewer.reset_view()
    shoot(viewer, "weightmap.png")


def count_step(viewer: napari.Viewer) -> None:
    widget = dock(viewer, "Count")
    widget.source_combo.set_layer(viewer.layers[f"{IMAGE} instances"])
    widget.intensity_combo.set_layer(viewer.layers[IMAGE])
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("as_is"))
    widget.run()
    wait_until(lambda: not widget.running)
    show_only(viewer, IMAGE, f"{IMAGE} instances")
    widget.table.sortByColumn(2, Qt.SortOrder.AscendingOrder)  # by area
    last = widget.table.model().rowCount() - 1
    widget.table.selectRow(last)  # the largest object
    widget.select_row(last)
    viewer.scene.camera.zoom *= 1.6
    shoot(viewer, "count.png")


def tiles(data: np.ndarray, side: int = 128) -> np.ndarray:
    """Cut the top-left ``2 side x 2 side`` of an image into a stack of four tiles."""
    return np.stack([data[y : y + side, x : x + side] for y in (0, side) for x in (0, side)]).copy()


def finetune_step(viewer: napari.Viewer, model: str, epochs: int = 15) -> None:
    """Fine-tune ``model`` on four corrected tiles of the sample; shoot the Fine-tune dock."""
    image = viewer.layers[IMAGE]
    masks = np.asarray(viewer.layers[f"{IMAGE} masks"].data)
    limits = image.contrast_limits
    image_tiles, mask_tiles = tiles(np.asarray(image.data)), tiles(masks)
    viewer.layers.clear()  # keep the tiles only, so that the view fits them
    stack = viewer.add_image(image_tiles, name="nuclei tiles", contrast_limits=limits)
    labels = viewer.add_labels(mask_tiles, name="nuclei tiles corrected", opacity=0.45)
    widget = dock(viewer, "Fine-tune", width=600)
    widget.pairs.add_pair(stack, labels)
    widget.pairs.frames_edit.setText("all")
    folder = Path(tempfile.mkdtemp()) / "segloop-projects" / "nuclei_tiles"
    widget.pairs.set_folder(folder)
    from segloop.napari.adapters import shipped_model_names

    options = widget.options
    if model in shipped_model_names():
        options.model_combo.setCurrentIndex(options.model_combo.findData(model))
    else:
        options.add_model_file(model)
    options.budget_combo.setCurrentIndex(options.budget_combo.findData("epochs"))
    options.budget_spin.setValue(epochs)
    options.crop_spin.setValue(128)
    widget.config_overrides = {"val_interval_s": 5.0}
    widget.run()
    wait_until(lambda: not widget.running, timeout=900)
    widget.tabs.setCurrentIndex(1)  # show the training options
    viewer.layers.selection.active = labels
    busiest = int(np.argmax([len(np.unique(tile)) for tile in mask_tiles]))
    viewer.dims.set_current_step(0, busiest)
    viewer.reset_view()
    print(f"fine-tuned: {widget.time_label.text()}; project in {folder}")
    shoot(viewer, "finetune.png")


def class_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic cells: dark background, grey cytoplasm, bright nuclei; sparse strokes
    of the three classes (1 background, 2 cytoplasm, 3 nucleus, 0 = not painted)."""
    from skimage.draw import disk, line
    from skimage.filters import gaussian

    rng = np.random.default_rng(seed)
    shape = (256, 256)
    truth = np.ones(shape, np.uint8)
    centres = [(64, 64), (70, 180), (180, 90), (190, 200)]
    for y, x in centres:
        truth[disk((y, x), 42, shape=shape)] = 2
    for y, x in centres:
        truth[disk((y + 6, x - 4), 16, shape=shape)] = 3
    image = np.choose(truth - 1, [0.1, 0.45, 0.85]) + rng.normal(0, 0.08, shape)
    image = gaussian(image, 1.0).astype(np.float32)
    strokes = np.zeros(shape, np.uint8)
    for (y, x), value in zip(centres[:2], (2, 2), strict=True):
        strokes[line(y - 30, x - 20, y - 30, x + 20)] = value
        strokes[line(y + 6, x - 12, y + 6, x + 4)] = 3
    strokes[line(5, 5, 5, 120)] = 1
    strokes[line(130, 5, 130, 40)] = 1
    strokes[line(250, 120, 250, 250)] = 1
    return image, strokes


def classes_step(viewer: napari.Viewer, epochs: int = 60) -> None:
    """Paint sparse strokes of three classes, train a class model, show its class map."""
    image_data, strokes = class_scene()
    viewer.layers.clear()
    image = viewer.add_image(image_data, name="cells")
    labels = viewer.add_labels(strokes, name="cells strokes")
    widget = dock(viewer, "Fine-tune", width=600)
    widget.pairs.add_pair(image, labels)
    widget.pairs.mode_combo.setCurrentIndex(widget.pairs.mode_combo.findData("sparse"))
    widget.pairs.set_folder(Path(tempfile.mkdtemp()) / "segloop-projects" / "cells")
    options = widget.options
    options.start_combo.setCurrentIndex(options.start_combo.findData("scratch"))
    options.target_combo.setCurrentIndex(options.target_combo.findData("classes"))
    options.names_edit.setText("background, cytoplasm, nucleus")
    options.budget_combo.setCurrentIndex(options.budget_combo.findData("epochs"))
    options.budget_spin.setValue(epochs)
    options.crop_spin.setValue(128)
    options.lr_spin.setValue(3e-3)
    widget.run()
    wait_until(lambda: not widget.running, timeout=900)
    version = widget.versions[-1].path
    segment = dock(viewer, "Segment")
    segment.add_model_path(version, "cells v1")
    segment.image_combo.set_layer(image)
    segment.unknown_spin.setValue(0.6)
    segment.run()
    wait_until(lambda: not segment.running)
    show_only(viewer, "cells", "cells classes", "cells strokes")
    viewer.layers["cells classes"].opacity = 0.45
    viewer.layers.selection.active = viewer.layers["cells classes"]
    viewer.reset_view()
    shoot(viewer, "classes.png")


def window_step(viewer: napari.Viewer, model: str, size: tuple[int, int]) -> None:
    """The four widgets opened one by one from the Plugins menu, in a window of ``size``.

    They tab together; Segment and Count are run, and the Count tab and the Fine-tune
    tab are shot (``window_<w>x<h>_count.png``, ``window_<w>x<h>_finetune.png``).
    """
    from qtpy.QtWidgets import QDockWidget

    for other in list(viewer.window.dock_widgets):
        viewer.window.remove_dock_widget(viewer.window.dock_widgets[other])
    viewer.window.resize(*size)
    widgets = {}
    for name in ("Segment", "Weight map", "Count", "Fine-tune"):
        _, widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        settle(0.2)
    segment, count = widgets["Segment"], widgets["Count"]
    choose_model(segment, model)
    segment.min_size_spin.setValue(MIN_SIZE)
    segment.run()
    wait_until(lambda: not segment.running)
    count.source_combo.set_layer(viewer.layers[f"{IMAGE} instances"])
    count.intensity_combo.set_layer(viewer.layers[IMAGE])
    count.method_combo.setCurrentIndex(count.method_combo.findData("as_is"))
    count.run()
    wait_until(lambda: not count.running)
    show_only(viewer, IMAGE, f"{IMAGE} instances")
    viewer.reset_view()
    docks = {d.windowTitle(): d for d in viewer.window._qt_window.findChildren(QDockWidget)}
    width, height = size
    for name, suffix in (("Count", "count"), ("Fine-tune", "finetune")):
        docks[f"{name} ({PLUGIN})"].raise_()
        settle(0.5)
        window = viewer.window._qt_window
        inner = widgets[name]
        print(
            f"{suffix}: window {window.width()} x {window.height()} (asked {width} x {height}); "
            f"dock content needs {inner.content.minimumSizeHint().width()} px, "
            f"has {inner.scroll_area.viewport().width()} px"
        )
        shoot(viewer, f"window_{width}x{height}_{suffix}.png")


STEPS = ("segment", "weightmap", "count", "finetune", "classes", "window")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="shipped model name or model file")
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--only", nargs="+", choices=STEPS, default=STEPS[:-1], help="shots")
    parser.add_argument(
        "--window",
        default="1366x768",
        help="window size of the 'window' shots (run under a screen of that size)",
    )
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    model = pick_model(args.model, args.train_seconds)
    viewer = napari.Viewer(title="napari-segloop", show=True)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, SAMPLE)
    viewer.reset_view()
    if {"segment", "weightmap", "count"} & set(args.only):
        segment_step(viewer, model, "segment" in args.only)  # the others use its result
    if "weightmap" in args.only:
        weightmap_step(viewer)
    if "count" in args.only:
        count_step(viewer)
    if "finetune" in args.only:
        finetune_step(viewer, model)
    if "classes" in args.only:
        classes_step(viewer)
    if "window" in args.only:
        width, height = (int(v) for v in args.window.lower().split("x"))
        window_step(viewer, model, (width, height))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
