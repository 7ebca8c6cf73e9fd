"""Reading, writing, checking and preparing microscopy images.

Axis rule used throughout segloop (see :func:`image_axes`): an array with ``ndim >= 3``
whose last axis has size 3 or 4 is RGB/RGBA (``YXC`` or ``TYXC``); any other 3D array
is a stack of frames ``TYX``. A ``(3, H, W)`` array is therefore read as 3 frames, not
as 3 channels.
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

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601
MIN_SIDE = 8
INVERT_MODES = ("never", "auto", "always")


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


def _pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
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
    if channel_axis is not None and image.ndim - (channel_axis % image.ndim) != 1:
        raise ImageReadError(
            f"{path} has {image.shape[channel_axis]} channels (shape {image.shape}, the "
            f"channels on axis {channel_axis}); segloop segments one grey or RGB image: "
            "open it in napari (which splits the channels into layers) and pick one, or "
            "save the channel to segment as its own file"
        )
    return image


def read_image_channels(path: str | Path) -> tuple[np.ndarray, int | None]:
    """Read one image file (see :func:`read_image`) and find its channel axis.

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
            image = _pil_to_array(img)
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
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"Not a folder: {folder}")
    stack, channel_axis = read_folder_channels(folder)
    if channel_axis is not None and channel_axis != stack.ndim - 1:
        raise ImageReadError(
            f"The images in {folder} have {stack.shape[channel_axis]} channels (one frame "
            f"is {stack.shape[1:]}); segloop segments one grey or RGB image: save the "
            "channel to segment as its own files"
        )
    return stack


