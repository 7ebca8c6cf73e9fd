"""Where the GUI thread's time goes when the first Segment run adds its result layers.

    python benchmarks/profile_first_segment.py [--top 40] [--out /tmp/first.prof]

Opens a real napari window (under ``xvfb-run`` when there is no display) with the Segment
and Fine-tune docks, runs ``nuclei`` on the packaged fluorescence sample once, and
profiles (cProfile) every staged step that adds a result layer in the GUI thread
(:class:`segloop.napari._result_layers.Stager`). Prints each step's wall time (inflated
by the profiler) and the functions with the largest cumulative time, so the cost can be
attributed: napari's layer append (vispy visual and overlays, layer controls, selection)
against segloop's own code around it. See docs/benchmarks.md, "The window stays
responsive".
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_freeze import _ensure_display, click_later, run_until, settle  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--top", type=int, default=40, help="functions to print")
    parser.add_argument("--out", type=Path, default=None, help="write the pstats file here")
    args = parser.parse_args(argv)
    _ensure_display(sys.argv[1:] if argv is None else argv, __file__)

    from qtpy.QtWidgets import QApplication

    import napari
    from segloop.napari import _result_layers

    profile = cProfile.Profile()
    step_ms: list[float] = []
    original = _result_layers.Stager._run_next

    def profiled_step(self) -> None:
        start = time.perf_counter()
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()
            step_ms.append(round(1000 * (time.perf_counter() - start), 1))

    _result_layers.Stager._run_next = profiled_step
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-segloop", "fluorescence")
    _, segment = viewer.window.add_plugin_dock_widget("napari-segloop", "Segment")
    viewer.window.add_plugin_dock_widget("napari-segloop", "Fine-tune", tabify=True)
    segment.image_combo.set_layer(viewer.layers["nuclei fluorescence"])
    segment.model_combo.setCurrentIndex(segment.model_combo.findData("nuclei"))
    QApplication.processEvents()
    settle(2.0)
    click_later(segment.run_button)
    run_until(lambda: not segment.running, 300)
    settle(1.0)
    print("staged steps (ms, under the profiler):", step_ms)
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(text.getvalue())
    if args.out is not None:
        stats.dump_stats(str(args.out))
    viewer.close()


if __name__ == "__main__":
    main()
