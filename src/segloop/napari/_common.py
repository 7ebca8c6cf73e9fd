"""Pieces shared by the segloop dock widgets: a layer picker and a run/cancel/progress base."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from . import adapters, edits
from ._notify import show_error, show_info, show_warning
from ._stager import Stager
from .workers import Job, Outcome

if TYPE_CHECKING:
    from napari.layers import Layer

    import napari

NONE_TEXT = "(none)"
#: Most a segloop dock may ask for (px): the widgets scroll inside it instead, so that all
#: four fit a 1366 x 768 screen.
MAX_MIN_HEIGHT = 320
#: Text in the dock titles of segloop widgets (napari appends the plugin name).
PLUGIN_TITLE = "(napari-segloop)"


class LayerCombo(QComboBox):
    """Combo box listing the viewer's layers of one type, kept in sync with the viewer.

    Parameters
    ----------
    viewer : napari.Viewer
        Viewer whose layers are listed.
    layer_type : type
        ``napari.layers.Image``, ``napari.layers.Labels``...
    allow_none : bool, optional
        Add a first "(none)" entry (for optional inputs).
    """

    def __init__(self, viewer: napari.Viewer, layer_type: type, allow_none: bool = False):
        super().__init__()
        self._viewer = viewer
        self._type = layer_type
        self._allow_none = allow_none
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self.refresh)
        events.moved.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _on_inserted(self, event) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()

    def layers(self) -> list[Layer]:
        """Layers of the picker's type, top of the layer list first."""
        return [layer for layer in reversed(self._viewer.layers) if isinstance(layer, self._type)]

    def refresh(self, *_args) -> None:
        """Rebuild the entries, keeping the current layer selected when it still exists."""
        current = self.layer()
        self._entries: list[Layer | None] = [None] if self._allow_none else []
        self._entries += self.layers()
        self.blockSignals(True)
        self.clear()
        for entry in self._entries:
            self.addItem(NONE_TEXT if entry is None else entry.name)
        index = _index_of(self._entries, current)
        self.setCurrentIndex(max(index, 0) if self._entries else -1)
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def layer(self) -> Layer | None:
        """The picked layer (None when there is none or "(none)" is picked)."""
        index = self.currentIndex()
        entries = getattr(self, "_entries", [])
        if not 0 <= index < len(entries):
            return None
        layer = entries[index]
        return layer if layer is not None and layer in self._viewer.layers else None

    def set_layer(self, layer: Layer | None) -> None:
        """Pick ``layer`` (or "(none)")."""
        index = _index_of(self._entries, layer)
        if index >= 0:
            self.setCurrentIndex(index)


def same_layer(first: object, second: object) -> bool:
    """Layer identity that also holds through napari's ``PublicOnlyProxy`` wrappers.

    Widgets opened from the plugin menu get a proxied viewer whose layers are proxies;
    ``==`` compares the wrapped objects (layers define no ``__eq__`` of their own).
    """
    return first is not None and second is not None and first == second


def writable_labels_name(
    viewer: napari.Viewer,
    name: str,
    shape: tuple[int, ...],
    frame: int | None = None,
    checks: Sequence[edits.EditCheck] = (),
) -> str:
    """``name``, or ``name [k]`` when that Labels layer holds user edits that writing a
    result of ``shape`` (one ``frame`` of it, or all of it) would replace: the first
    candidate that is free or only holds a model's unedited output there.

    A layer of another shape would be replaced whole, so then every frame must be free
    of edits, not only ``frame``. ``checks`` (:func:`edits.edit_checks`, computed in the
    job's worker) answer for the layers nobody touched since; the others are checked
    here.
    """
    from napari.layers import Labels

    known = {id(check.layer): check for check in checks}
    candidate, index = name, 0
    while True:
        existing = adapters.find_layer(viewer, candidate)
        if existing is None or not isinstance(existing, Labels):
            break
        check = known.get(id(existing))
        edited = None if check is None else check.answer(shape, frame)
        if edited is None:
            same_shape = tuple(existing.data.shape) == tuple(shape)
            frames = [frame] if frame is not None and same_shape else None
            edited = edits.has_user_edits(existing, frames)
        if not edited:
            break
        index += 1
        candidate = f"{name} [{index}]"
    if candidate != name:
        show_info(f"'{name}' holds your edits, so it was kept; the new result is '{candidate}'.")
    return candidate


