"""The docked widgets fit a 1366 x 768 laptop screen; toasts show their whole message."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QApplication

from segloop.napari._common import PLUGIN_TITLE, JobWidget

from .conftest import WIDGETS

#: Least usable screen: a 1366 x 768 laptop, less a taskbar.
SCREEN_HEIGHT = 768
#: Most a single widget's content may need before it scrolls (px).
WIDGET_LIMIT = 600


def _segloop_docks(viewer) -> list:
    from qtpy.QtWidgets import QDockWidget

    window = viewer.window._qt_window
    return [d for d in window.findChildren(QDockWidget) if PLUGIN_TITLE in d.windowTitle()]


@pytest.mark.parametrize("name", list(WIDGETS.values()))
def test_each_widget_needs_less_than_600_px(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-segloop", name)
    # what its controls need laid out in full, before the scroll area may shrink it
    assert widget.content.minimumSizeHint().height() < WIDGET_LIMIT
    assert dock.minimumSizeHint().height() < WIDGET_LIMIT


def test_the_four_widgets_open_from_the_menu_are_tabbed_and_fit_the_screen(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer(show=True)
    for name in WIDGETS.values():  # one after the other, as the Plugins menu does
        viewer.window.add_plugin_dock_widget("napari-segloop", name)
        QApplication.processEvents()
    window = viewer.window._qt_window
    docks = _segloop_docks(viewer)
    assert len(docks) == 4
    qtbot.waitUntil(lambda: len(window.tabifiedDockWidgets(docks[0])) == 3, timeout=5000)
    assert window.minimumSizeHint().height() <= SCREEN_HEIGHT
    # with the window at the laptop's size, nothing is squeezed below its hint
    window.resize(1366, SCREEN_HEIGHT)
    QApplication.processEvents()
    assert window.height() <= SCREEN_HEIGHT
    # every tab, once raised, is as wide as its controls need (nothing cut on the right)
    for dock in docks:
        dock.raise_()
        qtbot.wait(50)
        widget = dock.widget().findChild(JobWidget) or dock.widget()
        needed = widget.content.minimumSizeHint().width()
        qtbot.waitUntil(
            lambda w=widget, n=needed: w.scroll_area.viewport().width() >= n, timeout=3000
        )


def test_a_floated_widget_is_not_pulled_back_into_the_tabs(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    first, _ = viewer.window.add_plugin_dock_widget("napari-segloop", "Segment")
    QApplication.processEvents()
    first.setFloating(True)
    second, _ = viewer.window.add_plugin_dock_widget("napari-segloop", "Weight map")
    QApplication.processEvents()
    qtbot.wait(50)
    assert first.isFloating()
    assert first not in viewer.window._qt_window.tabifiedDockWidgets(second)


def test_a_long_error_toast_opens_to_its_whole_message(make_napari_viewer, qtbot):
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    from segloop.napari._notify import show_error

    viewer = make_napari_viewer(show=True)
    message = (
        "Nothing to train on: add a pair (image + corrected labels) in '1 · Corrections', "
        "or pick a project folder that already holds corrections."
    )
    show_error(message)

    def toasts() -> list:
        return [
            w
            for w in QApplication.allWidgets()
            if isinstance(w, NapariQtNotification) and w.message.text() == message
        ]

    qtbot.waitUntil(lambda: bool(toasts()) and toasts()[0].property("expanded"), timeout=3000)
    assert viewer is not None


def test_a_refused_run_keeps_the_whole_message_in_the_widget(dock, notes):
    from segloop.napari._finetune_widget import FinetuneWidget

    _, widget = dock(FinetuneWidget)
    widget.run()  # no pairs, no saved corrections
    assert notes, "the refusal is a notification"
    text = widget.message_label.text()
    assert text and text == notes[-1][1]
    assert not widget.message_label.isHidden()
