"""The Count widget's table model: numbers shown rounded, sorted numerically, NaN last."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from segloop.napari._count_table import CountsTableModel, counts_view

UP, DOWN = Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder


def shown(model: CountsTableModel, column: int) -> list:
    return [model.index(row, column).data() for row in range(model.rowCount())]


def test_cells_are_rounded_and_nan_is_empty(qtbot):
    model = CountsTableModel(["label", "area"], [None, 2], ["the label", ""])
    model.set_columns([np.array([3, 1, 2]), np.array([10.256, np.nan, 2.0])])
    assert (model.rowCount(), model.columnCount()) == (3, 2)
    assert shown(model, 0) == [3, 1, 2] and shown(model, 1) == [10.26, None, 2.0]
    assert model.headerData(0, Qt.Orientation.Horizontal) == "label"
    assert model.headerData(0, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole) == (
        "the label"
    )
    with pytest.raises(ValueError, match="differ in length"):
        model.set_columns([np.array([1, 2]), np.array([1.0])])


def test_sorting_is_numeric_keeps_nan_last_and_survives_a_recount(qtbot):
    model = CountsTableModel(["label", "area"], [None, 1])
    view = counts_view(model)  # sorting enabled, as in the widget
    qtbot.addWidget(view)
    model.set_columns([np.array([1, 2, 3, 4]), np.array([9.0, np.nan, 10.0, 1.5])])
    model.sort(1, UP)
    assert shown(model, 1) == [1.5, 9.0, 10.0, None]  # 10 after 9: numbers, not text
    assert [model.data_row(row) for row in range(4)] == [3, 0, 2, 1]
    model.sort(1, DOWN)
    assert shown(model, 1) == [10.0, 9.0, 1.5, None]
    assert shown(model, 0) == [3, 1, 4, 2]
    # a recount (new columns) keeps the order the user chose
    model.set_columns([np.array([1, 2, 3]), np.array([5.0, 7.0, 6.0])])
    assert shown(model, 1) == [7.0, 6.0, 5.0] and model.value(0, 0) == 2


def test_the_selected_row_follows_its_object_and_minus_one_restores_the_order(qtbot):
    model = CountsTableModel(["label", "area"], [None, None])
    view = counts_view(model)
    qtbot.addWidget(view)
    model.set_columns([np.array([1, 2, 3]), np.array([30, 10, 20])])
    assert shown(model, 0) == [1, 2, 3]  # a new view sorts by its first column, ascending
    view.selectRow(0)  # label 1
    view.sortByColumn(1, UP)  # by area: 2, 3, 1
    assert shown(model, 0) == [2, 3, 1]
    assert [index.row() for index in view.selectionModel().selectedRows()] == [2]
    model.sort(-1)  # Qt's "no sort column": the count's own order
    assert shown(model, 0) == [1, 2, 3]
    assert [index.row() for index in view.selectionModel().selectedRows()] == [0]
