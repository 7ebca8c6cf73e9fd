"""Helpers of the bad-input and fault matrix: run the CLI, snapshot folders, tiny data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from segloop.cli import main
from segloop.core.imageio import write_tiff

from ..conftest import random_disks


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``segloop argv`` in-process; (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    """The ``segloop: error:`` lines of stderr (progress lines are not errors)."""
    return [line for line in stderr.splitlines() if line.startswith("segloop: error:")]


def assert_one_line_error(code: int, stderr: str, needle: str, expected_code: int = 1) -> str:
    """Exit status, exactly one error line naming ``needle``, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert needle.lower() in lines[0].lower(), lines[0]
    assert code == expected_code, (code, stderr)
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Path -> sha1 of every file under ``folder`` (hidden ones too)."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_pairs(folder: Path, n: int = 2, size: int = 48, names=None) -> tuple[Path, Path]:
    """``folder/images`` and ``folder/masks`` with ``n`` small disk images (uint16)."""
    images, masks = folder / "images", folder / "masks"
    for index, name in enumerate(names or [f"f{i}.tif" for i in range(n)]):
        image, labels = random_disks(index, n=4, shape=(size, size), radius=(4, 8))
        write_tiff(images / name, (image * 1000).clip(0, 65535).astype(np.uint16))
        write_tiff(masks / name, labels.astype(np.uint16))
    return images, masks


def write_image(path: Path, size: int = 48) -> Path:
    image, _ = random_disks(0, n=4, shape=(size, size), radius=(4, 8))
    write_tiff(path, (image * 255).clip(0, 255).astype(np.uint8))
    return path


def strict_json(text: str):
    """``json.loads`` that refuses NaN / Infinity (not JSON)."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained 3-level U-Net with 4 base channels (errors need no trained model),
    stored with an object diameter of 20 px."""
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import ModelConfig

    bundle = new_bundle(ModelConfig(depth=3, base_channels=4), "tiny")
    bundle.metadata.update(diameter=20.0, native_diameter=20.0)
    return save_model(bundle, tmp_path_factory.mktemp("model") / "tiny.safetensors")
