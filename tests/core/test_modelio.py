import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segloop.core.modelio import (
    ModelFileError,
    load_model,
    new_bundle,
    read_header,
    resolve_model_path,
    save_model,
)
from segloop.core.models import ModelConfig, preset


def small_bundle():
    torch.manual_seed(0)
    return new_bundle(ModelConfig(depth=2, base_channels=4), "small", diameter=12.5)


def test_round_trip_keeps_weights_config_and_metadata(tmp_path):
    bundle = small_bundle()
    path = save_model(bundle, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.config == bundle.config
    assert loaded.metadata["diameter"] == 12.5 and loaded.name == "small"
    for key, value in bundle.network.state_dict().items():
        assert torch.equal(value, loaded.network.state_dict()[key])
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_half_storage_is_smaller_and_close(tmp_path):
    bundle = new_bundle(preset("unet"), "fast")
    full = save_model(bundle, tmp_path / "full.safetensors")
    half = save_model(bundle, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    weight = load_model(half).network.head.weight
    assert weight.dtype == torch.float32
    assert torch.allclose(weight, bundle.network.head.weight, atol=1e-3)


def test_truncated_file_gives_clear_error(tmp_path):
    path = save_model(small_bundle(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="m.safetensors"):
        load_model(path)


def test_garbage_and_pickle_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not a model at all" * 10)
    with pytest.raises(ModelFileError, match="not a readable model file"):
        load_model(garbage)
    pickled = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(2)}, pickled)
    with pytest.raises(ModelFileError):
        load_model(pickled)


def test_mismatched_config_is_reported(tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_model(small_bundle(), tmp_path / "m.safetensors")
    config, metadata, _ = read_header(path)
    wrong = json.dumps({**config.to_dict(), "base_channels": 8})
    save_file(
        load_file(str(path)),
        str(path),
        metadata={"format": "segloop-model/1", "config": wrong, "metadata": json.dumps(metadata)},
    )
    with pytest.raises(ModelFileError, match="has shape"):
        load_model(path)


def test_unknown_reference_names_the_problem(tmp_path):
    with pytest.raises(ModelFileError, match="no model file 'does-not-exist'"):
        resolve_model_path("does-not-exist")
    with pytest.raises(ModelFileError, match="not a model file"):
        resolve_model_path(tmp_path)


def test_a_shipped_name_is_not_shadowed_by_a_local_file(tmp_path, monkeypatch):
    from segloop.core.modelio import shipped_models

    name, shipped = next(iter(shipped_models().items()))
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(b"a lab's own file that happens to share the name")
    assert resolve_model_path(name) == shipped
    assert resolve_model_path(f"./{name}") == tmp_path / name  # a path reaches the file
    assert resolve_model_path(tmp_path / name) == tmp_path / name
    assert resolve_model_path(Path(name)) == shipped  # a bare name, whatever its type


def test_failed_save_leaves_previous_model_intact(tmp_path, monkeypatch):
    path = save_model(small_bundle(), tmp_path / "m.safetensors")
    before = path.read_bytes()
    bundle = small_bundle()
    bundle.metadata["bad"] = object()  # not JSON-serialisable -> save fails
    with pytest.raises(TypeError):
        save_model(bundle, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert np.isfinite(load_model(path).metadata["diameter"])


def test_adding_a_distance_head_keeps_the_class_outputs(tmp_path):
    from segloop.core.modelio import with_distance_head

    bundle = small_bundle()
    extended = with_distance_head(bundle)
    assert extended.config.distance_head and extended.config.n_outputs == 4
    assert extended.metadata == bundle.metadata and extended.metadata is not bundle.metadata
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        before = bundle.network.eval()(image)
        after = extended.network.eval()(image)
    assert torch.allclose(after[:, :3], before, atol=1e-5)
    assert torch.allclose(after[:, 3], before[:, 1] - before[:, 0], atol=1e-5)
    loaded = load_model(save_model(extended, tmp_path / "d.safetensors"))
    assert loaded.config == extended.config
    with pytest.raises(ValueError, match="already has a distance head"):
        with_distance_head(extended)


def test_widening_a_unet_keeps_its_output_and_trains_the_new_channels():
    from segloop.core.modelio import widened

    torch.manual_seed(0)
    bundle = new_bundle(ModelConfig(depth=3, base_channels=4, distance_head=True), "w")
    with torch.no_grad():  # non-trivial batch-norm running statistics
        for _ in range(3):
            bundle.network.train()(torch.rand(2, 1, 32, 32) * 3)
    wide = widened(bundle, 6)
    assert wide.config.base_channels == 6 and wide.metadata["widened_from"] == 4
    assert wide.config.distance_head and wide.config.depth == 3
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(wide.network.eval()(image), bundle.network.eval()(image), atol=1e-5)
        assert torch.allclose(wide.network.train()(image), bundle.network.train()(image), atol=1e-5)
    wide.network.train()(image).square().mean().backward()
    head_grad = wide.network.head.weight.grad[:, 4:]  # outgoing weights of the added channels
    assert head_grad.abs().sum() > 0
    with pytest.raises(ValueError, match="must exceed"):
        widened(bundle, 4)
    with pytest.raises(ValueError, match="only U-Nets"):
        widened(new_bundle(preset("segnet"), "s"), 32)
