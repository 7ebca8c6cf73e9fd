"""bioimage.io model packages (issue #22): ``segloop export --format bioimageio``.

The package is written once per module. Validation and bioimageio.core's model test need
``pip install "napari-segloop[bioimageio]"`` and are skipped without it; running a package
with ``segloop predict --model package.zip`` needs no bioimageio and always runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from skimage.draw import disk

from segloop.bioimageio_export import to_yaml, validate_package
from segloop.cli import main
from segloop.core.device import ComputeSettings
from segloop.core.imageio import normalize_percentile
from segloop.core.modelio import ModelFileError, load_model, read_header
from segloop.core.predict import predict_probabilities

FP32 = ComputeSettings(torch.device("cpu"), False, None)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> tuple[Path, dict]:
    """``segloop export nuclei`` into a temporary folder, and its JSON summary."""
    out = tmp_path_factory.mktemp("bioimageio") / "nuclei.zip"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "nuclei", "--format", "bioimageio", "--out", str(out)]) == 0
    return out, json.loads(printed.getvalue())


def _nuclei_image(shape=(150, 190), seed=0) -> np.ndarray:
    """Bright disks of nucleus size (~18 px) on a dark noisy background, uint16."""
    rng = np.random.default_rng(seed)
    image = rng.normal(200, 20, shape)
    for _ in range(25):
        centre = rng.uniform(12, np.subtract(shape, 12))
        rows, cols = disk(tuple(centre), rng.uniform(7, 11), shape=shape)
        image[rows, cols] += rng.uniform(800, 1500)
    return np.clip(image, 0, 65535).astype(np.uint16)


def test_package_holds_weights_tests_cover_card_and_model_file(package):
    path, summary = package
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        rdf = archive.read("rdf.yaml").decode()
        card = archive.read("README.md").decode()
        test_output = np.load(io.BytesIO(archive.read("test_output.npy")), allow_pickle=False)
    assert {
        "rdf.yaml",
        "README.md",
        "LICENSE_DATA.md",
        "cover.png",
        "segloop_network.py",
        "weights.pt",
        "weights_torchscript.pt",
        "test_input.npy",
        "test_output.npy",
        "nuclei.safetensors",
    } <= names
    assert summary["weights"][:2] == ["pytorch_state_dict", "torchscript"]
    assert summary["max_abs_difference"] < 1e-4
    assert test_output.shape == (1, 4, 256, 256)  # background, interior, border, distance
    assert "scale_range" in rdf and "license: CC0-1.0" in rdf and "nuclei.safetensors" in rdf
    assert "binary_fill_holes" in card and "0.4" in card  # the instance step, as tuned
    assert path.stat().st_size < 25 * 2**20


def test_rdf_yaml_reads_back_the_same():
    yaml = pytest.importorskip("yaml")
    value = {
        "a": [1, 2.5, 1e-12, True, None, "2d", "yes", "x: y", "ünï"],
        "b": {"c": [], "d": {}, "e": [{"f": "g", "h": [1]}]},
    }
    assert yaml.safe_load(to_yaml(value)) == value


def test_package_validates(package):
    pytest.importorskip("bioimageio.spec")
    assert package[1]["validation"] == "valid-format"
    assert validate_package(package[0]) == "valid-format"


def test_bioimageio_core_runs_the_package_like_segloop(package):
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(package[0])
    assert summary.status == "passed", [(d.name, d.errors) for d in summary.details]
    # a new, non-square image: bioimageio.core's pre-processing and the package network
    # give segloop's own (float32) network outputs
    raw = _nuclei_image()
    sample = core.predict(model=package[0], inputs=raw[None, None].astype(np.float32))
    outputs = sample.members["output"].data.to_numpy()[0]
    bundle = load_model("nuclei")
    expected = predict_probabilities(bundle, normalize_percentile(raw), settings=FP32)
    assert outputs.shape == expected.shape == (4, *raw.shape)
    assert np.abs(outputs - expected).max() < 1e-4


def test_predict_with_the_package_gives_the_shipped_models_labels(package, tmp_path):
    image = tmp_path / "nuclei.tif"
    tifffile.imwrite(image, _nuclei_image(seed=1))
    labels = {}
    for name, model in (("zip", str(package[0])), ("shipped", "nuclei")):
        out = tmp_path / name
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["predict", "--model", model, "--out", str(out), str(image)]) == 0
        labels[name] = tifffile.imread(out / "nuclei_labels.tif")
    assert labels["zip"].max() >= 15
    np.testing.assert_array_equal(labels["zip"], labels["shipped"])
    config, metadata, _ = read_header(package[0])
    assert config.distance_head and metadata["name"] == "nuclei"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"notes.txt": b"hello"}, "not a bioimage.io model package"),
        ({"rdf.yaml": b"type: model\n", "weights.pt": b"x"}, "not one made by `segloop export`"),
        ({"rdf.yaml": b"x.safetensors", "x.safetensors": b"\0" * 16}, "not one made by"),
        (None, "not a readable zip file"),
    ],
)
def test_other_zips_are_refused_with_one_line(tmp_path, capsys, members, message):
    path = tmp_path / "other.zip"
    if members is None:
        path.write_bytes(b"not a zip")
    else:
        _zip(path, members)
    with pytest.raises(ModelFileError, match=message):
        read_header(path)
    assert main(["predict", "--model", str(path), "--out", str(tmp_path / "o"), str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_damaged_member_is_refused_with_one_line(tmp_path, capsys):
    """A package whose model member fails its checksum (a flipped byte, not a cut file)."""
    payload = b"SEGLOOP-PAYLOAD-" * 8
    path = _zip(tmp_path / "damaged.zip", {"rdf.yaml": b"x.safetensors", "x.safetensors": payload})
    raw = bytearray(path.read_bytes())
    raw[raw.index(payload) + 5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="damaged"):
        read_header(path)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged" in err[0]


def test_a_package_that_fails_validation_never_replaces_the_old_one(tmp_path, capsys, monkeypatch):
    import segloop.bioimageio_export as export

    out = tmp_path / "model.zip"
    out.write_bytes(b"the package of an earlier export")
    monkeypatch.setattr(export, "validate_package", lambda path: "failed: inputs.0: bad axes")
    assert main(["export", "nuclei", "--format", "bioimageio", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validation failed" in err[0]
    assert out.read_bytes() == b"the package of an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]  # no temporary file left
