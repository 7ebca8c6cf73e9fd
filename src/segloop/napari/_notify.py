"""napari notifications that show their whole message.

napari's toasts open collapsed, as one elided line ("Nothing to train on: add a pair
(image +"). segloop's messages say what to do next, so a cut one is useless: these
wrappers call napari's ``show_error`` / ``show_warning`` / ``show_info`` and then open the
toast they made to its full height. The opening uses napari's private toast class; if a
napari release changes it, the toast simply stays as napari draws it.
"""

from __future__ import annotations

from napari.utils import notifications
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

#: Messages shorter than this fit on the collapsed toast's one line.
ONE_LINE = 48


def show_error(message: str) -> None:
    """napari's ``show_error``, with the toast opened to the whole message."""
    notifications.show_error(message)
    _expand_soon(message)


def show_warning(message: str) -> None:
    """napari's ``show_warning``, with the toast opened to the whole message."""
    notifications.show_warning(message)
    _expand_soon(message)


def show_info(message: str) -> None:
    """napari's ``show_info``, with the toast opened to the whole message."""
    notifications.show_info(message)
    _expand_soon(message)


def _expand_soon(message: str) -> None:
    if len(message) > ONE_LINE and QApplication.instance() is not None:
        QTimer.singleShot(0, lambda: expand_toasts(message))


def expand_toasts(message: str) -> int:
    """Open every collapsed napari toast showing ``message``; returns how many."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:  # pragma: no cover - napari moved its toast
        return 0
    opened = 0
    for widget in QApplication.allWidgets():
        if not isinstance(widget, NapariQtNotification) or widget.property("expanded"):
            continue
        label = getattr(widget, "message", None)
        if label is not None and label.text() == message:
            try:
                widget.expand()
            except (AttributeError, RuntimeError):  # pragma: no cover - napari changed
                continue
            opened += 1
    return opened
