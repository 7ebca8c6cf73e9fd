"""Live training plot: points are coalesced into few pictures, drawn off the GUI thread,
and the last picture of a run shows every point."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtGui import QColor

from segloop.napari._loss_plot import LOSS_COLOUR, LossPlot


@pytest.fixture
def plot(qtbot):
    widget = LossPlot()
    widget.resize(420, 240)
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitUntil(lambda: widget.pictures >= 1, timeout=20_000)  # the empty plot
    return widget


def _drawn(plot: LossPlot, n_loss: int, qtbot) -> None:
    qtbot.waitUntil(lambda: len(plot.drawn_points()[0]) == n_loss, timeout=20_000)


def test_every_loss_point_ends_up_in_the_picture(plot, qtbot):
    losses = [1.0 / (1 + step) for step in range(200)]
    pictures = plot.pictures
    for step, loss in enumerate(losses):  # as fast as training events could come
        plot.add_loss(step, loss)
    assert plot.n_points() == (200, 0)
    _drawn(plot, 200, qtbot)
    steps, drawn = plot.drawn_points()
    assert steps == list(range(200)) and drawn == losses  # exact, nothing thinned
    assert plot.pictures - pictures <= 2  # coalesced: not one picture per point


def test_points_arriving_during_a_run_are_all_drawn(plot, qtbot):
    for step in range(30):
        plot.add_loss(step, 2.0 - step / 30)
        if step % 10 == 9:
            plot.add_metric(step, step / 40, "F1")
        qtbot.wait(15)  # the event loop runs between training events
    _drawn(plot, 30, qtbot)
    qtbot.waitUntil(lambda: len(plot.drawn_metric()[0]) == 3, timeout=20_000)
    assert plot.drawn_metric() == ([9.0, 19.0, 29.0], [9 / 40, 19 / 40, 29 / 40], "F1")


def _loss_coloured_pixels(plot: LossPlot) -> int:
    image = plot.grab().toImage()
    target = np.array(QColor(LOSS_COLOUR).getRgb()[:3])
    found = 0
    for x in range(0, image.width(), 2):
        for y in range(0, image.height(), 2):
            colour = image.pixelColor(x, y)
            rgb = np.array([colour.red(), colour.green(), colour.blue()])
            found += int(np.abs(rgb - target).max() < 40)
    return found


def test_picture_shows_the_loss_curve(plot, qtbot):
    empty = _loss_coloured_pixels(plot)  # the axis label only
    for step in range(50):
        plot.add_loss(step, 1.0 + np.sin(step / 5))
    _drawn(plot, 50, qtbot)
    assert _loss_coloured_pixels(plot) > empty + 20, "the loss curve is not in the picture"


def test_history_replaces_the_live_curve_and_clear_empties_it(plot, qtbot):
    for step in range(10):
        plot.add_loss(step, 1.0)
    history = [{"step": 0, "loss": 0.9}, {"step": 5, "loss": 0.5}, {"step": 9}]
    validation = [{"step": 5, "accuracy": 0.7}, {"step": 9, "accuracy": 0.8}]
    plot.set_history(history, validation, classes=True)
    assert plot.n_points() == (2, 2)
    qtbot.waitUntil(lambda: plot.drawn_points() == ([0.0, 5.0], [0.9, 0.5]), timeout=20_000)
    assert plot.drawn_metric() == ([5.0, 9.0], [0.7, 0.8], "accuracy")
    plot.clear("F1")
    assert plot.n_points() == (0, 0)
    qtbot.waitUntil(lambda: plot.drawn_points() == ([], []), timeout=20_000)
    assert plot.drawn_metric() == ([], [], "F1")


@pytest.mark.parametrize("before_first_picture", [True, False])
def test_a_resized_plot_gets_a_picture_of_its_new_size(qtbot, before_first_picture):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(300, 200)
    plot.show()
    if not before_first_picture:
        qtbot.waitUntil(lambda: plot.picture_size() == (300, 200), timeout=20_000)
    plot.add_loss(0, 1.0)
    plot.resize(520, 300)  # as a dock laid out after it was created
    qtbot.waitUntil(lambda: plot.picture_size() == (520, 300), timeout=20_000)
    assert plot.drawn_points() == ([0.0], [1.0])
