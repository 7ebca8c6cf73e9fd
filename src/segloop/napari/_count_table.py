"""The Count widget's object table: a Qt model over the count's numpy columns.

The widget recounts after every paint stroke on the counted layer. Its table used to be a
``QTableWidget`` with one item per cell and columns sized to their contents: refilling it
made Qt re-measure a column over every row at each replaced item, so a recount of 100
objects held the GUI thread 1.2 s and one of 300 objects 13 s (docs/benchmarks.md, "A
recount no longer freezes the window"). This model keeps the columns as numpy arrays and
formats a cell only when the view draws it, so showing a new count costs about the same
for ten objects or ten thousand; sorting is one ``numpy.argsort``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

DISPLAY = Qt.ItemDataRole.DisplayRole
TOOLTIP = Qt.ItemDataRole.ToolTipRole
HORIZONTAL = Qt.Orientation.Horizontal


class CountsTableModel(QAbstractTableModel):
    """Read-only columns of numbers, shown rounded, sorted numerically (NaN: empty, last).

    Parameters
    ----------
    headers : sequence of str
        Column titles.
    decimals : sequence of int or None
        Decimals shown per column; None shows an integer.
    tips : sequence of str, optional
        Tooltip of each column's header.
    """

    def __init__(
        self,
        headers: Sequence[str],
        decimals: Sequence[int | None],
        tips: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self._headers = list(headers)
        self._decimals = list(decimals)
        self._tips = list(tips) or [""] * len(self._headers)
        self._columns: list[np.ndarray] = [np.zeros(0) for _ in self._headers]
        self._order = np.zeros(0, dtype=np.intp)  # view row -> data row
        self._sorted_by: tuple[int, Qt.SortOrder] | None = None

    def set_columns(self, columns: Sequence[np.ndarray]) -> None:
        """Show ``columns`` (one 1-D array per header, all the same length), keeping the
        current sort order."""
        if len(columns) != len(self._headers):
            raise ValueError(f"{len(columns)} columns for {len(self._headers)} headers")
        arrays = [np.asarray(column, dtype=float) for column in columns]
        if len({len(a) for a in arrays}) > 1:
            raise ValueError("the columns differ in length")
        self.beginResetModel()
        self._columns = arrays
        self._order = np.arange(len(arrays[0]) if arrays else 0, dtype=np.intp)
        if self._sorted_by is not None:
            self._order = self._sorted_order(*self._sorted_by)
        self.endResetModel()

    def data_row(self, row: int) -> int:
        """The data row (index into the columns) shown at view row ``row``."""
        return int(self._order[row])

    def value(self, row: int, column: int) -> float:
        """The number at view row ``row`` (NaN where there is none)."""
        return float(self._columns[column][self._order[row]])

    # ------------------------------------------------------------------ Qt model API

    def rowCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(self._order)

    def columnCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(self._headers)

    def data(self, index: QModelIndex, role: int = DISPLAY) -> object:
        if not index.isValid():
            return None
        if role != DISPLAY:
            return None
        number = self.value(index.row(), index.column())
        if np.isnan(number):
            return None
        decimals = self._decimals[index.column()]
        return int(number) if decimals is None else round(number, decimals)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = DISPLAY):  # noqa: N802
        if orientation != HORIZONTAL or not 0 <= section < len(self._headers):
            return None
        if role == DISPLAY:
            return self._headers[section]
        if role == TOOLTIP:
            return self._tips[section] or None
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort by ``column`` (-1: back to the count's own order); the selected row
        moves with its object."""
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        data_rows = [int(self._order[index.row()]) for index in persistent]
        if 0 <= column < len(self._headers):
            self._sorted_by = (column, order)
            self._order = self._sorted_order(column, order)
        else:
            self._sorted_by = None
            self._order = np.arange(len(self._order), dtype=np.intp)
        view_row = np.empty_like(self._order)
        view_row[self._order] = np.arange(len(self._order))
        moved = [
            self.index(int(view_row[row]), index.column())
            for row, index in zip(data_rows, persistent, strict=True)
        ]
        self.changePersistentIndexList(persistent, moved)
        self.layoutChanged.emit()

    def _sorted_order(self, column: int, order: Qt.SortOrder) -> np.ndarray:
        """Data rows ordered by ``column`` (stable; NaN last in either direction)."""
        values = self._columns[column]
        present = np.flatnonzero(~np.isnan(values))
        absent = np.flatnonzero(np.isnan(values))
        ranked = present[np.argsort(values[present], kind="stable")]
        if order == Qt.SortOrder.DescendingOrder:
            ranked = present[np.argsort(-values[present], kind="stable")]
        return np.concatenate([ranked, absent]).astype(np.intp)


def counts_view(model: CountsTableModel) -> QTableView:
    """A sortable, read-only, row-selecting view of ``model``."""
    view = QTableView()
    view.setModel(model)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.verticalHeader().setVisible(False)
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setResizeContentsPrecision(0)  # fit the columns to the rows in view only
    header.setStretchLastSection(True)
    header.setSortIndicator(0, Qt.SortOrder.AscendingOrder)  # Qt's default is descending
    view.setSortingEnabled(True)
    model.modelReset.connect(view.resizeColumnsToContents)
    return view