def _index_of(entries: list, item: object) -> int:
    for index, entry in enumerate(entries):
        if same_layer(entry, item):
            return index
    return -1


class JobWidget(QWidget):
    """Base of the dock widgets: a form, Run + Cancel buttons, a progress bar, one job.

    Subclasses fill ``self.form``, implement :meth:`make_job` (validate inputs in the GUI
    thread and return a not-yet-started :class:`Job`, or raise ``UserError``) and
    :meth:`job_done`.
    """

    run_text = "Run"
    job_name = "run"

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.job: Job | None = None
        self.stager = Stager(self)  # GUI-thread steps after a job, one per turn
        self.edit_checks: list[edits.EditCheck] = []  # see close_edit_checks
        self.form = QFormLayout()
        self.run_button = QPushButton(self.run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.content = QWidget()
        self.main_layout = QVBoxLayout(self.content)
        self.scroll_area = _scroll_area(self.content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)
        self._tabified = False
        self.content.installEventFilter(self)  # its layout changes: fit the width again
        self.main_layout.addLayout(self.form)
        self.main_layout.addLayout(buttons)
        self.main_layout.addWidget(self.progress)
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.setStyleSheet("color: #ff8c69;")
        self.message_label.hide()
        self.main_layout.addWidget(self.message_label)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    @property
    def running(self) -> bool:
        """True while a job runs or its result is still being shown."""
        return self.job is not None or self.stager.busy

    def show_layer(self, name: str, data, kind: str, **kwargs) -> Layer:
        """Add layer ``name`` (or update it in place) without freezing the window.

        The window does not repaint in this turn (inside a staged step it is held
        already), and a new layer's controls widget and its selection come in the next
        turns, before any step still waiting (:func:`adapters.upsert_layer`'s
        ``finish_later``): each part costs the GUI thread tens of milliseconds.
        """
        self.stager.hold_paint_this_turn()
        finish_later: list = []
        layer = adapters.upsert_layer(
            self.viewer, name, data, kind, finish_later=finish_later, **kwargs
        )
        self.stager.run_first(finish_later)
        return layer

    def make_job(self, **callbacks) -> Job:  # pragma: no cover - abstract
        """Check the inputs and build the (not started) job; raise ``UserError`` if bad."""
        raise NotImplementedError

    def job_done(self, outcome: Outcome) -> None:  # pragma: no cover - abstract
        """Use the result of a successful job (update layers)."""
        raise NotImplementedError

    def run(self) -> Job | None:
        """Validate the inputs and start a job; returns it (None if refused or invalid)."""
        from .adapters import UserError

        if self.running:
            show_warning(f"A {self.job_name} is already running; wait for it or press Cancel.")
            return None
        try:
            job = self.make_job(on_progress=self._on_progress, on_done=self._on_done)
        except UserError as exc:
            self.report_error(str(exc))
            return None
        self.show_message("")
        self.job = job
        self._set_running(True)
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        return job.start()

    def cancel(self) -> None:
        """Stop the running job (the result is discarded; no layer changes)."""
        if self.job is not None:
            self.progress.setFormat("cancelling…")
            self.job.cancel()

    def closeEvent(self, event) -> None:
        """Closing the widget cancels a running job."""
        self.cancel()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        """Closing the dock (napari un-parents the widget) cancels a running job.

        Docking it beside another segloop widget tabs the two together (see
        :func:`tabify_with_siblings`), so that opening all four from the Plugins menu keeps
        the window on the screen.
        """
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None:
                self.cancel()
            elif not self._tabified:
                self._tabified = True
                QTimer.singleShot(0, self._tabify_when_docked)
        return super().event(event)

    def showEvent(self, event) -> None:
        """Keep the dock at least as wide as the controls (the area scrolls up and down).

        Pages of tab widgets get their style, hence their width, only once shown, so the
        width is checked again once the event loop has laid them out.
        """
        super().showEvent(event)
        self.fit_width()
        QTimer.singleShot(0, self.fit_width)

    def eventFilter(self, watched, event) -> bool:
        """Refit the width whenever the content's layout is recomputed."""
        if watched is self.content and event.type() == QEvent.Type.LayoutRequest:
            QTimer.singleShot(0, self.fit_width)
        return super().eventFilter(watched, event)

    def fit_width(self) -> None:
        """Make the scroll area as wide as the content needs (plus a vertical scroll bar)."""
        try:
            bar = self.scroll_area.verticalScrollBar().sizeHint().width()
            self.scroll_area.setMinimumWidth(self.content.minimumSizeHint().width() + bar)
        except RuntimeError:  # called from a timer after the widget was closed
            pass

    def _tabify_when_docked(self) -> None:
        try:
            tabify_with_siblings(self)
        except RuntimeError:  # the widget was closed before the event loop got here
            pass

    def minimumSizeHint(self):
        """The content's width, but at most :data:`MAX_MIN_HEIGHT` tall (it scrolls)."""
        hint = super().minimumSizeHint()
        width = (
            self.content.minimumSizeHint().width()
            + self.scroll_area.verticalScrollBar().sizeHint().width()
        )
        hint.setWidth(max(hint.width(), width))
        hint.setHeight(min(hint.height(), MAX_MIN_HEIGHT))
        return hint

    def show_message(self, text: str) -> None:
        """Show ``text`` (wrapped, selectable) under the progress bar; "" hides it."""
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))

    def report_error(self, text: str) -> None:
        """An error toast with the whole message, kept under the progress bar too."""
        self.show_message(text)
        show_error(text)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _on_progress(self, percent: int, text: str) -> None:
        self.progress.setValue(percent)
        self.progress.setFormat(f"%p%  {text}")

    def close_edit_checks(self) -> None:
        """Stop the :class:`edits.EditCheck` of the last job listening to its layers."""
        for check in self.edit_checks:
            check.close()
        self.edit_checks = []

    def _on_done(self, outcome: Outcome) -> None:
        self.job = None
        self._set_running(False)
        if not outcome.ok:
            self.close_edit_checks()
        if outcome.cancelled:
            self.progress.setFormat("cancelled")
            show_info(f"{self.job_name.capitalize()} cancelled; no layer was changed.")
        elif outcome.error is not None:
            self.progress.setFormat("failed")
            if not outcome.crashed:  # napari already reported a crash with its traceback
                self.report_error(outcome.error)
        else:
            self.progress.setValue(100)
            self.progress.setFormat("done")
            self.job_done(outcome)


