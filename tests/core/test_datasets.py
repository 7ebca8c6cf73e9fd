import numpy as np
import pytest

from segloop.core.datasets import load_pairs, pair_files
from segloop.core.imageio import write_tiff


def test_pairs_by_name_stem_and_ctc_frame_number(tmp_path):
    for folder, names in {
        "a": ["x.png", "y.tif"],
        "b": ["x.tif", "y.tif"],
        "ctc": ["t000.tif", "t007.tif"],
        "ctc_gt": ["man_seg000.tif", "man_seg007.tif"],
    }.items():
        for name in names:
            write_tiff(tmp_path / folder / name, np.ones((16, 16), np.uint8))
    assert [(i.name, m.name) for i, m in pair_files(tmp_path / "a", tmp_path / "b")] == [
        ("x.png", "x.tif"),
        ("y.tif", "y.tif"),
    ]
    assert [m.name for _, m in pair_files(tmp_path / "ctc", tmp_path / "ctc_gt")] == [
        "man_seg000.tif",
        "man_seg007.tif",
    ]


def test_unpaired_and_mismatched_files_are_reported(tmp_path):
    write_tiff(tmp_path / "img" / "a.tif", np.ones((16, 16), np.uint8))
    write_tiff(tmp_path / "img" / "b.tif", np.ones((16, 16), np.uint8))
    write_tiff(tmp_path / "msk" / "a.tif", np.ones((8, 16), np.uint16))
    with pytest.raises(ValueError, match="1 image.*b.tif"):
        pair_files(tmp_path / "img", tmp_path / "msk")
    (tmp_path / "img" / "b.tif").unlink()
    with pytest.raises(ValueError, match="do not match"):
        load_pairs(tmp_path / "img", tmp_path / "msk")


def test_a_palette_png_mask_is_read_as_its_ids(tmp_path):
    from PIL import Image

    from segloop.core.datasets import load_labels

    ids = np.zeros((40, 40), np.uint8)
    ids[5:15, 5:15], ids[20:30, 20:30] = 1, 2
    mask = Image.fromarray(ids, mode="P")
    mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    mask.save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_labels(tmp_path / "a.png"), ids)
