"""GUI-thread time of the widgets' handlers on a long stack of large frames.

    python benchmarks/gui_large_stack.py [--frames 30] [--side 2048] [--label after]
        [--out docs/results/gui_large_stack.json] [--src OTHER_CHECKOUT/src]

``benchmarks/gui_freeze.py`` measures stalls on the 256² sample, where a handler's cost is
napari's fixed cost of a layer. This one measures what grows with the data: a
(T, side, side) uint16 image with an int32 labels stack of disks, in a real napari window,
and the handlers that run in the GUI thread when the user works on it:

- ``count: recount after an edit`` (``CountWidget.recount``: what every brush stroke
  schedules), and its result handler;
- ``count: Run`` (``make_job``) and its result handler (``job_done``: the check that the
  target layer holds no edits, the layer update);
- ``weight map: Run`` (``make_job``);
- ``segment: edit check, whole stack`` (``writable_labels_name`` over every frame, what each
  staged step of a whole-stack re-run does: with the worker's ``EditCheck`` answers where
  the code has them, and the GUI thread's own check, which runs only when the layer was
  edited during the job) and ``segment: frame into the stack`` (``frame_into``, a
  current-frame run);
- ``fine-tune: snapshot of frames current / all`` (``_snapshot``, what Save and Train do
  before their worker starts).

Each handler is timed with ``time.perf_counter`` around the call (wall time of the GUI
thread; the machine should be otherwise idle). ``--src DIR`` imports segloop from another
checkout's ``src`` so that two versions can be run one after the other with the same
data; results go under ``--label`` into the JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gui_freeze import _ensure_display  # noqa: E402


def _data(frames: int, side: int, seed: int = 0):
    """A (T, side, side) uint16 image of bright disks and its int32 labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    labels = np.zeros((side, side), np.int32)
    radius, step = 12, 40
    label = 0
    for cy in range(step // 2, side - radius, step):
        for cx in range(step // 2, side - radius, step):
            label += 1
            dy, dx = rng.integers(-6, 7, size=2)
            y0, x0 = cy + dy, cx + dx
            sl = (slice(y0 - radius, y0 + radius + 1), slice(x0 - radius, x0 + radius + 1))
            mask = (yy[sl] - y0) ** 2 + (xx[sl] - x0) ** 2 <= radius**2
            labels[sl][mask] = label
    stack = np.repeat(labels[None], frames, axis=0)
    image = (stack > 0).astype(np.uint16) * 1000 + 100
    image += rng.integers(0, 50, size=image.shape, dtype=np.uint16)
    return image, stack


def _wait(qtbot_app, widget, timeout_s: float = 600.0) -> None:
    """Process events until the widget's job (and staged steps) are done."""
    start = time.monotonic()
    while (widget.running or getattr(widget, "_count_job", None)) and (
        time.monotonic() - start < timeout_s
    ):
        qtbot_app.processEvents()
        time.sleep(0.01)
    for _ in range(20):
        qtbot_app.processEvents()
        time.sleep(0.005)


def _timed(results: dict, name: str, call):
    start = time.perf_counter()
    value = call()
    results[name] = round((time.perf_counter() - start) * 1000, 1)
    print(f"{name:<45} {results[name]:>9.1f} ms", flush=True)
    return value


def _wrap(results: dict, name: str, owner, attribute: str) -> None:
    """Time every call of ``owner.attribute`` (the slowest is kept)."""
    original = getattr(owner, attribute)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            ms = round((time.perf_counter() - start) * 1000, 1)
            results[name] = max(ms, results.get(name, 0.0))
            print(f"{name:<45} {ms:>9.1f} ms", flush=True)

    setattr(owner, attribute, timed)


def run(frames: int, side: int) -> dict:
    from qtpy.QtWidgets import QApplication

    import napari
    from segloop.napari import adapters, edits
    from segloop.napari._common import writable_labels_name
    from segloop.napari._count_widget import CountWidget
    from segloop.napari._finetune_widget import FinetuneWidget
    from segloop.napari._weightmap_widget import WeightMapWidget

    image, labels = _data(frames, side)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    results: dict = {}
    movie = viewer.add_image(image, name="movie")
    instances = viewer.add_labels(labels.copy(), name="movie instances")
    # as Segment leaves it: every frame's digest recorded (made in its worker)
    edits.record_written(instances, edits.frame_digests(labels), replace=True)
    count = CountWidget(viewer)
    viewer.window.add_dock_widget(count)
    weights = WeightMapWidget(viewer)
    viewer.window.add_dock_widget(weights)
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune)
    for _ in range(50):
        app.processEvents()

    # ---------------------------------------------------------------- count
    count.source_combo.set_layer(instances)
    count.intensity_combo.set_layer(movie)
    count.method_combo.setCurrentIndex(count.method_combo.findData("as_is"))
    _wrap(results, "count: result handler (tables, features)", count, "_counted")
    _timed(results, "count: Run as is (make_job + start)", count.run)
    _wait(app, count)
    _timed(results, "count: recount after an edit", count.recount)
    _wait(app, count)
    count.method_combo.setCurrentIndex(count.method_combo.findData("components"))
    _wrap(results, "count: Run result handler (edit check, layer)", count, "job_done")
    _timed(results, "count: Run components (make_job + start)", count.run)
    _wait(app, count)

    # ---------------------------------------------------------------- weight map
    weights.labels_combo.set_layer(instances)
    job = _timed(results, "weight map: Run (make_job + start)", weights.run)
    if job is not None:
        job.cancel()  # the map itself is minutes of worker time: not what is measured
    _wait(app, weights)

    # ---------------------------------------------------------------- segment
    shape = labels.shape
    if hasattr(edits, "edit_checks"):  # since the checks moved into the worker
        checks = edits.edit_checks(viewer, "movie instances")
        for check in checks:
            check.compute(shape, None)  # the worker's part (not timed)
        _timed(
            results,
            "segment: edit check, whole stack",
            lambda: writable_labels_name(viewer, "movie instances", shape, None, checks),
        )
        for check in checks:
            check.close()
        label = "segment: edit check, whole stack, in the GUI thread (after an edit)"
    else:  # older code: the GUI thread digests every frame
        label = "segment: edit check, whole stack"
    _timed(results, label, lambda: writable_labels_name(viewer, "movie instances", shape, None))
    frame = labels[frames // 2].copy()
    _timed(
        results,
        "segment: frame into the stack",
        lambda: adapters.frame_into(viewer, "movie instances", "labels", frame, frames // 2, shape),
    )

    # ---------------------------------------------------------------- fine-tune
    finetune.pairs.add_pair(movie, instances)
    finetune.pairs.frames_edit.setText("current")
    _timed(results, "fine-tune: snapshot of the current frame", finetune._snapshot)
    finetune.pairs.frames_edit.setText("all")
    _timed(results, "fine-tune: snapshot of all frames", finetune._snapshot)
    viewer.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--label", default="run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--src", type=Path, default=None, help="import segloop from DIR")
    args = parser.parse_args()
    _ensure_display(sys.argv[1:], __file__)
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))
    import segloop

    print(f"segloop from {Path(segloop.__file__).parent}", flush=True)
    results = run(args.frames, args.side)
    if args.out is not None:
        stored = json.loads(args.out.read_text()) if args.out.exists() else {}
        stored[args.label] = {
            "frames": args.frames,
            "side": args.side,
            "handler_ms": results,
            "segloop": str(Path(segloop.__file__).parent),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(stored, indent=1))


if __name__ == "__main__":
    main()
