"""Validation layer of the ``segloop`` command line: argparse types with ranges, and
checks of output paths made before any work starts.

Every bad value is refused with one line that names the option, e.g.
``segloop: error: --tile must be between 16 and 4096 (got 100000)``, exit status 1 (other
usage errors, such as a missing option, keep argparse's status 2); every unusable output
path with one line naming the file (status 1), before training or prediction begins.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

#: Ranges (inclusive) of the numeric options.
TILE_RANGE = (16, 4096)
BATCH_RANGE = (1, 256)
CROP_RANGE = (16, 4096)
DIAMETER_RANGE = (1.0, 10_000.0)
MAX_MINUTES = 7 * 24 * 60.0
MAX_EPOCHS = 10**7
SEED_RANGE = (0, 2**32 - 1)
MAX_DASK_WORKERS = 256
#: Largest class id a class mask may hold (class maps are written as uint8).
MAX_CLASS_ID = 255


class CheckedParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line, ``segloop: error: ...``, exit 2.

    ``argument --tile: --tile must be ...`` is shortened to ``--tile must be ...``.
    """

    def error(self, message: str) -> NoReturn:
        status = 2
        found = re.match(r"argument (\S+?)(?:/\S+)?: (.*)", message, flags=re.DOTALL)
        if found and found.group(2).startswith(found.group(1)):
            # a value refused by this module's types: an error (status 1), not bad usage
            message, status = found.group(2), 1
        elif found:
            message = f"{found.group(1)}: {found.group(2)}"
        message = " ".join(message.split())
        sys.stderr.write(f"segloop: error: {message} (see {self.prog} --help)\n")
        sys.exit(status)


def _parse_number(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option} must be a number (got {text!r})") from None