def read_folder_channels(folder: str | Path) -> tuple[np.ndarray, int | None]:
    """:func:`read_folder_as_stack` for images that may hold channels: the
    ``(T, ...)`` stack and its channel axis (None when the frames have none; see
    :func:`read_image_channels`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"Not a folder: {folder}")
    files = list_images([folder])
    first, axis = read_image_channels(files[0])
    frames = [first]
    for file in files[1:]:
        frame, frame_axis = read_image_channels(file)
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


def trailing_channel_axis(shape: tuple[int, ...]) -> int | None:
    """The last axis when it holds a few non-colour channels: 2, or 5 to ``MIN_SIDE - 1``
    values after two axes of at least ``MIN_SIDE`` (no image is 2 pixels wide)."""
    if len(shape) < 3 or shape[-1] in (3, 4) or shape[-1] >= MIN_SIDE or shape[-1] < 2:
        return None
    return len(shape) - 1 if min(shape[-3:-1]) >= MIN_SIDE else None


def _has_channels(shape: tuple[int, ...], channel_axis: int = -1) -> bool:
    return len(shape) >= 3 and shape[channel_axis] in (3, 4)


def image_axes(image: np.ndarray) -> str:
    """Axes of an image by the segloop rule.

    ``ndim >= 3`` and last axis of size 3 or 4 -> channels (``YXC`` / ``TYXC``); any other
    3D array -> ``TYX``; 2D -> ``YX``. Note that ``(3, H, W)`` is read as 3 frames, not
    as channels.

    Returns
    -------
    str
        ``"YX"``, ``"YXC"``, ``"TYX"`` or ``"TYXC"``.

    Raises
    ------
    ValueError
        For other dimensionalities (e.g. 4D without a colour axis).
    """
    shape = tuple(np.shape(image))
    channels = _has_channels(shape)
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXC" if channels else "TYX"
    if len(shape) == 4 and channels:
        return "TYXC"
    raise ValueError(
        f"Unsupported image shape {shape}: expected (H, W), (H, W, 3|4), (T, H, W) "
        "or (T, H, W, 3|4)"
    )


def to_grayscale(image: np.ndarray, channel_axis: int | None = -1) -> np.ndarray:
    """Convert to a single-channel float32 image.

    Rule: if ``ndim >= 3`` and the channel axis has size 3 or 4, the image is RGB/RGBA:
    alpha is dropped and RGB is combined with ITU-R BT.601 luma weights
    (0.299, 0.587, 0.114), except when the three channels are identical, where one channel
    is taken (exact). Any other array is returned as float32, unchanged.

    Parameters
    ----------
    image : np.ndarray
        Input image.
    channel_axis : int or None, optional
        Axis holding colour channels; ``None`` means no colour axis.

    Returns
    -------
    np.ndarray
        float32 image without a channel axis.
    """
    image = np.asarray(image)
    if channel_axis is None or not _has_channels(image.shape, channel_axis):
        return image.astype(np.float32)
    rgb = np.moveaxis(image, channel_axis, -1)[..., :3]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r.astype(np.float32)
    return rgb.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)


def _normalize_frame(frame: np.ndarray, low: float, high: float, eps: float) -> np.ndarray:
    frame = frame.astype(np.float32, copy=False)
    p_low, p_high = np.percentile(frame, [low, high])
    span = float(p_high - p_low)
    if span <= eps:  # sparse image: the percentiles coincide; fall back to min/max
        p_low, span = float(frame.min()), float(frame.max() - frame.min())
    if span <= eps:
        return np.zeros(frame.shape, dtype=np.float32)
    return ((frame - np.float32(p_low)) / np.float32(span)).astype(np.float32, copy=False)


def normalize_percentile(
    image: np.ndarray, low: float = 1.0, high: float = 99.8, eps: float = 1e-6
) -> np.ndarray:
    """Percentile normalisation ``(x - p_low) / (p_high - p_low)``, not clipped.

    Values below ``p_low`` become negative and above ``p_high`` exceed 1. Percentiles are
    computed over the whole 2D image, per frame for ``(T, H, W)``. If the percentiles
    coincide (sparse images) the minimum and maximum are used instead; a constant image
    gives zeros, never NaN.

    Parameters
    ----------
    image : np.ndarray
        Single-channel ``(H, W)`` or ``(T, H, W)`` image.
    low, high : float, optional
        Percentiles in [0, 100].
    eps : float, optional
        Smallest intensity span treated as non-constant.

    Returns
    -------
    np.ndarray
        float32 image of the input shape.
    """
    image = np.asarray(image)
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    if image.ndim == 2:
        return _normalize_frame(image, low, high, eps)
    if image.ndim == 3:
        return np.stack([_normalize_frame(frame, low, high, eps) for frame in image])
    raise ValueError(f"normalize_percentile expects (H, W) or (T, H, W), got {image.shape}")


def validate_image(image: np.ndarray, name: str = "image") -> None:
    """Check that an array is a usable image; raise ``ValueError`` with a clear message.

    Checks: numeric (integer, unsigned, float or bool) dtype; non-empty; a shape accepted
    by :func:`image_axes`; at least 8x8 pixels; no NaN or infinity.
    """
    image = np.asarray(image)
    kind = image.dtype.kind
    if kind not in "biuf":
        raise ValueError(f"{name} has non-numeric dtype {image.dtype}; expected numbers")
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    try:
        axes = image_axes(image)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if axes == "TYX" and image.shape[-1] < MIN_SIDE and min(image.shape[:2]) >= MIN_SIDE:
        raise ValueError(
            f"{name} has shape {image.shape}: {image.shape[-1]} channels in the last axis; "
            "segloop reads grayscale, RGB or RGBA images (save one channel, or 3 as RGB)"
        )
    height, width = image.shape[axes.index("Y")], image.shape[axes.index("X")]
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(
            f"{name} is too small: {height}x{width} pixels (axes {axes}, shape {image.shape});"
            f" need at least {MIN_SIDE}x{MIN_SIDE}"
        )
    if kind == "f" and not np.isfinite(image).all():
        n_bad = int(np.count_nonzero(~np.isfinite(image)))
        raise ValueError(f"{name} contains {n_bad} NaN or infinite values")


def prepare_image(
    image: np.ndarray,
    invert: str = "never",
    low: float = 1.0,
    high: float = 99.8,
    name: str = "image",
) -> np.ndarray:
    """Validate, convert to grayscale and normalise an image for the network.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)``, ``(H, W, 3|4)``, ``(T, H, W)`` or ``(T, H, W, 3|4)``.
    invert : {"never", "auto", "always"}, optional
        ``"auto"`` flips a normalised frame (``1 - x``) when its median is above 0.5, i.e.
        a bright background (brightfield/H&E), so that nuclei are bright as in
        fluorescence; decided per frame. ``"always"`` flips every frame.
    low, high : float, optional
        Percentiles mapped to 0 and 1.
    name : str, optional
        What error messages call the image (a file name).

    Returns
    -------
    np.ndarray
        float32 ``(H, W)`` or ``(T, H, W)``, normalised per frame
        (:func:`normalize_percentile`).
    """
    if invert not in INVERT_MODES:
        raise ValueError(f"invert must be one of {INVERT_MODES}, got {invert!r}")
    validate_image(image, name)
    gray = normalize_percentile(to_grayscale(image), low=low, high=high)
    frames = gray[np.newaxis] if gray.ndim == 2 else gray
    for i, frame in enumerate(frames):
        if invert == "always" or (invert == "auto" and np.median(frame) > 0.5):
            frames[i] = 1.0 - frame
    return gray
