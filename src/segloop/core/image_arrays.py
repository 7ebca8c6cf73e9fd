"""Checking and preparing image arrays (no files): the axis rule, grey conversion,
percentile normalisation and the checks every image passes.

Axis rule used throughout segloop (see :func:`image_axes`): an array with ``ndim >= 3``
whose last axis has size 3 or 4 is RGB/RGBA (``YXC`` or ``TYXC``); any other 3D array
is a stack of frames ``TYX``. A ``(3, H, W)`` array is therefore read as 3 frames, not
as 3 channels. :mod:`segloop.core.imageio` re-exports these names.
"""

from __future__ import annotations

import numpy as np

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601
MIN_SIDE = 8
INVERT_MODES = ("never", "auto", "always")
#: How colour images become the network's one grey channel (``preprocess.colour``):
#: BT.601 luma, or the hematoxylin channel of a colour deconvolution (H&E: nuclei bright)
COLOUR_MODES = ("luma", "hematoxylin")


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


def to_grayscale(
    image: np.ndarray, channel_axis: int | None = -1, colour: str = "luma"
) -> np.ndarray:
    """Convert to a single-channel float32 image.

    Rule: if ``ndim >= 3`` and the channel axis has size 3 or 4, the image is RGB/RGBA:
    alpha is dropped and RGB is combined with ITU-R BT.601 luma weights
    (0.299, 0.587, 0.114), or with ``colour="hematoxylin"`` becomes the hematoxylin
    channel of the Ruifrok-Johnston colour deconvolution (``skimage.color.rgb2hed``:
    optical density of the nuclear stain, so nuclei are bright); with luma, when the three
    channels are identical, one channel is taken (exact). Any other array is returned as
    float32, unchanged.

    Parameters
    ----------
    image : np.ndarray
        Input image.
    channel_axis : int or None, optional
        Axis holding colour channels; ``None`` means no colour axis.
    colour : {"luma", "hematoxylin"}, optional
        How colour channels are combined (:data:`COLOUR_MODES`).

    Returns
    -------
    np.ndarray
        float32 image without a channel axis.
    """
    if colour not in COLOUR_MODES:
        raise ValueError(f"colour must be one of {COLOUR_MODES}, got {colour!r}")
    image = np.asarray(image)
    if channel_axis is None or not _has_channels(image.shape, channel_axis):
        return image.astype(np.float32)
    rgb = np.moveaxis(image, channel_axis, -1)[..., :3]
    if colour == "hematoxylin":
        return hematoxylin_channel(rgb)
    if channels_identical(rgb):
        return rgb[..., 0].astype(np.float32)
    return rgb.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)


def channels_identical(rgb: np.ndarray) -> bool:
    """Whether the three colour channels of an ``(..., 3|4)`` array are all the same
    (a grey image stored as RGB)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return bool(np.array_equal(r, g) and np.array_equal(r, b))


def hematoxylin_channel(rgb: np.ndarray) -> np.ndarray:
    """The hematoxylin optical density of an ``(..., 3)`` RGB array, float32.

    Integer images are scaled by their type's maximum; float images are taken as 0-1,
    or as 8-bit values when any value exceeds 1 (then divided by 255; above 255 is
    clipped).
    """
    from skimage.color import rgb2hed

    if rgb.dtype.kind in "ui":
        unit = rgb.astype(np.float32) / np.float32(np.iinfo(rgb.dtype).max)
    else:
        unit = rgb.astype(np.float32)
        if unit.size and float(unit.max()) > 1.0:
            unit = unit / np.float32(255.0)
    return rgb2hed(np.clip(unit, 0.0, 1.0))[..., 0].astype(np.float32)


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
    colour: str = "luma",
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
    colour : {"luma", "hematoxylin"}, optional
        How an RGB image becomes grey (:func:`to_grayscale`).

    Returns
    -------
    np.ndarray
        float32 ``(H, W)`` or ``(T, H, W)``, normalised per frame
        (:func:`normalize_percentile`).
    """
    if invert not in INVERT_MODES:
        raise ValueError(f"invert must be one of {INVERT_MODES}, got {invert!r}")
    validate_image(image, name)
    gray = normalize_percentile(to_grayscale(image, colour=colour), low=low, high=high)
    frames = gray[np.newaxis] if gray.ndim == 2 else gray
    for i, frame in enumerate(frames):
        if invert == "always" or (invert == "auto" and np.median(frame) > 0.5):
            frames[i] = 1.0 - frame
    return gray