def integer(option: str, low: int, high: int) -> Callable[[str], int]:
    """Argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} must be a whole number (got {text!r})"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{option} must be between {low} and {high} (got {value})"
            )
        return value

    return parse


def number(option: str, low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """Argparse type: a finite number in ``[low, high]`` (``(low, high]`` if ``low_open``)."""

    def parse(text: str) -> float:
        value = _parse_number(option, text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{option} must be a finite number (got {text})")
        if value < low or value > high or (low_open and value == low):
            interval = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"{option} must be in {interval} (got {text})")
        return value

    return parse


def diameter(option: str, words: tuple[str, ...]) -> Callable[[str], float | str]:
    """Argparse type: a diameter in pixels within :data:`DIAMETER_RANGE`, or one of ``words``
    (returned as given)."""
    low, high = DIAMETER_RANGE
    choices = " or ".join(repr(w) for w in words)

    def parse(text: str) -> float | str:
        from .core.units import parse_length

        if text in words:
            return text
        try:
            value, unit = parse_length(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} must be a number of pixels, a length such as 12um, {choices} "
                f"(got {text!r})"
            ) from None
        if unit is not None:
            return text  # a physical length: converted with each file's pixel size
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"{option} must be between {low:g} and {high:g} pixels, {choices} (got {text})"
            )
        return text  # the commands parse the number themselves (as before)

    return parse


def level(text: str) -> int | str:
    """Argparse type of ``--level``: a resolution level 0-64 or ``auto``."""
    if text == "auto":
        return text
    return integer("--level", 0, 64)(text)


def pixel_size(text: str) -> tuple[float, float]:
    """Argparse type of ``--pixel-size``: micrometres per pixel, ``0.65``, ``650nm``, ``y,x``."""
    from .core.units import parse_pixel_size

    try:
        return parse_pixel_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--pixel-size: {exc}") from None


def device(text: str) -> str:
    """Argparse type of ``--device``: auto, cpu, cuda, cuda:N or mps, available here."""
    from .core.device import DeviceError, resolve_device

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text.lower()):
        raise argparse.ArgumentTypeError(
            f"--device must be auto, cpu, cuda, cuda:N or mps (got {text!r})"
        )
    try:
        resolve_device(text)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(f"--device: {exc}") from None
    return text


def dask_address(text: str) -> str:
    """Argparse type of ``--dask``: ``local:N`` (1 <= N <= 256) or a scheduler address
    ``[scheme://]host:port``."""
    if text.startswith("local:"):
        count = text.split(":", 1)[1]
        if not count.isdigit() or not 1 <= int(count) <= MAX_DASK_WORKERS:
            raise argparse.ArgumentTypeError(
                f"--dask local:N needs a worker count N between 1 and {MAX_DASK_WORKERS} "
                f"(got {text!r})"
            )
        return text
    if not re.fullmatch(r"([a-z][a-z0-9+.-]*://)?[^\s:/]+:\d{1,5}", text):
        raise argparse.ArgumentTypeError(
            f"--dask must be local:N or a scheduler address such as tcp://host:8786 (got {text!r})"
        )
    return text


def _probe_folder(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and check that a file can be created in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".segloop-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(f"{what} {folder} is not writable: {reason}") from None


def check_output_file(path: str | Path, option: str) -> Path:
    """Before the work: ``path`` is not a folder and its folder is writable."""
    path = Path(path)
    if path.is_dir():
        raise OSError(f"{option} {path} is a folder, not a file")
    _probe_folder(path.parent, f"the folder of {option}")
    return path


def check_output_folder(path: str | Path, option: str) -> Path:
    """Before the work: ``path`` is (or can be made) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OSError(f"{option} {path} exists and is not a folder")
    _probe_folder(path, option)
    return path


def check_outputs_spare_inputs(outputs: list[tuple[str, Path]], inputs: list[Path]) -> None:
    """Before the work: no output file is one of the inputs, and no two outputs are one
    file (``outputs``: ``(option, path)`` pairs).

    Raises
    ------
    OSError
        Naming the option and the file.
    """
    from .core.imageio import same_file

    for index, (option, path) in enumerate(outputs):
        for source in inputs:
            if same_file(path, source):
                raise OSError(
                    f"{option} {path} is also an input of this command; refusing to "
                    "overwrite it (write the output elsewhere)"
                )
        for other_option, other in outputs[index + 1 :]:
            if same_file(path, other):
                raise OSError(f"{option} and {other_option} are the same file ({path})")


def check_model_out(path: str | Path, size: int | None = None) -> Path:
    """Before training: ``--out`` is writable, is not an existing non-model file, and its
    disk has room for the checkpoint, the temporary file and the model.

    Raises
    ------
    OSError
        Naming the file.
    """
    from .core.modelio import ModelFileError, read_header

    path = check_output_file(path, "--out")
    if path.exists():
        try:
            read_header(path)
        except ModelFileError:
            raise OSError(
                f"--out {path} exists and is not a segloop model file; refusing to overwrite it"
            ) from None
    if size:
        free = shutil.disk_usage(path.parent).free
        if free < 3 * size:
            from .core.memory import format_bytes

            raise OSError(
                f"--out {path}: only {format_bytes(free)} free on its disk, the model and its "
                f"checkpoint need about {format_bytes(3 * size)}"
            )
    return path


def check_together(args: argparse.Namespace, first: str, second: str) -> None:
    """Two options that only work together (``--val-images`` / ``--val-masks``)."""
    given = [bool(getattr(args, name.lstrip("-").replace("-", "_"))) for name in (first, second)]
    if given[0] != given[1]:
        missing, present = (second, first) if given[0] else (first, second)
        raise ValueError(f"{present} needs {missing} too")


def check_class_ids(data, option: str = "--target classes") -> int:
    """Largest class id of class masks, refused above :data:`MAX_CLASS_ID` naming the file."""
    largest = 0
    for item in data:
        top = int(item.labels.max(initial=0))
        if top > MAX_CLASS_ID:
            raise ValueError(
                f"{option}: the mask of {item.name} holds class id {top}; class ids must be "
                f"1..{MAX_CLASS_ID} (0 = unlabelled)"
            )
        largest = max(largest, top)
    return largest


def model_bytes(bundle) -> int:
    """Bytes of a model file of ``bundle`` (float32 weights plus a small header)."""
    return sum(4 * t.numel() for t in bundle.network.state_dict().values()) + 2**16


def interrupted_training(out: Path, side: Path, side_before: int | None) -> str:
    """What an interrupted training left: the model at --out untouched, the checkpoint."""
    kept = f"the model at {out} is untouched" if out.exists() else f"nothing was written to {out}"
    if side.exists() and side.stat().st_mtime_ns != side_before:
        return f"{kept}; the interrupted run's best checkpoint is {side}"
    return f"{kept}; the run had written no checkpoint yet"


def json_safe(value):
    """``value`` with NaN and infinite floats replaced by None (``null``: valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return json_safe(value.item())
    return value
