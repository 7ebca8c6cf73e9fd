"""The model-file header reader: what it accepts and what it refuses."""

import json
from pathlib import Path

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


def _file(tmp_path, header: bytes, buffer: bytes = b"") -> Path:
    path = tmp_path / "hand.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + buffer)
    return path


def _tensor(begin, end):
    return {"dtype": "U8", "shape": [end - begin], "data_offsets": [begin, end]}


def test_a_hand_written_file_is_read(tmp_path):  # safetensors reads both too
    header = {"__metadata__": {"a": "b"}, "x": _tensor(0, 2), "empty": _tensor(2, 2)}
    path = _file(tmp_path, json.dumps(header).encode() + b"    ", b"\1\2")  # padded
    assert safetensors_metadata(path) == {"a": "b"}
    assert safetensors_metadata(_file(tmp_path, b"{}")) == {}


@pytest.mark.parametrize(
    "header, buffer",
    [
        (b'{"x": {"data_offsets": [0, 1e999]}}', b"\0"),  # an offset that is no integer
        (b'{"x": {"data_offsets": ["0", 1]}}', b"\0"),
        (b'{"x": {"data_offsets": [true, 1]}}', b"\0"),
        (b'{"x": {"data_offsets": [1, 0]}}', b""),
        (b'{"x": {"dtype": "U8"}}', b""),
        (b'{"x": [0, 1]}', b"\0"),
        (json.dumps({"x": _tensor(0, 1), "y": _tensor(2, 3)}).encode(), b"\0\0\0"),  # a gap
        (json.dumps({"x": _tensor(0, 2), "y": _tensor(1, 3)}).encode(), b"\0\0\0"),  # overlap
        (b'{"__metadata__": []}', b""),
        (b'{"__metadata__": ""}', b""),
        (b'\xef\xbb\xbf{"__metadata__": {}}', b""),  # a byte-order mark
        (b"[" * 200_000, b""),  # nested too deep for the JSON parser
        (b"{" + b'"a":{' * 100_000 + b"}" * 100_001, b""),
    ],
)
def test_headers_safetensors_refuses_are_refused(tmp_path, header, buffer):
    with pytest.raises(ValueError):
        safetensors_metadata(_file(tmp_path, header, buffer))
