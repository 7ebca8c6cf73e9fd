"""Reading and writing microscopy images (TIFF, PNG, JPEG, folders of frames).

The checks and conversions of image arrays (the axis rule, grey conversion,
normalisation, :func:`validate_image`, :func:`prepare_image`) live in
:mod:`segloop.core.image_arrays` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from .image_arrays import (  # noqa: F401  (re-exported: imageio's public names)
    COLOUR_MODES,
    INVERT_MODES,
    LUMA_WEIGHTS,
    MIN_SIDE,
    _has_channels,
    image_axes,
    normalize_percentile,
    prepare_image,
    to_grayscale,
    trailing_channel_axis,
    validate_image,
)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded; the message names file and reason."""


class OutputWriteError(OSError):
    """An output file could not be written (disk full, read-only folder...); the message
    names the file. ``errno`` and ``strerror`` are the operating system's."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause) or type(cause).__name__)
        self.filename = str(path)

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def same_file(first: str | Path, second: str | Path) -> bool:
    """``first`` and ``second`` name one file (links and relative paths resolved)."""
    return os.path.realpath(first) == os.path.realpath(second)


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Parent folders are created. On an exception the temporary file is removed and
    ``path`` is left untouched.

    Parameters
    ----------
    path : str or Path
        Final destination.
    suffix : str, optional
        Suffix of the temporary file (some writers look at it).

    Yields
    ------
    Path
        Temporary file path in the same folder as ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent
        )
    except OSError as exc:
        raise OutputWriteError(path, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except OutputWriteError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _default_file_mode() -> int:
    """Mode a plain ``open(path, "w")`` would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _pil_to_array(img: Image.Image, palette_indices: bool = False) -> np.ndarray:
    mode = img.mode
    if mode == "P" and palette_indices:
        return np.array(img)  # a palette mask's indices are its label values
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("1", "LA", "La"):
        img = img.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    array = np.asarray(img)
    if mode in ("I;16", "I;16L", "I;16B") and array.dtype != np.uint16:
        array = array.astype(np.uint16)  # keep 16-bit PNGs 16-bit, native byte order
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file.

    TIFFs are read with tifffile as stored (multi-page: ``(T, H, W)`` or
    ``(T, H, W, C)``; LZW needs ``imagecodecs``). Other files are read with Pillow;
    16-bit PNGs stay uint16, palette images become RGB(A), bilevel images uint8 0/255,
    grey+alpha images drop the alpha.

    Parameters
    ----------
    path : str or Path
        Image file.

    Returns
    -------
    np.ndarray
        The pixel data.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageReadError
        If the file cannot be decoded (corrupt, unsupported, missing codec).
    """
    image, channel_axis = read_image_channels(path)
    _refuse_channel_axis(image.shape, channel_axis, str(path))
    return image


def read_label_image(path: str | Path) -> np.ndarray:
    """Read one label image: as :func:`read_image`, except that a palette
    (indexed-colour) PNG, GIF or BMP gives its palette indices, which are the label
    values of a palette mask, rather than their colours."""
    image, channel_axis = read_image_channels(path, palette_indices=True)
    _refuse_channel_axis(image.shape, channel_axis, str(path))
    return image


def _refuse_channel_axis(shape: tuple[int, ...], axis: int | None, where: str) -> None:
    """``ImageReadError`` for a channel axis that is not the last one (it would be read
    as frames); a last one is left to :func:`validate_image`'s message."""
    if axis is None or axis == len(shape) - 1:
        return
    raise ImageReadError(
        f"{where} has {shape[axis]} channels (shape {shape}, the channels on axis {axis}); "
        "segloop segments one grey or RGB image: open it in napari (which splits the "
        "channels into layers) and pick one, or save the channel to segment as its own file"
    )


