"""Fixtures of the napari plugin tests: synthetic images, a tiny model, notifications."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk


def disks(
    centres: list[tuple[int, int]], radius: int = 10, shape: tuple[int, int] = (96, 96)
) -> np.ndarray:
    """int32 labels with one disk per centre (1, 2, ...)."""
    labels = np.zeros(shape, np.int32)
    for index, centre in enumerate(centres, start=1):
        rr, cc = disk(centre, radius, shape=shape)
        labels[rr, cc] = index
    return labels


def noisy_image(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Bright objects on a dark noisy background (float32)."""
    rng = np.random.default_rng(seed)
    return ((labels > 0) * 0.8 + rng.normal(0, 0.05, labels.shape)).astype(np.float32)


THREE_DISKS = [(20, 20), (20, 70), (70, 45)]
TWO_TOUCHING = [(48, 34), (48, 62)]  # radius 14: the disks overlap by a narrow neck


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """An untrained fast U-Net saved as a model file (outputs have the right shapes)."""
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import preset

    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(new_bundle(preset("unet"), "tiny"), path)
    return path


@pytest.fixture
def notes():
    """Notifications shown during the test, as (severity, message) pairs."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(notification) -> None:
        seen.append((str(notification.severity.value), str(notification.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def errors(notes: list[tuple[str, str]]) -> list[str]:
    """Messages of error notifications."""
    return [message for severity, message in notes if severity == "error"]


def wait_idle(qtbot, widget, timeout: int = 20_000) -> None:
    """Wait until the widget's background job has finished."""
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


WIDGETS = {
    "SegmentWidget": "Segment",
    "WeightMapWidget": "Weight map",
    "CountWidget": "Count",
    "FinetuneWidget": "Fine-tune",
}


@pytest.fixture(autouse=True)
def projects_home(tmp_path_factory, monkeypatch) -> Path:
    """The Fine-tune dock's default project folders live in a temporary folder, never in
    the real ``~/segloop-projects`` (whose versions would show up in the tests)."""
    from segloop.napari import finetune_adapters

    home = tmp_path_factory.mktemp("segloop-projects")
    monkeypatch.setattr(finetune_adapters, "PROJECTS_HOME", home)
    return home


@pytest.fixture
def dock(make_napari_viewer):
    """Factory: a viewer with one segloop widget docked -> (viewer, widget)."""

    def factory(widget_class, **viewer_kwargs):
        viewer = make_napari_viewer(**viewer_kwargs)
        # Open it as a user does (plugin menu): the widget gets napari's proxied viewer.
        _, widget = viewer.window.add_plugin_dock_widget(
            "napari-segloop", WIDGETS[widget_class.__name__]
        )
        assert isinstance(widget, widget_class)
        return viewer, widget

    return factory
