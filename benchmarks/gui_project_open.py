"""GUI-thread stalls when a project folder with many model versions is opened.

    python benchmarks/gui_project_open.py --model FINE_TUNED.safetensors [--counts 30 100 300]
        [--label after] [--out docs/results/gui_project_open.json]

Results go under ``--label`` into the JSON file (other labels there are kept); to measure
an older commit, put its ``src`` first on ``PYTHONPATH`` (e.g. a ``git worktree``).

Builds projects of N copies of ``--model`` (a fine-tuned version, whose header carries its
training history: ~40 KB), opens ``napari.Viewer(show=True)`` (under ``xvfb-run`` when
there is no display) with the Fine-tune dock, and with a 10 ms ``QTimer`` ticking in the
GUI thread (:class:`gui_freeze.Recorder`) measures, each with the header cache emptied
first:

- ``in the handler``: ``refresh_project()`` called as the folder field's handler did
  before (every header read in the GUI thread);
- ``picked``: the folder picked as a user does (``set_folder``): the headers are read in a
  worker, then the folder is listed;
- ``picked again``: the same folder picked once more (headers already read).

Each phase runs until the table lists the N versions, plus a short settle time.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_freeze import ROOT, Recorder, _ensure_display, phase_stats, run_until, settle  # noqa: E402


def _project(folder: Path, model: Path, count: int) -> Path:
    (folder / "models").mkdir(parents=True)
    for number in range(1, count + 1):
        shutil.copyfile(model, folder / "models" / f"v{number}.safetensors")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuned version file")
    parser.add_argument("--counts", type=int, nargs="+", default=[30, 100, 300])
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after each phase")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/gui_project_open.json")
    parser.add_argument("--label", default="current")
    args = parser.parse_args(argv)
    _ensure_display(sys.argv[1:], __file__)

    import napari
    from segloop.core import versions
    from segloop.napari._finetune_widget import FinetuneWidget

    viewer = napari.Viewer(show=True)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    settle(1.0)
    recorder = Recorder()
    recorder.start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            folder = _project(Path(tmp) / f"p{count}", args.model, count)
            listed = lambda: widget.table.rowCount() == count  # noqa: E731, B023
            phases = {
                "in the handler": lambda: widget.refresh_project(),
                "picked": lambda: widget.pairs.set_folder(folder),  # noqa: B023
                "picked again": lambda: widget.pairs.set_folder(folder),  # noqa: B023
            }
            for name, action in phases.items():
                if name != "picked again":
                    versions._HEADERS.clear()
                widget.pairs.set_folder(Path(tmp) / "empty")  # an empty table first
                settle(args.settle)
                if name == "in the handler":  # the field holds the folder, nothing read yet
                    widget.pairs.folder_edit.setText(str(folder))
                start = time.perf_counter()
                action()
                ok = run_until(listed, 120.0)
                settle(args.settle)
                stats = phase_stats(recorder, start, time.perf_counter())
                row = {"versions": count, "phase": name, "listed": ok, **stats}
                row["worst"] = row["worst"][:1]
                rows.append(row)
                print(
                    f"{count:4d} versions, {name:15s}: max stall {row['max_stall_ms']:7.1f} ms,"
                    f" stalls > 100 ms {row['stalls_over_100ms']}, listed {ok}",
                    flush=True,
                )
    recorder.stop()
    import segloop

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "segloop": str(Path(segloop.__file__).parent),
        "machine": f"{platform.processor() or platform.machine()}, load {_load()}",
        "model": str(args.model),
        "rows": rows,
    }
    everything = json.loads(args.out.read_text()) if args.out.exists() else {}
    everything[args.label] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(everything, indent=1))
    viewer.close()


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
