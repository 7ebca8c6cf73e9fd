"""Worker outcomes: a GPU running out of memory is a message, any other RuntimeError a bug."""

from __future__ import annotations

import pytest
import torch

from segloop.napari.workers import _out_of_device_memory


def test_device_out_of_memory_is_recognised():
    assert _out_of_device_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert _out_of_device_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not _out_of_device_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory")])
def test_a_job_that_runs_out_of_gpu_memory_ends_with_a_message(qtbot, error):
    from segloop.napari.workers import Job

    def run(should_stop=None):
        yield from ()
        raise error

    outcomes = []
    job = Job(run, on_done=outcomes.append)
    job.start()
    qtbot.waitUntil(lambda: bool(outcomes), timeout=10_000)
    assert outcomes[0].error.startswith("Not enough GPU memory") and not outcomes[0].crashed
