"""GUI-thread stalls of the Segment and Fine-tune widgets in a real napari window.

    python benchmarks/gui_freeze.py [--label after] [--minutes 0.5]
        [--out docs/results/gui_freeze.json] [--src OTHER_CHECKOUT/src] [--screenshot PNG]

Opens ``napari.Viewer(show=True)`` (under ``xvfb-run`` when there is no display), docks the
segloop Segment and Fine-tune widgets, starts a 10 ms ``QTimer`` in the GUI thread and records
the time between its ticks; a *stall* is a gap minus the 10 ms interval. Phases:

- ``segment (first)``: the first Run of the ``nuclei`` model on the packaged fluorescence
  sample (model load, segmentation, adding the result layers, drawing them);
- ``segment (second)``: the same run again (the layers are updated, not added);
- ``train click``: the Train button's own handler (saving the pair, building the job);
- ``fine-tune``: from the Train click until the new version is listed, with ``--minutes``
  of training and a validation every ``--val-interval`` seconds;
- ``weight map`` and ``count`` (unless ``--no-others``): the Weight map and Count docks
  run once on the instances layer, each adding its result layer.

Every phase ends after a short settle time so that the drawing that follows a result counts.
Which handler caused a stall is found two ways: a watchdog thread samples the GUI thread's
Python stack every 5 ms while no tick has come for 30 ms, and a few known slots (button
handlers, ``job_done``, the training-event handler, the plot and canvas draws) are timed.
Results go under ``--label`` into the JSON file (other labels there are kept), so runs of two
code versions can sit side by side; ``--src DIR`` imports segloop from another checkout's
``src`` (e.g. a ``git worktree`` of an older commit) for that.
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK_MS = 10.0
WATCH_AFTER_S = 0.03
SAMPLE_S = 0.005
STALL_MS = 100.0


def _ensure_display(argv: list[str], script: str = __file__) -> None:
    """Re-run ``script`` (this one by default) under ``xvfb-run`` when there is no X
    display."""
    if os.environ.get("DISPLAY") or os.environ.get("SEGLOOP_BENCH_CHILD"):
        return
    if shutil.which("xvfb-run") is None:
        sys.exit("no DISPLAY and no xvfb-run: install xvfb or run under a desktop session")
    env = dict(os.environ, SEGLOOP_BENCH_CHILD="1")
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, script, *argv]
    sys.exit(subprocess.call(cmd, env=env))


# --------------------------------------------------------------------------- recording


class Recorder:
    """10 ms ticks of the GUI thread, stack samples during stalls, timed slots."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.cpu: list[float] = []  # the GUI thread's CPU time at each tick
        self.last_tick = time.perf_counter()
        self.samples: dict[float, list[tuple[str, ...]]] = collections.defaultdict(list)
        self.calls: list[tuple[str, float, float, float]] = []  # (name, start, end, cpu s)
        self._gui = threading.main_thread().ident
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, daemon=True)
        self.timer = None
        self.errors: list[str] = []

    def _on_gc(self, phase: str, info: dict) -> None:
        """Time the cyclic garbage collector's full (generation 2) collections."""
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
            stack = [f for f in _stack(sys._getframe(1)) if not f.startswith("importlib._")]
            self._gc_where = " > ".join(stack[-3:])
        elif self._gc_start is not None:
            name = f"gc (full collection, {threading.current_thread().name}: {self._gc_where})"
            self.calls.append((name, self._gc_start, time.perf_counter(), float("nan")))
            self._gc_start = None

    def start(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self._gc_start: float | None = None
        gc.callbacks.append(self._on_gc)

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.timer.start(int(TICK_MS))
        self._watch.start()

    def stop(self) -> None:
        self._stop.set()
        self.timer.stop()
        gc.callbacks.remove(self._on_gc)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.ticks.append(now)
        self.cpu.append(time.thread_time())
        self.last_tick = now

    def _watchdog(self) -> None:
        me = threading.get_ident()
        woke = time.perf_counter()
        while not self._stop.wait(SAMPLE_S):
            now = time.perf_counter()
            late, woke = now - woke - SAMPLE_S, now
            started = self.last_tick
            if now - started < WATCH_AFTER_S:
                continue
            frames = sys._current_frames()
            stack = _stack(frames[self._gui]) if self._gui in frames else ()
            if stack:
                self.samples[started].append(stack)
                continue
            # No Python code runs in the GUI thread: Qt's own work, or the GIL is held
            # elsewhere (a C extension in a worker thread, e.g. importing torch).
            others = [_stack(f)[-3:] for t, f in frames.items() if t not in (me, self._gui)]
            where = " | ".join(" > ".join(s) for s in others if s) or "no other Python thread"
            tag = "GIL held elsewhere" if late > 0.02 else "GUI thread in Qt/C++"
            self.samples[started].append((f"({tag}; workers: {where})",))

    def timed(self, name: str, function):
        """``function`` wrapped so that each call is recorded as ``name``."""
        parameters = inspect.signature(function).parameters.values()
        varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        n_positional = sum(p.kind in positional for p in parameters)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            # Qt passes extra signal arguments (e.g. ``checked``) to slots that take *args
            args = args if varargs else args[:n_positional]
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.calls.append((name, start, time.perf_counter(), time.thread_time() - cpu))

        return wrapper


def _stack(frame) -> tuple[str, ...]:
    """Python frames of the GUI thread, outermost first, without this script's own."""
    names = []
    while frame is not None:
        module = frame.f_globals.get("__name__", "?")
        if module != "__main__":
            code = frame.f_code
            names.append(f"{module}.{getattr(code, 'co_qualname', code.co_name)}")
        frame = frame.f_back
    return tuple(reversed(names))


def patch_slots(recorder: Recorder) -> None:
    """Time the slots that can run long in the GUI thread (before any widget exists)."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from napari._vispy.canvas import VispyCanvas
    from napari.components import ViewerModel

    from segloop.napari import (
        _common,
        _count_widget,
        _finetune_widget,
        _loss_plot,
        _segment_widget,
        _weightmap_widget,
    )

    targets = [
        (_common.JobWidget, "run", "button click (JobWidget.run)"),
        (_segment_widget.SegmentWidget, "job_done", "SegmentWidget.job_done"),
        (_weightmap_widget.WeightMapWidget, "job_done", "WeightMapWidget.job_done"),
        (_count_widget.CountWidget, "job_done", "CountWidget.job_done"),
        (_finetune_widget.FinetuneWidget, "make_job", "FinetuneWidget.make_job"),
        (_finetune_widget.FinetuneWidget, "_on_event", "FinetuneWidget._on_event"),
        (_finetune_widget.FinetuneWidget, "job_done", "FinetuneWidget.job_done"),
        (_finetune_widget.FinetuneWidget, "refresh_project", "FinetuneWidget.refresh_project"),
        (_loss_plot.LossPlot, "add_loss", "LossPlot.add_loss"),
        (FigureCanvasQTAgg, "draw", "matplotlib canvas draw"),
        (FigureCanvasQTAgg, "paintEvent", "matplotlib canvas paint"),
        (VispyCanvas, "on_draw", "vispy canvas draw"),
        (ViewerModel, "add_layer", "ViewerModel.add_layer"),
    ]
    for owner in (_segment_widget.SegmentWidget, _finetune_widget.FinetuneWidget):
        original = owner._on_done

        def on_done(self, outcome, _original=original):
            if outcome.error:
                recorder.errors.append(f"{type(self).__name__}: {outcome.error}")
            return _original(self, outcome)

        owner._on_done = on_done
    try:
        from segloop.napari._result_layers import Stager

        targets.append((Stager, "_run_next", "Segment: one staged layer step"))
    except ImportError:  # an older checkout (--src)
        pass
    for owner, attribute, name in targets:
        if hasattr(owner, attribute):
            setattr(owner, attribute, recorder.timed(name, getattr(owner, attribute)))


def _preload_training() -> None:
    """Make the training worker call ``preload_for_training()`` before it trains."""
    from segloop.napari import _preload, train_adapters

    run = train_adapters.train_run

    def train_run(*args, **kwargs):
        _preload.preload_for_training()
        return (yield from run(*args, **kwargs))

    train_adapters.train_run = train_run


# --------------------------------------------------------------------------- event loop


def run_until(predicate, timeout_s: float) -> bool:
    """Run the Qt event loop until ``predicate()`` or the timeout; True if it held."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.perf_counter() + timeout_s
    state = {"ok": False}

    def check() -> None:
        if predicate():
            state["ok"] = True
            loop.quit()
        elif time.perf_counter() > deadline:
            loop.quit()

    check_timer = QTimer()
    check_timer.timeout.connect(check)
    check_timer.start(25)
    loop.exec()
    check_timer.stop()
    return state["ok"]


def settle(seconds: float) -> None:
    run_until(lambda: False, seconds)


def click_later(button) -> None:
    """Click ``button`` from inside the event loop (so the click's handler is measured)."""
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, button.click)