def _scroll_area(content: QWidget) -> QScrollArea:
    """A frameless, vertically scrolling area around ``content``."""
    area = QScrollArea()
    area.setWidget(content)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setMinimumHeight(min(content.minimumSizeHint().height(), MAX_MIN_HEIGHT))
    return area


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def tabify_with_siblings(widget: QWidget) -> None:
    """Tab ``widget``'s dock together with the other segloop docks in the same area.

    napari's Plugins menu docks widgets one under the other; four segloop widgets stacked
    that way need far more height than a laptop screen has. Tabbed, each gets the whole
    height of the dock area. A dock the user has floated is left alone.
    """
    dock = _dock_of(widget)
    if dock is None or dock.isFloating() or PLUGIN_TITLE not in dock.windowTitle():
        return
    window = dock.parent()
    if not isinstance(window, QMainWindow):
        return
    area = window.dockWidgetArea(dock)
    siblings = [
        other
        for other in window.findChildren(QDockWidget)
        if other is not dock
        and PLUGIN_TITLE in other.windowTitle()
        and not other.isFloating()
        and window.dockWidgetArea(other) == area
    ]
    if not siblings or dock in window.tabifiedDockWidgets(siblings[0]):
        return
    siblings.sort(key=lambda other: not other.isVisible())  # a shown one first
    window.tabifyDockWidget(siblings[0], dock)
    dock.raise_()
