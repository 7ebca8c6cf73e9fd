"""Tests for segloop.core.imageio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.draw import disk

from segloop.core.imageio import (
    IMAGE_SUFFIXES,
    ImageReadError,
    image_axes,
    list_images,
    normalize_percentile,
    prepare_image,
    read_folder_as_stack,
    read_image,
    to_grayscale,
    validate_image,
    write_tiff,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RNG = np.random.default_rng(0)


def test_png_round_trips(tmp_path: Path) -> None:
    u8 = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    u16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for name, array in (("u8.png", u8), ("u16.png", u16), ("rgb.png", rgb)):
        Image.fromarray(array).save(tmp_path / name)
        back = read_image(tmp_path / name)
        assert back.dtype == array.dtype, name
        np.testing.assert_array_equal(back, array)


def test_tiff_round_trips(tmp_path: Path) -> None:
    stack = RNG.integers(0, 4000, (3, 16, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif"), stack)
    tifffile.imwrite(tmp_path / "lzw.tiff", stack[0], compression="lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tiff"), stack[0])
    out = tmp_path / "new" / "dir" / "out.tif"
    write_tiff(out, stack)
    np.testing.assert_array_equal(read_image(out), stack)
    assert [p.name for p in out.parent.iterdir()] == ["out.tif"]  # no temp file left
    write_tiff(out, stack[0] + 1, compression=None)  # overwrite in place
    np.testing.assert_array_equal(read_image(out), stack[0] + 1)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError, match="corrupt.png"):
        read_image(bad)
    bad_tif = tmp_path / "corrupt.tif"
    bad_tif.write_bytes(b"not a tiff at all")
    with pytest.raises(ImageReadError, match="corrupt.tif"):
        read_image(bad_tif)
    assert issubclass(ImageReadError, ValueError)


def test_list_images_and_stack(tmp_path: Path) -> None:
    frames = RNG.integers(0, 256, (3, 10, 12), dtype=np.uint8)
    for i, name in enumerate(["f2.png", "f10.png", "f1.png"]):
        Image.fromarray(frames[i]).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    listed = list_images([tmp_path])
    assert [p.name for p in listed] == ["f1.png", "f2.png", "f10.png"]
    assert list_images([tmp_path / "notes.txt"]) == [tmp_path / "notes.txt"]
    assert list_images(tmp_path / "f1.png") == [tmp_path / "f1.png"]
    stack = read_folder_as_stack(tmp_path)
    assert stack.shape == (3, 10, 12)
    np.testing.assert_array_equal(stack[0], frames[2])
    with pytest.raises(ValueError, match="sub"):
        list_images([tmp_path / "sub"])
    with pytest.raises(FileNotFoundError):
        list_images([tmp_path / "nope"])
    Image.fromarray(frames[0][:5]).save(tmp_path / "f3.png")
    with pytest.raises(ValueError, match="f3.png"):
        read_folder_as_stack(tmp_path)
    assert ".tif" in IMAGE_SUFFIXES


def test_grayscale() -> None:
    gray = RNG.integers(0, 256, (9, 9), dtype=np.uint8)
    rgb = np.stack([gray] * 3, axis=-1)
    out = to_grayscale(rgb)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, gray.astype(np.float32))
    rgba = np.zeros((9, 9, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 100, 255
    np.testing.assert_allclose(to_grayscale(rgba), 29.9, rtol=1e-6)
    stack = RNG.random((2, 9, 9)).astype(np.float64)
    assert to_grayscale(stack).shape == (2, 9, 9)  # TYX: unchanged
    np.testing.assert_allclose(to_grayscale(np.moveaxis(rgba, -1, 0), channel_axis=0), 29.9)


def test_normalize_percentile() -> None:
    ramp = np.tile(np.arange(101, dtype=np.float64), (10, 1))
    out = normalize_percentile(ramp, low=0, high=100)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], np.arange(101) / 100, atol=1e-6)
    out = normalize_percentile(ramp, low=10, high=90)
    assert out.min() == pytest.approx(-0.125) and out.max() == pytest.approx(1.125)  # no clip
    const = normalize_percentile(np.full((2, 10, 10), 7.0))
    assert const.shape == (2, 10, 10) and not np.isnan(const).any() and not const.any()
    stack = np.stack([ramp, ramp * 10 + 5])  # per-frame normalisation
    out = normalize_percentile(stack, 0, 100)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    sparse = np.zeros((50, 50))
    sparse[3, 3] = 9.0  # p1 == p99.8: falls back to min/max
    assert normalize_percentile(sparse).max() == pytest.approx(1.0)


def test_validate_image() -> None:
    validate_image(np.zeros((8, 8), dtype=np.uint8))
    validate_image(np.zeros((2, 8, 8, 3)))
    nan = np.zeros((10, 10))
    nan[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        validate_image(nan)
    with pytest.raises(ValueError, match="empty"):
        validate_image(np.zeros((0, 10)))
    with pytest.raises(ValueError, match="too small"):
        validate_image(np.zeros((4, 10)))
    with pytest.raises(ValueError, match="non-numeric"):
        validate_image(np.full((10, 10), "a"))
    with pytest.raises(ValueError, match="Unsupported"):
        validate_image(np.zeros((2, 2, 10, 10)))
    with pytest.raises(ValueError, match="raw"):
        validate_image(np.zeros(10), name="raw")


def test_image_axes() -> None:
    assert image_axes(np.zeros((10, 12))) == "YX"
    assert image_axes(np.zeros((10, 12, 3))) == "YXC"
    assert image_axes(np.zeros((10, 12, 4))) == "YXC"
    assert image_axes(np.zeros((3, 10, 12))) == "TYX"  # three frames, not channels
    assert image_axes(np.zeros((5, 10, 12))) == "TYX"
    assert image_axes(np.zeros((5, 10, 12, 3))) == "TYXC"
    with pytest.raises(ValueError):
        image_axes(np.zeros((5, 10, 12, 2)))


def _nuclei(bright_background: bool) -> np.ndarray:
    image = np.full((64, 64), 0.1)
    for centre in [(16, 16), (40, 44), (20, 48)]:
        image[disk(centre, 8)] = 0.9
    image += RNG.normal(0, 0.01, image.shape)
    return 1.0 - image if bright_background else image


def test_prepare_image_invert() -> None:
    dark, bright = _nuclei(False), _nuclei(True)
    out_dark = prepare_image(dark, invert="auto")
    out_bright = prepare_image(bright, invert="auto")
    assert out_dark.dtype == np.float32 and out_dark.shape == (64, 64)
    assert out_dark[16, 16] > 0.8 and out_dark[0, 0] < 0.2  # not flipped
    assert out_bright[16, 16] > 0.8 and out_bright[0, 0] < 0.2  # flipped: nuclei bright
    assert prepare_image(bright, invert="never")[16, 16] < 0.2
    assert prepare_image(dark, invert="always")[16, 16] < 0.2
    rgb = (np.stack([bright] * 3, axis=-1) * 255).astype(np.uint8)
    stack = prepare_image(
        np.stack([rgb, (np.stack([dark] * 3, -1) * 255).astype(np.uint8)]), "auto"
    )
    assert stack.shape == (2, 64, 64)
    assert stack[0, 16, 16] > 0.8 and stack[1, 16, 16] > 0.8  # decided per frame
    with pytest.raises(ValueError, match="invert"):
        prepare_image(dark, invert="sometimes")


@pytest.mark.shared_data
def test_read_real_lzw_tiff() -> None:
    path = DATA / "ctc_dic_c2dh_hela" / "ctc_layout" / "01" / "t000.tif"
    if not path.is_file():
        pytest.skip("shared data not available")
    image = read_image(path)
    assert image.shape == (512, 512) and image.dtype == np.uint8
    assert prepare_image(image).shape == (512, 512)


def test_channels_are_found_and_never_read_as_frames(tmp_path: Path) -> None:
    from segloop.core.imageio import read_image_channels, trailing_channel_axis

    hyperstack = np.zeros((4, 2, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "tcyx.tif", hyperstack, imagej=True, metadata={"axes": "TCYX"})
    image, axis = read_image_channels(tmp_path / "tcyx.tif")
    assert image.shape == (4, 2, 16, 16) and axis == 1
    with pytest.raises(ImageReadError, match="2 channels"):
        read_image(tmp_path / "tcyx.tif")  # not 8 frames
    tifffile.imwrite(
        tmp_path / "movie.tif", np.zeros((4, 16, 16), np.uint16), photometric="minisblack"
    )
    assert read_image_channels(tmp_path / "movie.tif")[1] is None
    assert read_image(tmp_path / "movie.tif").shape == (4, 16, 16)
    assert trailing_channel_axis((16, 16, 2)) == 2
    assert trailing_channel_axis((5, 16, 16, 2)) == 3
    for shape in [(16, 16, 3), (16, 16, 4), (16, 16), (3, 16, 16), (16, 16, 8), (4, 16, 1)]:
        assert trailing_channel_axis(shape) is None, shape


def test_multichannel_pages_and_folders_keep_their_channels(tmp_path: Path) -> None:
    from segloop.core.imageio import read_folder_channels, read_image_channels

    with tifffile.TiffWriter(tmp_path / "pages.tif") as writer:  # one CYX page set per time
        for t in range(3):
            writer.write(np.full((2, 16, 16), t, np.uint16), metadata={"axes": "CYX"})
    image, axis = read_image_channels(tmp_path / "pages.tif")
    assert image.shape == (3, 2, 16, 16) and axis == 1 and image[2, 1, 0, 0] == 2
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        tifffile.imwrite(
            folder / f"t{t}.tif", np.full((2, 16, 16), t, np.uint16), metadata={"axes": "CYX"}
        )
    stack, axis = read_folder_channels(folder)
    assert stack.shape == (3, 2, 16, 16) and axis == 1
    with pytest.raises(ImageReadError, match="2 channels"):
        read_folder_as_stack(folder)
