import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from segloop.core.locks import LOCK_NAME, project_lock
from segloop.core.modelio import new_bundle
from segloop.core.models import ModelConfig
from segloop.core.project import Project

HOLDER = """
import os, sys, time
from pathlib import Path
from segloop.core.locks import project_lock
root = Path(sys.argv[1])
with project_lock(root):
    (root / "held").write_text("yes")
    if sys.argv[2] == "crash":
        os._exit(1)  # dies holding the lock
    time.sleep(1.5)
"""


def _hold_in_another_process(root: Path, how: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), how])
    deadline = time.monotonic() + 60
    while not (root / "held").exists():
        assert child.poll() is None or how == "crash", "the holder died"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return child


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX lock semantics")
def test_another_process_waits_for_the_lock(tmp_path):
    child = _hold_in_another_process(tmp_path, "hold")
    start = time.monotonic()
    with project_lock(tmp_path):
        waited = time.monotonic() - start  # the holder sleeps 1.5 s in the lock
    child.wait()
    assert waited > 0.5
    assert (tmp_path / LOCK_NAME).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX lock semantics")
def test_a_process_that_dies_holding_the_lock_does_not_block_the_project(tmp_path):
    child = _hold_in_another_process(tmp_path, "crash")
    child.wait()
    done = threading.Event()

    def take() -> None:
        with project_lock(tmp_path):
            done.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert done.wait(10), "the lock of a dead process was not released"


def test_versions_saved_together_get_their_own_numbers(tmp_path):
    project = Project(tmp_path / "p", base_model="nuclei")
    bundles = [new_bundle(ModelConfig(depth=2, base_channels=4), f"m{i}") for i in range(4)]
    results = []
    threads = [
        threading.Thread(target=lambda b=b: results.append(project.save_version(b)))
        for b in bundles
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(v.version for v in results) == [1, 2, 3, 4]
    assert [v.version for v in project.versions()] == [1, 2, 3, 4]
    assert {v.metadata["name"] for v in results} == {f"p-v{n}" for n in range(1, 5)}


def test_a_folder_without_file_locks_still_saves(tmp_path, monkeypatch, caplog):
    """A network mount without flock, or a read-only project with no lock file: the
    body still runs (threads stay ordered), and the first case says so in the log."""
    import errno

    from segloop.core import locks

    def no_locks(fd):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks, "_lock_file", no_locks)
    ran = []
    with locks.project_lock(tmp_path):
        ran.append("no flock")
    assert "no file locks" in caplog.text
    monkeypatch.setattr(locks, "_open_lock_file", lambda root: None)
    with locks.project_lock(tmp_path):
        ran.append("no lock file")
    assert ran == ["no flock", "no lock file"]

    def broken(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(
        locks, "_open_lock_file", lambda root: os.open(tmp_path / "x", os.O_RDWR | os.O_CREAT)
    )
    monkeypatch.setattr(locks, "_lock_file", broken)
    with pytest.raises(OSError, match="I/O error"), locks.project_lock(tmp_path):
        ran.append("never")
    assert ran[-1] == "no lock file"
