"""Data augmentation for training samples: dihedral, elastic, intensity, noise, random crop.

A sample is an image ``(C, H, W)`` float32 (normalised, roughly 0..1), a target ``(H, W)``
int64 of class ids where ``-1`` means *ignore*, and an optional per-pixel weight map
``(H, W)`` float32. Geometric transforms are applied identically to all three; intensity
transforms and noise only to the image.

The elastic deformation follows the U-Net paper (Ronneberger et al., 2015): random
displacement vectors on a coarse ``grid x grid`` grid are drawn from a Gaussian with
``elastic_sigma`` pixels standard deviation and upsampled to per-pixel displacements with
cubic (spline) interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["AugmentConfig", "augment_sample", "random_crop"]

GAIN_RANGE = (0.8, 1.25)
OFFSET_RANGE = (-0.1, 0.1)
GAMMA_RANGE = (0.8, 1.25)
NOISE_STD_MAX = 0.05


@dataclass
class AugmentConfig:
    """Which augmentations to apply and how strongly.

    Attributes
    ----------
    flips : bool
        Random horizontal and vertical flips.
    rot90 : bool
        Random rotation by a multiple of 90 degrees (only 0 or 180 for non-square inputs,
        so that the shape is kept).
    elastic : bool
        Random elastic deformation (U-Net style).
    elastic_grid : int
        Size of the coarse displacement grid (``grid x grid`` control points, >= 2).
    elastic_sigma : float
        Standard deviation, in pixels, of the displacement vectors on the coarse grid.
    elastic_probability : float
        Probability of applying the elastic deformation to a sample.
    intensity : bool
        Random gamma (log-uniform in [0.8, 1.25], applied to the positive part), gain
        (log-uniform in [0.8, 1.25]) and offset (uniform in [-0.1, 0.1]), shared by all
        channels.
    noise : bool
        Additive Gaussian noise whose std is drawn uniformly in [0, 0.05].
    scale_range : tuple of float
        Zoom factors ``(low, high)``: each crop is taken ``1/s`` times the training size
        and resized to it, ``s`` log-uniform in the range (applied by the batch builder;
        ``(1, 1)`` = off). Teaches objects of other sizes than the training median.
    blur_probability : float
        Probability of a Gaussian defocus blur, sigma uniform in [0.5, 2] pixels.
    invert_probability : float
        Probability of inverting the normalised image (``1 - x``): dark objects on a
        bright background, as in brightfield or the other phase-contrast polarity.
    poisson_probability : float
        Probability of Poisson shot noise at a peak of 10 to 1,000 photons (log-uniform)
        for a normalised intensity of 1, before the Gaussian read noise.

    The last four are the "shift" augmentations (what differs between labs and
    microscopes); all are off by default, so older recipes train exactly as before.
    """

    flips: bool = True
    rot90: bool = True
    elastic: bool = True
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    elastic_probability: float = 0.5
    intensity: bool = True
    noise: bool = True
    scale_range: tuple[float, float] = (1.0, 1.0)
    blur_probability: float = 0.0
    invert_probability: float = 0.0
    poisson_probability: float = 0.0

    def __post_init__(self) -> None:
        low, high = (float(v) for v in self.scale_range)
        if not (0 < low <= high):
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        self.scale_range = (low, high)
        for name in ("blur_probability", "invert_probability", "poisson_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all: no flips, rotations, elastic, intensity or noise."""
        return cls(flips=False, rot90=False, elastic=False, intensity=False, noise=False)

    @classmethod
    def shift(cls) -> AugmentConfig:
        """The defaults plus the shift augmentations used for the shipped models that
        must hold up on other labs' images (zoom 0.6-1.6x, blur, inversion, shot noise)."""
        return cls(
            scale_range=(0.6, 1.6),
            blur_probability=0.25,
            invert_probability=0.2,
            poisson_probability=0.25,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the settings."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Build a config from a dict; unknown keys are ignored, missing keys get defaults."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue
            default = getattr(cls, key)
            kwargs[key] = (
                tuple(float(v) for v in value)
                if isinstance(default, tuple)
                else (type(default)(value))
            )
        return cls(**kwargs)


def _apply_dihedral(arr: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``k * 90`` degrees, then optionally flip left-right.

    Parameters
    ----------
    arr : np.ndarray
        Array whose last two axes are (H, W).
    k : int
        Number of counter-clockwise quarter turns (as in ``np.rot90``).
    flip : bool
        If True, mirror the last axis after the rotation.

    Returns
    -------
    np.ndarray
        A view (not necessarily contiguous) of the transformed array.
    """
    out = np.rot90(arr, k=k % 4, axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return out


def _sample_dihedral(
    shape: tuple[int, int], rng: np.random.Generator, config: AugmentConfig
) -> tuple[int, bool]:
    """Draw ``(k, flip)`` for :func:`_apply_dihedral` according to ``config``.

    With ``flips`` alone the result is one of identity, horizontal flip, vertical flip or
    180 degree rotation; with ``rot90`` on square inputs all 8 dihedral elements occur.
    """
    k, flip = 0, False
    if config.rot90:
        k = int(rng.integers(4)) if shape[0] == shape[1] else 2 * int(rng.integers(2))
    if config.flips:
        flip = bool(rng.integers(2))
        k = (k + 2 * int(rng.integers(2))) % 4  # rot180 + hflip == vflip
    return k, flip


def _cubic_upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Matrix ``(n_out, n_in)`` of 1-D cubic-spline interpolation, corner-aligned.

    Row ``i`` holds the weights giving the spline value at ``linspace(0, n_in - 1, n_out)[i]``.
    """
    x = np.linspace(0.0, n_in - 1.0, n_out)[None, :]
    cols = [
        ndimage.map_coordinates(e, x, order=3, mode="mirror")
        for e in np.eye(n_in, dtype=np.float64)
    ]
    return np.stack(cols, axis=1)


def _elastic_displacement(
    shape: tuple[int, int], grid: int, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Dense displacement field ``(2, H, W)`` from a coarse Gaussian grid.

    The coarse ``(grid, grid)`` fields (one per axis, N(0, sigma) pixels) are upsampled
    with separable cubic-spline interpolation whose control points sit at the image corners,
    edges and (for odd ``grid``) centre.
    """
    if grid < 2:
        raise ValueError(f"elastic_grid must be >= 2, got {grid}")
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    a_h = _cubic_upsample_matrix(grid, shape[0])
    a_w = _cubic_upsample_matrix(grid, shape[1])
    return a_h @ coarse @ a_w.T


def _elastic_warp(
    image: np.ndarray, target: np.ndarray, weight: np.ndarray | None, disp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Resample image (cubic), target (nearest) and weight (linear) at ``grid + disp``.

    Sources outside the image are mirrored (``mode="reflect"``) for all three arrays, like
    the U-Net paper's mirroring; the nearest-neighbour target never gets new values and
    keeps ``-1`` (ignore) pixels unblended.
    """
    h, w = target.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = np.stack([rows + disp[0], cols + disp[1]]).astype(np.float32)
    img = np.empty_like(image)
    for c in range(image.shape[0]):
        ndimage.map_coordinates(image[c], coords, output=img[c], order=3, mode="reflect")
    tgt = ndimage.map_coordinates(target, coords, output=target.dtype, order=0, mode="reflect")
    wgt = None
    if weight is not None:
        wgt = np.stack(
            [
                ndimage.map_coordinates(plane, coords, output=weight.dtype, order=1, mode="reflect")
                for plane in weight.reshape(-1, h, w)
            ]
        ).reshape(weight.shape)
    return img, tgt, wgt


def _intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma on the positive part, then gain and offset (same for all channels).

    ``out = (clip(x, 0) ** gamma + min(x, 0)) * gain + offset``; negative values pass
    through the gamma step unchanged so the map is continuous and monotonic.
    """
    gamma = float(np.exp(rng.uniform(*np.log(GAMMA_RANGE))))
    gain = float(np.exp(rng.uniform(*np.log(GAIN_RANGE))))
    offset = float(rng.uniform(*OFFSET_RANGE))
    out = np.power(np.clip(image, 0.0, None), gamma) + np.minimum(image, 0.0)
    return (out * gain + offset).astype(image.dtype, copy=False)


def _noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise with a std drawn uniformly in ``[0, NOISE_STD_MAX]``."""
    std = float(rng.uniform(0.0, NOISE_STD_MAX))
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    return (image + noise).astype(image.dtype, copy=False)


def _blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian defocus blur of each channel, sigma uniform in [0.5, 2] pixels."""
    sigma = float(rng.uniform(0.5, 2.0))
    return np.stack([ndimage.gaussian_filter(plane, sigma, mode="reflect") for plane in image])


def _shot_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise at a random photon peak (10-1,000 photons for intensity 1)."""
    peak = float(np.exp(rng.uniform(np.log(10.0), np.log(1000.0))))
    counts = rng.poisson(np.clip(image, 0.0, None) * peak).astype(np.float32)
    return (counts / np.float32(peak) + np.minimum(image, 0.0)).astype(image.dtype, copy=False)


def augment_sample(
    image: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Randomly augment one training sample.

    Parameters
    ----------
    image : np.ndarray
        Float32 ``(C, H, W)`` normalised image.
    target : np.ndarray
        Integer ``(H, W)`` class ids, ``-1`` = ignore.
    weight : np.ndarray or None
        Float32 ``(H, W)`` per-pixel loss weights, or ``(K, H, W)`` float maps that move
        with the target (loss weights, regression targets), or None.
    rng : np.random.Generator
        Source of randomness; the same seed and config give identical outputs.
    config : AugmentConfig
        Which augmentations to apply.

    Returns
    -------
    tuple
        ``(image, target, weight)``: new C-contiguous arrays with the input shapes and
        dtypes (``weight`` is None if it was None).

    Notes
    -----
    Order: dihedral (exact, no interpolation; odd quarter turns only for square inputs),
    elastic (with probability ``elastic_probability``), blur, inversion, intensity, shot
    noise, Gaussian noise (each shift augmentation with its probability; a disabled one
    draws no random numbers, so older configs give the same samples as before). Elastic uses
    cubic interpolation for the image, nearest neighbour for the target and linear for the
    weight, all with mirrored (``"reflect"``) borders.
    """
    if image.ndim != 3 or target.shape != image.shape[1:]:
        raise ValueError(
            f"expected image (C,H,W) and target (H,W), got {image.shape}, {target.shape}"
        )
    if weight is not None and weight.shape[-2:] != target.shape:
        raise ValueError(f"weight shape {weight.shape} != target shape {target.shape}")
    shape = (int(target.shape[0]), int(target.shape[1]))

    k, flip = _sample_dihedral(shape, rng, config)
    img = _apply_dihedral(image, k, flip)
    tgt = _apply_dihedral(target, k, flip)
    wgt = None if weight is None else _apply_dihedral(weight, k, flip)

    if config.elastic and config.elastic_sigma > 0 and rng.random() < config.elastic_probability:
        disp = _elastic_displacement(shape, config.elastic_grid, config.elastic_sigma, rng)
        img, tgt, wgt = _elastic_warp(np.ascontiguousarray(img), tgt, wgt, disp)

    if config.blur_probability and rng.random() < config.blur_probability:
        img = _blur(np.asarray(img, dtype=np.float32), rng).astype(image.dtype, copy=False)
    if config.invert_probability and rng.random() < config.invert_probability:
        img = (1.0 - img).astype(image.dtype, copy=False)
    if config.intensity:
        img = _intensity(img, rng)
    if config.poisson_probability and rng.random() < config.poisson_probability:
        img = _shot_noise(img, rng)
    if config.noise:
        img = _noise(img, rng)

    img = np.array(img, dtype=image.dtype, order="C")
    tgt = np.array(tgt, dtype=target.dtype, order="C")
    if wgt is not None:
        wgt = np.array(wgt, dtype=weight.dtype, order="C")
    return img, tgt, wgt


def _pad_to(arr: np.ndarray, min_shape: tuple[int, int], pad_mode: str) -> np.ndarray:
    """Pad the last two axes (centred) so they are at least ``min_shape``.

    Signed-integer arrays (targets) are padded with ``-1`` (ignore); floating arrays with
    ``ndim >= 3`` (images) with ``pad_mode``; anything else (e.g. 2-D weights) with 0.
    """
    extra = [max(0, m - s) for m, s in zip(min_shape, arr.shape[-2:], strict=True)]
    if not any(extra):
        return arr
    widths = [(0, 0)] * (arr.ndim - 2) + [(e // 2, e - e // 2) for e in extra]
    if np.issubdtype(arr.dtype, np.signedinteger):
        return np.pad(arr, widths, mode="constant", constant_values=-1)
    if np.issubdtype(arr.dtype, np.floating) and arr.ndim >= 3:
        return np.pad(arr, widths, mode=pad_mode)
    return np.pad(arr, widths, mode="constant", constant_values=0)


def _start_around(
    position: int, size: int, total: int, margin: int, rng: np.random.Generator
) -> int:
    """A random window start so that ``position`` lies ``margin`` inside the window."""
    low = max(0, position - size + 1 + margin)
    high = min(total - size, position - margin)
    return int(rng.integers(low, high + 1)) if low <= high else int(np.clip(low, 0, total - size))


def random_crop(
    arrays: Sequence[np.ndarray],
    crop_shape: tuple[int, int],
    rng: np.random.Generator,
    pad_mode: str = "reflect",
    centre: tuple[int, int] | None = None,
    margin: int = 0,
) -> list[np.ndarray]:
    """Take the same random crop (last two axes) from each array.

    Parameters
    ----------
    arrays : sequence of np.ndarray
        Arrays sharing the same last two axes (H, W), e.g. image (C, H, W), target (H, W),
        weight (H, W).
    crop_shape : tuple of int
        ``(h, w)`` of the crop.
    rng : np.random.Generator
        Source of randomness for the crop position.
    pad_mode : str
        ``np.pad`` mode for floating arrays with ``ndim >= 3`` (images).
    centre : tuple of int, optional
        A pixel ``(y, x)`` the crop must contain, at least ``margin`` pixels inside its
        border (for valid-convolution networks, inside the part the loss sees); the crop
        is drawn at random among those positions.
    margin : int
        See ``centre``.

    Returns
    -------
    list of np.ndarray
        C-contiguous crops whose last two axes are exactly ``crop_shape``.

    Notes
    -----
    Arrays smaller than the crop are first padded symmetrically: signed-integer arrays
    (targets) with ``-1`` so padding is ignored by the loss, floating arrays with
    ``ndim >= 3`` (images) with ``pad_mode``, other arrays (e.g. weights) with 0.
    """
    if not arrays:
        return []
    spatial = {tuple(a.shape[-2:]) for a in arrays}
    if len(spatial) != 1:
        raise ValueError(f"arrays have different spatial shapes: {sorted(spatial)}")
    ch, cw = int(crop_shape[0]), int(crop_shape[1])
    padded = [_pad_to(a, (ch, cw), pad_mode) for a in arrays]
    h, w = padded[0].shape[-2:]
    if centre is None:
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
    else:
        shift = [max(0, m - s) // 2 for m, s in zip((ch, cw), arrays[0].shape[-2:], strict=True)]
        y0 = _start_around(centre[0] + shift[0], ch, h, margin, rng)
        x0 = _start_around(centre[1] + shift[1], cw, w, margin, rng)
    return [np.ascontiguousarray(a[..., y0 : y0 + ch, x0 : x0 + cw]) for a in padded]