# --------------------------------------------------------------------------- analysis


def phase_stats(recorder: Recorder, start: float, end: float) -> dict:
    """Stalls between ``start`` and ``end``: wall time, and the GUI thread's CPU time in
    each gap (the rest of a gap is waiting: for a core, or for the GIL)."""
    # the ticks inside, plus the last one before and the first one after the phase
    index = [i for i, t in enumerate(recorder.ticks) if start <= t <= end]
    first = (
        index[0]
        if index
        else next((i for i, t in enumerate(recorder.ticks) if t > end), len(recorder.ticks))
    )
    last = index[-1] if index else first - 1
    index = list(range(max(first - 1, 0), min(last + 2, len(recorder.ticks))))
    gaps = []  # (stall ms, gui cpu ms, gap start)
    for a, b in zip(index, index[1:], strict=False):
        wall = (recorder.ticks[b] - recorder.ticks[a]) * 1000
        cpu = (recorder.cpu[b] - recorder.cpu[a]) * 1000
        gaps.append((max(wall - TICK_MS, 0.0), cpu, recorder.ticks[a]))
    stalls = sorted(gaps, reverse=True)
    values = sorted(g[0] for g in gaps)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))] if values else 0.0
    worst = [_explain(recorder, *gap, start) for gap in stalls[:5] if gap[0] > 30]
    handlers: dict[str, dict] = {}
    for name, a, b, cpu in recorder.calls:
        if start <= a <= end:
            entry = handlers.setdefault(
                name, {"calls": 0, "max_ms": 0.0, "max_cpu_ms": 0.0, "total_ms": 0.0}
            )
            entry["calls"] += 1
            entry["max_ms"] = round(max(entry["max_ms"], (b - a) * 1000), 1)
            if cpu == cpu:  # not NaN (the collector's time is not one thread's)
                entry["max_cpu_ms"] = round(max(entry["max_cpu_ms"], cpu * 1000), 1)
            entry["total_ms"] = round(entry["total_ms"] + (b - a) * 1000, 1)
    return {
        "seconds": round(end - start, 2),
        "ticks": len(index),
        "max_stall_ms": round(values[-1] if values else 0.0, 1),
        "p99_stall_ms": round(p99, 1),
        "stalls_over_100ms": sum(s > STALL_MS for s in values),
        "stalls_over_50ms": sum(s > 50 for s in values),
        "max_gui_cpu_in_a_gap_ms": round(max((g[1] for g in gaps), default=0.0), 1),
        "worst": worst,
        "handlers": dict(sorted(handlers.items(), key=lambda kv: -kv[1]["max_ms"])),
    }