def read_image_channels(
    path: str | Path, palette_indices: bool = False
) -> tuple[np.ndarray, int | None]:
    """Read one image file (see :func:`read_image`) and find its channel axis.

    ``palette_indices``: a palette image gives its indices, not colours (label images).

    Returns
    -------
    image : np.ndarray
        The pixel data as stored.
    channel_axis : int or None
        The axis holding channels other than RGB(A) colour: a TIFF's ``C`` axis (ImageJ
        and OME hyperstacks), or a last axis of 2 or of 5-7 values next to two axes of
        at least ``MIN_SIDE`` pixels; None for grey, RGB and RGBA images.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image file not found: {path}")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            image, axes = _read_tiff(path)
            if "C" in axes and len(axes) == image.ndim:
                return image, axes.index("C")
            return image, trailing_channel_axis(image.shape)
        with Image.open(path) as img:
            img.load()
            image = _pil_to_array(img, palette_indices)
            return image, trailing_channel_axis(image.shape)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(f"Cannot read image {path}: not enough memory") from exc
    except Exception as exc:  # codecs raise their own types (e.g. imagecodecs.DeflateError)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ImageReadError(f"Cannot read image {path}: {reason}") from exc


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    """All pages of a TIFF and tifffile's axes letters: one series as stored, several
    series (pages written by separate ``write()`` calls) stacked as frames when they
    have one shape.

    Raises
    ------
    ImageReadError
        If the series differ in shape (a multi-page TIFF is a time series of equal
        frames; reading only the first page would silently drop the others).
    """
    with tifffile.TiffFile(path) as tif:
        series = tif.series
        if not series:
            raise ImageReadError(f"Cannot read image {path}: no image data in the TIFF")
        if len(series) == 1:
            return np.asarray(series[0].asarray()), series[0].axes
        shapes = [tuple(s.shape) for s in series]
        if len(set(shapes)) > 1:
            listed = ", ".join("x".join(map(str, shape)) for shape in shapes[:4])
            more = ", ..." if len(shapes) > 4 else ""
            raise ImageReadError(
                f"Cannot read image {path}: its {len(shapes)} pages differ in size "
                f"({listed}{more}); frames of a multi-page TIFF must have one size"
            )
        arrays = [np.asarray(s.asarray()) for s in series]
    axes = series[0].axes
    frames_axis = len(shapes[0]) >= 3 and not _has_channels(shapes[0]) and "C" not in axes
    if frames_axis:
        return np.concatenate(arrays), axes
    return np.stack(arrays), "T" + axes


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(inputs: Sequence[str | Path] | str | Path) -> list[Path]:
    """Expand files and folders into a list of image files.

    Parameters
    ----------
    inputs : sequence of str or Path (or a single one)
        Files are kept as given (any suffix). Folders expand to the files directly inside
        them (not recursive) with a suffix in :data:`IMAGE_SUFFIXES` (case-insensitive),
        hidden files skipped, in natural name order (``img2`` before ``img10``; the same
        as plain sorting for zero-padded names).

    Returns
    -------
    list of Path
        Image files in order.

    Raises
    ------
    FileNotFoundError
        If an input does not exist.
    ValueError
        If nothing was found.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = [
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            ]
            found.extend(sorted(files, key=_natural_key))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"No such file or folder: {path}")
    if not found:
        names = ", ".join(str(p) for p in inputs) or "(no inputs)"
        raise ValueError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) found in: {names}")
    return found


def read_folder_as_stack(folder: str | Path) -> np.ndarray:
    """Read the images of one folder (see :func:`list_images`) as ``(T, H, W[, C])``.

    Raises
    ------
    ValueError
        If the folder holds no images or the frames differ in shape (names the odd file).
    """
    stack, channel_axis = read_folder_channels(folder)
    _refuse_channel_axis(stack.shape, channel_axis, f"The images in {folder}")
    return stack


def read_folder_channels(
    folder: str | Path, palette_indices: bool = False
) -> tuple[np.ndarray, int | None]:
    """:func:`read_folder_as_stack` for images that may hold channels: the
    ``(T, ...)`` stack and its channel axis (None when the frames have none; see
    :func:`read_image_channels`, which also says what ``palette_indices`` does)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"Not a folder: {folder}")
    files = list_images([folder])
    first, axis = read_image_channels(files[0], palette_indices)
    frames = [first]
    for file in files[1:]:
        frame, frame_axis = read_image_channels(file, palette_indices)
        if frame.shape != first.shape or frame_axis != axis:
            raise ValueError(
                f"All frames in {folder} must have one shape: {file.name} has {frame.shape}, "
                f"{files[0].name} has {first.shape}"
            )
        frames.append(frame)
    return np.stack(frames), None if axis is None else axis + 1


def write_tiff(
    path: str | Path,
    array: np.ndarray,
    compression: str | None = "zlib",
    metadata: dict | None = None,
    pixel_size: tuple[float, float] | None = None,
) -> None:
    """Write ``array`` as a TIFF atomically (temp file + ``os.replace``), creating folders.

    Parameters
    ----------
    path : str or Path
        Output file.
    array : np.ndarray
        Data to write, stored as given.
    compression : str or None, optional
        tifffile compression (``"zlib"``, ``"lzw"``, ``None``...).
    metadata : dict, optional
        JSON-ready entries stored in the ``ImageDescription`` beside tifffile's shape
        (segloop writes its provenance here).
    pixel_size : (float, float), optional
        Micrometres per pixel (y, x), stored as resolution tags in centimetres, which
        tifffile, Fiji and segloop read back.
    """
    array = np.asarray(array)
    # stacks (T, H, W) and class probabilities (C, H, W) are pages of grey values, not RGB
    photometric = "rgb" if _has_channels(array.shape) else "minisblack"
    options: dict = {"compression": compression, "photometric": photometric}
    if metadata:
        options["metadata"] = dict(metadata)
    if pixel_size is not None:
        options.update(
            resolution=(1e4 / pixel_size[1], 1e4 / pixel_size[0]), resolutionunit="CENTIMETER"
        )
    with atomic_output(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, array, **options)
