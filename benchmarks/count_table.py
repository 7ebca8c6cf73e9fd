"""GUI-thread cost of showing a new count in the Count widget's table.

    python benchmarks/count_table.py [--frames 1 10 60] [--per-frame 100]
        [--label after] [--src OTHER_CHECKOUT/src] [--out docs/results/count_table.json]

Opens a real napari window (under ``xvfb-run`` when there is no display), adds a Labels
stack of ``--frames`` frames with ``--per-frame`` disks each (skimage.draw), docks the Count
widget, counts the layer as it is and times the handler that shows the result
(``CountWidget._counted``: the table, the per-frame table and plot, the layer's features).
A recount runs the same handler after every paint stroke on the counted layer, so this is
what a stroke costs the window. ``--src DIR`` imports segloop from another checkout's
``src`` to compare two versions side by side. Results go under ``--label`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_freeze import _ensure_display, run_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def disk_stack(frames: int, per_frame: int, side: int = 512, seed: int = 0):
    """int32 labels: ``per_frame`` disks of radius 8 at random places in each frame."""
    import numpy as np
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    stack = np.zeros((frames, side, side), np.int32)
    for t in range(frames):
        for k in range(per_frame):
            centre = rng.integers(10, side - 10, size=2)
            rr, cc = disk(tuple(centre), 8, shape=(side, side))
            stack[t, rr, cc] = k + 1
    return stack if frames > 1 else stack[0]


def time_count(viewer, frames: int, per_frame: int, repeats: int = 3) -> dict:
    """Count a fresh disk stack ``repeats`` times; the ms of each ``_counted`` call."""
    from segloop.napari import _count_widget

    layer = viewer.add_labels(disk_stack(frames, per_frame), name=f"disks {frames}")
    _, widget = viewer.window.add_plugin_dock_widget("napari-segloop", "Count")
    widget.source_combo.set_layer(layer)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("as_is"))
    times: list[float] = []
    original = _count_widget.CountWidget._counted

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        original(self, *args, **kwargs)
        times.append(time.perf_counter() - start)

    _count_widget.CountWidget._counted = timed
    try:
        for _ in range(repeats):
            widget.run()
            run_until(lambda: not widget.running, 120)
            run_until(lambda: False, 0.3)
    finally:
        _count_widget.CountWidget._counted = original
    objects = widget.counts.total if widget.counts is not None else 0
    viewer.window.remove_dock_widget(widget)
    viewer.layers.remove(layer)
    return {
        "frames": frames,
        "objects": int(objects),
        "handler_ms": [round(1000 * t, 1) for t in times],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 10, 60])
    parser.add_argument("--per-frame", type=int, default=100)
    parser.add_argument("--label", default="current")
    parser.add_argument("--src", type=Path, default=None, help="import segloop from DIR")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/count_table.json")
    args = parser.parse_args(argv)
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))

    import napari
    import segloop

    viewer = napari.Viewer(show=True)
    rows = [time_count(viewer, frames, args.per_frame) for frames in args.frames]
    viewer.close()
    report = {
        "label": args.label,
        "segloop": str(Path(segloop.__file__).parent),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "rows": rows,
    }
    for row in rows:
        print(
            f"{args.label}: {row['objects']:>6} objects in {row['frames']:>3} frame(s): "
            f"{row['handler_ms']} ms"
        )
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.label] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    _ensure_display(sys.argv[1:], __file__)
    main()
