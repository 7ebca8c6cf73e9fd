"""Thread workers around the long-running generators of :mod:`segloop.napari.adapters`.

Each run becomes a napari ``thread_worker`` (a generator worker): ``Progress`` values are
relayed to the GUI thread as they are yielded and the generator's *return value* is the
result. Expected failures (a bad model file, an unavailable device, a cancel) are turned
into an :class:`Outcome` inside the thread, so the widgets show a plain notification
instead of a traceback. A :class:`Job` bundles the worker, its stop flag and its progress.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from napari.qt.threading import GeneratorWorker, thread_worker

from segloop.core.progress import Cancelled, Progress, RunControl

from . import adapters, count_adapters, edits, finetune_adapters, train_adapters

log = logging.getLogger(__name__)

#: Progress stages that count whole frames; other stages are steps inside one frame.
OUTER_STAGES = ("segment",)
#: Stages before the real work starts (shown at 0 %).
PREPARE_STAGES = ("load model",)


@dataclass
class Outcome:
    """How a job ended: a value, a user-facing error, a cancel, or a crash."""

    value: Any = None
    error: str | None = None
    cancelled: bool = False
    crashed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled and not self.crashed


@thread_worker(start_thread=False, ignore_errors=True)
def _guarded(
    run: Callable[..., Generator[Progress, None, Any]],
    args: tuple,
    kwargs: dict[str, Any],
    should_stop: Callable[[], bool],
) -> Generator[Progress, None, Outcome]:
    """Drive ``run(*args, should_stop=..., **kwargs)``; return an :class:`Outcome`."""
    try:
        value = yield from run(*args, should_stop=should_stop, **kwargs)
    except Cancelled:
        return Outcome(cancelled=True)
    except adapters.UserError as exc:
        return Outcome(error=str(exc))
    except ValueError as exc:  # core input checks; keep the traceback in the log
        log.warning("segloop job failed", exc_info=True)
        return Outcome(error=str(exc))
    except OSError as exc:  # a file that cannot be read or written: one notification
        log.warning("segloop job failed", exc_info=True)
        return Outcome(error=f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    except MemoryError:
        return Outcome(error="Not enough memory for this run: use a smaller image or tile size.")
    except RuntimeError as exc:
        if not _out_of_device_memory(exc):
            raise  # a bug: napari shows it with its traceback
        log.warning("segloop job ran out of device memory", exc_info=True)
        return Outcome(
            error="Not enough GPU memory for this run: use a smaller tile size, batch or "
            "crop, or pick the CPU device."
        )
    return Outcome(value)


def _out_of_device_memory(exc: RuntimeError) -> bool:
    """A CUDA or MPS out-of-memory error (torch raises it as a RuntimeError subclass)."""
    torch = sys.modules.get("torch")  # only set when a job imported it
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    return "out of memory" in str(exc).lower()


class ProgressTracker:
    """Turns nested ``Progress`` events into one percentage and a short text."""

    def __init__(self) -> None:
        self.frames_done = 0
        self.n_frames = 0

    def update(self, event: Progress) -> tuple[int, str]:
        """Percentage 0..100 of the whole job and a description of ``event``."""
        if event.stage in PREPARE_STAGES:
            fraction = 0.0
        elif event.stage in OUTER_STAGES:
            self.frames_done, self.n_frames = event.done, event.total
            fraction = event.fraction if event.total else 0.0
        elif self.n_frames:
            fraction = (min(self.frames_done, self.n_frames - 1) + event.fraction) / self.n_frames
        else:
            fraction = event.fraction
        text = event.message or f"{event.stage} {event.done}/{event.total}"
        return int(round(100 * min(max(fraction, 0.0), 1.0))), text


class Job:
    """One background run: start, cancel, progress and a single ``on_done`` call.

    Parameters
    ----------
    run : callable
        Generator function yielding ``Progress`` and returning the result; it must accept
        a ``should_stop`` keyword.
    *args, **kwargs
        Passed to ``run``.
    on_progress : callable, optional
        Called in the GUI thread with ``(percent, text)``.
    on_done : callable, optional
        Called once in the GUI thread with the :class:`Outcome` after the thread ended.
    """

    def __init__(
        self,
        run: Callable[..., Generator[Progress, None, Any]],
        *args: Any,
        on_progress: Callable[[int, str], None] | None = None,
        on_done: Callable[[Outcome], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._stop = threading.Event()
        self._outcome: Outcome | None = None
        self._on_progress = on_progress
        self._on_done = on_done
        self.tracker = ProgressTracker()
        self.finished = False
        self.worker: GeneratorWorker = _guarded(run, args, kwargs, self._stop.is_set)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.aborted.connect(self._aborted)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)

    def start(self) -> Job:
        """Start the thread; returns self."""
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop at its next progress step."""
        self._stop.set()
        self.worker.quit()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def _yielded(self, event: Progress) -> None:
        if self._on_progress is not None and isinstance(event, Progress):
            self._on_progress(*self.tracker.update(event))

    def _returned(self, outcome: Outcome) -> None:
        self._outcome = outcome

    def _aborted(self) -> None:
        self._outcome = Outcome(cancelled=True)

    def _errored(self, exc: Exception) -> None:
        # napari's worker already reports the exception (with its traceback).
        self._outcome = Outcome(error=f"{type(exc).__name__}: {exc}", crashed=True)

    def _finished(self) -> None:
        if self.finished:
            return
        self.finished = True
        outcome = self._outcome or Outcome(cancelled=True)
        if self._stop.is_set() and not outcome.crashed:
            outcome = Outcome(cancelled=True)
        if self._on_done is None:
            return
        try:
            self._on_done(outcome)
        except RuntimeError as exc:  # the widget was closed (its Qt object deleted)
            if "deleted" not in str(exc):
                raise


