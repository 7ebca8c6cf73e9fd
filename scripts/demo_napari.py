"""Open napari with a segloop sample image and the four segloop widgets docked.

Usage::

    python scripts/demo_napari.py [fluorescence|histology]

The widgets are the ones of *Plugins > segloop*: Segment, Weight map,
Count and Fine-tune (tabbed on the right). Press Run in Segment to start;
correct the labels and retrain in Fine-tune (see docs/napari.md, "Correct and retrain").
"""

from __future__ import annotations

import sys

import napari

WIDGETS = ("Segment", "Weight map", "Count", "Fine-tune")


def open_demo(sample: str = "fluorescence", show: bool = True) -> napari.Viewer:
    """A viewer with sample ``sample`` loaded and the segloop widgets docked."""
    viewer = napari.Viewer(title="napari-segloop demo", show=show)
    viewer.open_sample("napari-segloop", sample)
    for index, name in enumerate(WIDGETS):
        viewer.window.add_plugin_dock_widget("napari-segloop", name, tabify=index > 0)
    # show the Segment tab first
    dock, _ = viewer.window.add_plugin_dock_widget("napari-segloop", WIDGETS[0])
    dock.raise_()
    return viewer


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    open_demo(args[0] if args else "fluorescence")
    napari.run()


if __name__ == "__main__":
    main()