def _explain(recorder: Recorder, stall_ms: float, cpu_ms: float, at: float, start: float) -> dict:
    """What the GUI thread did during the stall that began at ``at``."""
    end = at + (stall_ms + TICK_MS) / 1000
    samples = recorder.samples.get(at, [])
    slots = collections.Counter(s[0] for s in samples if s)
    hot = collections.Counter()
    for stack in samples:
        interesting = [f for f in stack if f.startswith(("segloop", "napari", "vispy", "matplot"))]
        for name in dict.fromkeys(interesting[-3:]):
            hot[name] += 1
    timed = [
        f"{name} {1000 * (b - a):.0f} ms"
        for name, a, b, _ in sorted(recorder.calls, key=lambda c: c[1] - c[2])
        if a < end and b > at and (b - a) > 0.02
    ][:4]
    return {
        "stall_ms": round(stall_ms, 1),
        "gui_cpu_ms": round(cpu_ms, 1),
        "at_s": round(at - start, 2),
        "samples": len(samples),
        "slots": dict(slots.most_common(3)),
        "hot": dict(hot.most_common(4)),
        "timed": timed,
    }


# --------------------------------------------------------------------------- phases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="current")
    parser.add_argument("--description", default="", help="what the label measures")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/gui_freeze.json")
    parser.add_argument("--minutes", type=float, default=0.5, help="fine-tune budget")
    parser.add_argument("--val-interval", type=float, default=8.0, help="seconds")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds after each phase")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG after segmenting")
    parser.add_argument("--src", type=Path, default=None, help="import segloop from DIR")
    parser.add_argument("--no-train", action="store_true", help="no Train click, no fine-tune")
    parser.add_argument(
        "--no-others", action="store_true", help="no Weight map and Count runs at the end"
    )
    parser.add_argument(
        "--preload-train",
        action="store_true",
        help="start the training worker with _preload.preload_for_training() (a trial of it)",
    )
    args = parser.parse_args(argv)
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))

    from napari.utils.notifications import notification_manager
    from qtpy.QtWidgets import QApplication

    import napari
    import segloop

    recorder = Recorder()
    patch_slots(recorder)
    if args.preload_train:
        _preload_training()
    load_start = os.getloadavg()[0]
    notes: list[str] = []
    notification_manager.notification_ready.connect(
        lambda n: notes.append(f"{n.severity.value}: {n.message}")
    )
    viewer = napari.Viewer(title="segloop gui_freeze", show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-segloop", "fluorescence")
    _, segment = viewer.window.add_plugin_dock_widget("napari-segloop", "Segment")
    _, finetune = viewer.window.add_plugin_dock_widget("napari-segloop", "Fine-tune", tabify=True)
    image = viewer.layers["nuclei fluorescence"]
    segment.image_combo.set_layer(image)
    segment.model_combo.setCurrentIndex(segment.model_combo.findData("nuclei"))
    QApplication.processEvents()
    settle(2.0)
    recorder.start()
    phases: dict[str, dict] = {}
    marks: dict[str, tuple[float, float]] = {}

    def phase(name: str, action, done, timeout: float) -> None:
        start = time.perf_counter()
        action()
        ok = run_until(done, timeout)
        settle(args.settle)
        marks[name] = (start, time.perf_counter())
        print(f"{name}: {'ok' if ok else 'TIMED OUT'} in {time.perf_counter() - start:.1f} s")

    phase("idle", lambda: None, lambda: True, 1.0)
    for name in ("segment (first)", "segment (second)"):
        phase(name, lambda: click_later(segment.run_button), lambda: not segment.running, 300)
        run_until(lambda: not segment.running, 1.0)
    instances = viewer.layers[f"{image.name} instances"]
    if args.screenshot is not None:
        viewer.window.screenshot(str(args.screenshot), canvas_only=False)

    project = Path(tempfile.mkdtemp(prefix="segloop-freeze-"))
    if not args.no_train:
        finetune.pairs.set_folder(project)
        finetune.pairs.add_pair(image, instances)
        options = finetune.options
        options.budget_combo.setCurrentIndex(options.budget_combo.findData("minutes"))
        options.budget_spin.setValue(args.minutes)
        finetune.config_overrides = {"val_interval_s": args.val_interval}
        settle(0.5)
        start = time.perf_counter()
        click_later(finetune.run_button)
        run_until(lambda: finetune.running, 30)
        marks["train click"] = (start, time.perf_counter())
        phase("fine-tune", lambda: None, lambda: not finetune.running, 60 * args.minutes + 600)
        marks["fine-tune"] = (start, marks["fine-tune"][1])
        print(f"fine-tune ended: {finetune.progress.format()!r}; {finetune.time_label.text()}")
    if not args.no_others:
        _, weights = viewer.window.add_plugin_dock_widget("napari-segloop", "Weight map")
        weights.labels_combo.set_layer(instances)
        settle(0.5)
        phase(
            "weight map", lambda: click_later(weights.run_button), lambda: not weights.running, 60
        )
        _, count = viewer.window.add_plugin_dock_widget("napari-segloop", "Count")
        count.source_combo.set_layer(instances)
        count.method_combo.setCurrentIndex(count.method_combo.findData("components"))
        settle(0.5)
        phase("count", lambda: click_later(count.run_button), lambda: not count.running, 60)
    recorder.stop()
    for name, (start, end) in marks.items():
        phases[name] = phase_stats(recorder, start, end)
    shutil.rmtree(project, ignore_errors=True)

    report = {
        "label": args.label,
        "description": args.description or f"segloop from {Path(segloop.__file__).parent}",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1min_start": round(load_start, 2),
            "load_avg_1min_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "napari": napari.__version__,
            "display": os.environ.get("DISPLAY", ""),
        },
        "settings": {
            "tick_ms": TICK_MS,
            "minutes": args.minutes,
            "val_interval_s": args.val_interval,
            "settle_s": args.settle,
            "preload_train": args.preload_train,
        },
        "phases": phases,
        "notifications": notes,
        "errors": recorder.errors,
    }
    print_table(report)
    print("\n".join(notes + recorder.errors))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.label] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} [{args.label}]")
    viewer.close()


def print_table(report: dict) -> None:
    machine = report["machine"]
    print(
        f"\n{report['label']} (load {machine['load_avg_1min_start']} -> "
        f"{machine['load_avg_1min_end']})"
    )
    print(
        f"{'phase':<18} {'s':>6} {'max ms':>7} {'(cpu)':>6} {'p99 ms':>7} {'>100ms':>7}"
        "  worst stall: slot / timed handler"
    )
    for name, stats in report["phases"].items():
        worst = stats["worst"][0] if stats["worst"] else {}
        cause = ", ".join(worst.get("timed", [])[:2]) or ", ".join(list(worst.get("slots", {}))[:1])
        print(
            f"{name:<18} {stats['seconds']:>6.1f} {stats['max_stall_ms']:>7.0f} "
            f"{worst.get('gui_cpu_ms', 0):>6.0f} {stats['p99_stall_ms']:>7.0f} "
            f"{stats['stalls_over_100ms']:>7}  {cause[:110]}"
        )


if __name__ == "__main__":
    _ensure_display(sys.argv[1:])
    main()