# The jobs get copies of the layer data: the user may keep painting while a thread reads.


def segment_job(request: adapters.SegmentRequest, **callbacks: Any) -> Job:
    """Job that loads the model, segments ``request.image`` and prepares the result
    layers' data (``SegmentOutput.layers``), all in the worker thread (not started).
    The image is copied there too (a big stack takes the GUI thread hundreds of ms)."""
    return Job(_segment_for_layers, request, **callbacks)


def _segment_for_layers(
    request: adapters.SegmentRequest, should_stop: Callable[[], bool] | None = None
) -> Generator[Progress, None, adapters.SegmentOutput]:
    from segloop.core.imageio import validate_image

    from ._preload import preload_torch
    from ._result_layers import segment_outputs

    request = replace(request, image=adapters.copy_unwritten(request.image))
    # a big image's values were not scanned in the GUI thread (adapters.image_data)
    validate_image(request.image, name=f"Image layer '{request.name}'")
    if "torch" not in sys.modules:  # the first run: import torch without stalling the GUI
        yield Progress("load model", 0, 1, "starting torch")
        preload_torch()
    output = yield from adapters.segment_run(request, should_stop)
    output.layers = segment_outputs(output)
    for check, shape, frame in request.edit_checks:
        check.compute(shape, frame)
    return output


def weight_map_job(
    labels: np.ndarray, w0: float, sigma: float, name: str = "labels", **callbacks: Any
) -> Job:
    """Job computing the U-Net weight map of each frame of ``labels`` (not started); its
    value is ``(weights, maximum)``. A big stack is copied and checked in the worker
    (:func:`adapters.snapshot`)."""
    return Job(_weight_map, adapters.snapshot(labels), w0, sigma, name, **callbacks)


def _weight_map(labels, w0, sigma, name, should_stop=None):
    """The weight map and its maximum (for the contrast limits)."""
    labels = adapters.own_copy(labels)
    adapters.check_label_values(labels, name)
    weights = yield from adapters.weight_map_run(labels, w0, sigma, should_stop)
    return weights, float(np.max(weights)) if weights.size else 1.0


def instances_job(
    labels: np.ndarray,
    method: str,
    min_size: int,
    min_distance: int,
    name: str = "labels",
    edit_checks: Sequence[edits.EditCheck] = (),
    **callbacks: Any,
) -> Job:
    """Job turning ``labels`` into instance labels with ``method`` (not started); its
    value is ``(instances, digests, source_states)``: the digests of every frame it wrote
    and the :func:`~segloop.napari.edits.frame_states` of the labels it read (both
    computed in the worker, for :func:`segloop.napari.edits.record_written` and
    :func:`~segloop.napari.edits.user_frames`). The ``edit_checks`` of the layers the
    result may replace are computed in the worker too."""
    labels = adapters.snapshot(labels)
    return Job(
        _instances_with_digests,
        labels,
        method,
        min_size,
        min_distance,
        name,
        list(edit_checks),
        **callbacks,
    )


