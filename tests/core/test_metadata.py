"""The model-file header reader: what it accepts and what it refuses."""

import json

import pytest
from safetensors import safe_open

from segloop.core.metadata import HeaderError, read_model_header, safetensors_metadata
from segloop.core.modelio import new_bundle, save_model
from segloop.core.models import ModelConfig


@pytest.fixture
def model_file(tmp_path):
    bundle = new_bundle(ModelConfig(depth=2, base_channels=4), "tiny")
    bundle.metadata["history"] = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(50)]
    return save_model(bundle, tmp_path / "v1.safetensors")


def test_the_metadata_is_what_safetensors_reads(model_file):
    with safe_open(str(model_file), framework="numpy") as handle:
        expected = handle.metadata()
    assert safetensors_metadata(model_file) == expected
    config, metadata = read_model_header(model_file)
    assert config == json.loads(expected["config"])
    assert metadata["history"][49]["step"] == 49


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) - 1],  # half-copied: the tensors end after the file
        lambda data: data + b"\0",  # bytes after the last tensor
        lambda data: data[:5],  # not even the header's size
        lambda data: (10**9).to_bytes(8, "little") + data[8:],  # a header larger than the file
        lambda data: b"\x80\x04not a model at all" * 10,
        lambda data: (4).to_bytes(8, "little") + b"[1] " + data[12:],  # not a JSON object
    ],
)
def test_damaged_files_are_refused_with_the_path(model_file, damage):
    model_file.write_bytes(damage(model_file.read_bytes()))
    with pytest.raises(ValueError):
        safetensors_metadata(model_file)
    with pytest.raises(HeaderError, match="v1.safetensors: not a readable model file"):
        read_model_header(model_file)


def test_metadata_values_must_be_strings(tmp_path):
    header = json.dumps({"__metadata__": {"format": 1}}).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ValueError, match="strings"):
        safetensors_metadata(path)
