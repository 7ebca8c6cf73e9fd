"""Faults around real ``segloop`` processes: SIGINT/SIGTERM/SIGKILL during training,
disk full (a small tmpfs in a private mount namespace), a read-only folder and a file-size
limit while saving. The model at ``--out`` must survive all of them, and every failure is
one ``segloop: error:`` line naming the file."""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, error_lines, write_image, write_pairs

SEGLOOP = [sys.executable, "-m", "segloop.cli"]


def _wait_for(predicate, timeout: float, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def _start_training(tmp_path: Path, init: Path, minutes: str = "5"):
    images, masks = write_pairs(tmp_path, n=3)
    out = tmp_path / "m.safetensors"
    shutil.copy(init, out)  # an existing model: must survive
    log = (tmp_path / "stderr.txt").open("w")
    argv = [*SEGLOOP, "train", "--images", images, "--masks", masks, "--out", out]
    argv += ["--init", init, "--minutes", minutes, "--crop", "48", "--batch", "2"]
    process = subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.DEVNULL,
        stderr=log,
        preexec_fn=_as_from_a_shell,
    )
    return process, out, tmp_path / "stderr.txt"


def _as_from_a_shell() -> None:
    """The child gets SIGINT as a shell gives it: default disposition, not blocked.

    A process inherits ignored signals and the signal mask, and Python installs its
    Ctrl-C handler only when SIGINT is not ignored at start-up; after the napari tests
    the test process may hand down either, and ``segloop train`` would then never see
    the SIGINT the test sends.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _training_started(log: Path):
    return lambda: "step " in log.read_text()


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_training_keeps_the_old_model(tmp_path, tiny_model, sig, status):
    process, out, log = _start_training(tmp_path, tiny_model)
    old = out.read_bytes()
    try:
        assert _wait_for(_training_started(log), 90, process), log.read_text()
        process.send_signal(sig)
        process.wait(60)
    finally:
        process.kill()
    stderr = log.read_text()
    line = assert_one_line_error(process.returncode, stderr, "untouched", status)
    assert f"interrupted by {sig.name}" in line and str(out) in line
    assert out.read_bytes() == old
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_sigkill_during_training_keeps_the_old_model(tmp_path, tiny_model):
    process, out, log = _start_training(tmp_path, tiny_model)
    old = out.read_bytes()
    try:
        assert _wait_for(_training_started(log), 90, process), log.read_text()
        process.kill()
        process.wait(30)
    finally:
        process.kill()
    assert out.read_bytes() == old


@pytest.mark.slow
def test_interrupt_after_a_checkpoint_says_where_it_is(tmp_path, tiny_model):
    """Checkpoints go to a side file (the first after 60 s of training), never to --out."""
    from segloop.core.modelio import load_model

    process, out, log = _start_training(tmp_path, tiny_model, minutes="10")
    side = tmp_path / "m.checkpoint.safetensors"
    old = out.read_bytes()
    try:
        assert _wait_for(side.exists, 240, process), log.read_text()
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        process.wait(60)
    finally:
        process.kill()
    line = assert_one_line_error(process.returncode, log.read_text(), str(side), 130)
    assert "untouched" in line
    assert out.read_bytes() == old
    assert load_model(side).metadata["training"]["checkpoint"] is True


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_while_saving_keeps_the_old_model(tmp_path, tiny_model):
    images, masks = write_pairs(tmp_path, n=2)
    out = tmp_path / "m.safetensors"
    shutil.copy(tiny_model, out)
    old = out.read_bytes()
    argv = [*SEGLOOP, "train", "--images", images, "--masks", masks, "--out", out]
    argv += ["--init", tiny_model, "--epochs", "1", "--crop", "48"]
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(len(old) // 4),
    )
    line = assert_one_line_error(done.returncode, done.stderr, "m.")
    assert "File too large" in line and str(tmp_path) in line
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "m.safetensors", "masks"]


def _namespace_tmpfs_works() -> str | None:
    """None when a private mount namespace with a tmpfs can be made here, else why not."""
    if not shutil.which("unshare"):
        return "unshare is not installed"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        return f"cannot mount a tmpfs in a private namespace: {probe.stderr.strip()[:80]}"
    return None


def _in_tmpfs(mount: Path, size: str, argv: list, readonly: bool = False):
    """Run ``argv`` with a ``size`` tmpfs at ``mount`` (private namespace); the listing
    of the tmpfs afterwards follows a ``--files--`` line on stdout."""
    remount = f' && mount -o remount,ro "{mount}"' if readonly else ""
    script = (
        f'mount -t tmpfs -o size={size} tmpfs "{mount}"{remount} && "$@"; rc=$?; '
        f'echo --files--; ls -A "{mount}"; ls -A "{mount}"/* 2>/dev/null; exit $rc'
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *[str(a) for a in argv]],
        capture_output=True,
        text=True,
        timeout=300,
    )


needs_tmpfs = pytest.mark.skipif(
    bool(_namespace_tmpfs_works()), reason=str(_namespace_tmpfs_works())
)


@needs_tmpfs
def test_disk_full_in_predict_names_the_file_and_leaves_no_partial_file(tmp_path, tiny_model):
    image = write_image(tmp_path / "in" / "cells.tif", size=96)
    mount = tmp_path / "disk"
    mount.mkdir()
    argv = [*SEGLOOP, "predict", "--model", tiny_model, "--diameter", "native"]
    argv += ["--probabilities", "--out", mount / "out", image]
    done = _in_tmpfs(mount, "12k", argv)
    line = assert_one_line_error(done.returncode, done.stderr, str(mount / "out"))
    assert "No space left on device" in line
    files = done.stdout.split("--files--")[1].split()
    assert not [name for name in files if ".tmp" in name], files


@needs_tmpfs
def test_disk_full_before_training_is_refused_up_front(tmp_path, tiny_model):
    images, masks = write_pairs(tmp_path, n=2)
    mount = tmp_path / "disk"
    mount.mkdir()
    argv = [*SEGLOOP, "train", "--images", images, "--masks", masks]
    argv += ["--out", mount / "m.safetensors", "--epochs", "1", "--crop", "48"]
    started = time.monotonic()
    done = _in_tmpfs(mount, "256k", argv)  # the default U-Net needs ~8 MB per file
    line = assert_one_line_error(done.returncode, done.stderr, "--out")
    assert "free" in line and "step " not in done.stderr
    assert time.monotonic() - started < 120


@needs_tmpfs
def test_read_only_folder_is_refused_before_any_work(tmp_path, tiny_model):
    image = write_image(tmp_path / "in" / "cells.tif")
    mount = tmp_path / "disk"
    mount.mkdir()
    argv = [*SEGLOOP, "predict", "--model", tiny_model, "--out", mount / "out", image]
    done = _in_tmpfs(mount, "1m", argv, readonly=True)
    line = assert_one_line_error(done.returncode, done.stderr, "--out")
    assert "Read-only file system" in line
    images, masks = write_pairs(tmp_path, n=2)
    argv = [*SEGLOOP, "train", "--images", images, "--masks", masks, "--out", mount / "m.sf"]
    done = _in_tmpfs(mount, "1m", [*argv, "--epochs", "1"], readonly=True)
    line = assert_one_line_error(done.returncode, done.stderr, "--out")
    assert "Read-only file system" in line and not error_lines(done.stdout)