def _instances_with_digests(
    labels, method, min_size, min_distance, name, edit_checks, should_stop=None
):
    labels = adapters.own_copy(labels)
    adapters.check_label_values(labels, name)
    out = yield from adapters.instances_run(labels, method, min_size, min_distance, should_stop)
    for check in edit_checks:
        check.compute(out.shape, None)
    return out, edits.frame_digests(out), edits.frame_states(labels)


class TrainJob(Job):
    """A training job with the core's two ways to end it early (a ``RunControl``).

    :meth:`request_stop` (the Stop button) ends *training* at the next step; the run
    then scores and saves the best weights so far, and returns normally.
    :meth:`cancel` (closing the widget) aborts the whole run; nothing is saved.

    Parameters
    ----------
    request : TrainRequest
        What to train, with the corrections to store first (in the worker thread).
    on_event : callable, optional
        Called in the GUI thread with every raw ``Progress`` (for the live plot).
    **callbacks
        ``on_progress`` / ``on_done`` as for :class:`Job`.
    """

    def __init__(
        self,
        request: train_adapters.TrainRequest,
        on_event: Callable[[Progress], None] | None = None,
        **callbacks: Any,
    ) -> None:
        self.control = RunControl()
        self._on_event = on_event
        super().__init__(_train, request, control=self.control, **callbacks)

    def request_stop(self) -> None:
        """End training at the next step; the version is still scored and saved."""
        self.control.stop()

    def cancel(self) -> None:
        """Abort the run: nothing is saved."""
        self.control.cancel()
        super().cancel()

    def _yielded(self, event: Progress) -> None:
        super()._yielded(event)
        if self._on_event is not None and isinstance(event, Progress):
            self._on_event(event)


def _train(request, control, should_stop=None):
    """``train_run`` as a Job's run (the Job's own stop flag is the control's cancel).

    The first run imports torch and ``torch._dynamo`` (which building the optimizer
    needs) without stalling the GUI thread (see :mod:`._preload`)."""
    from ._preload import preload_for_training

    yield Progress("load model", 0, 1, "starting torch")
    preload_for_training()
    return (yield from train_adapters.train_run(request, control))


def write_job(write: Callable[..., Any], *args: Any, **callbacks: Any) -> Job:
    """Job calling ``write(*args)`` (e.g. writing a table of many objects to a slow
    disk) in a worker thread (not started); its value is what ``write`` returns."""
    return Job(_write, write, args, **callbacks)


def _write(
    write: Callable[..., Any], args: tuple, should_stop: Callable[[], bool]
) -> Generator[Progress, None, Any]:
    yield Progress("write", 0, 1, "writing")
    return write(*args)


def count_job(
    labels: np.ndarray,
    intensity: adapters.IntensitySource | None,
    pixel_size: tuple[float, float] | None,
    name: str = "labels",
    **callbacks: Any,
) -> Job:
    """Job measuring every object of ``labels`` (copied: the user may keep painting; a
    big stack is copied in the worker, see :func:`adapters.snapshot`). Its value is
    ``(counts, note)``: a note when the intensities could not be used."""
    labels = adapters.snapshot(labels)
    if intensity is not None:
        intensity = replace(intensity, data=adapters.snapshot(intensity.data))
    return Job(_count, labels, intensity, pixel_size, name, **callbacks)


def _count(labels, intensity, pixel_size, name, should_stop=None):
    labels = adapters.own_copy(labels)
    adapters.check_label_values(labels, name)
    note = ""
    try:
        values = adapters.intensity_values(intensity)
    except adapters.UserError as exc:
        note, values = f"Counting without intensities: {exc}", None
    counts = yield from count_adapters.count_run(labels, values, pixel_size, should_stop)
    return counts, note


def save_job(folder: Any, corrections: list, sparse: bool, **callbacks: Any) -> Job:
    """Job storing corrections (snapshots taken in the GUI thread) in a project folder."""
    return Job(finetune_adapters.save_run, folder, corrections, sparse, **callbacks)


def read_project_job(folder: Any, **callbacks: Any) -> Job:
    """Job reading a project folder's version headers (see
    :func:`finetune_adapters.read_project`); not started."""
    return Job(finetune_adapters.read_project, folder, **callbacks)
