"""The viewer's list of the study's top SAE features.

Rows: colour swatch (when its overlay is shown), name (annotated, else proposed in italics,
else "unnamed #k"), activation, and population percentile drawn as a bar. Selecting one or
several rows (click, Ctrl/Shift-click, arrow keys) chooses the overlays.
"""

import math
from collections.abc import Sequence

from PySide6.QtCore import QItemSelectionModel, QRect, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from medsae_desktop.core.inspection import FeatureHit

UNIT_ROLE = Qt.ItemDataRole.UserRole + 1
PCT_ROLE = Qt.ItemDataRole.UserRole + 2
_SELECT_ROW = (QItemSelectionModel.SelectionFlag.Select
               | QItemSelectionModel.SelectionFlag.Rows)


class _PercentileDelegate(QStyledItemDelegate):
    """Draws the percentile as a thin bar under its number."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        super().paint(painter, option, index)
        # never store/read None in item data: PySide6 6.12 decrefs None when it reads an
        # invalid QVariant (crashes at exit); a missing percentile is NaN
        pct = float(index.data(PCT_ROLE))
        if math.isnan(pct):
            return
        r: QRect = option.rect.adjusted(6, option.rect.height() - 7, -6, -4)
        painter.save()
        painter.fillRect(r, QColor("#2a2f38"))
        w = int(r.width() * max(0.0, min(1.0, float(pct) / 100)))
        colour = QColor("#f26b3a") if pct >= 95 else QColor("#3fa7d6")
        painter.fillRect(QRect(r.left(), r.top(), w, r.height()), colour)
        painter.restore()


class QtFeatureList(QTableWidget):
    """Top-N features of the current study.

    Signals
    -------
    selection_changed(list)
        Units whose overlays should be shown, top row first.
    """

    selection_changed = Signal(list)

    COLUMNS = ("", "#", "Feature", "Activation", "Percentile")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.verticalHeader().setVisible(False)
        hh = self.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        self.setColumnWidth(0, 8)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(4, QHeaderView.ResizeMode.Fixed)
        self.setColumnWidth(4, 92)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setItemDelegateForColumn(4, _PercentileDelegate(self))
        self.verticalHeader().setDefaultSectionSize(30)
        self._hits: list[FeatureHit] = []
        self.itemSelectionChanged.connect(self._emit_selection)

    # ---- content --------------------------------------------------------------------------
    def set_hits(self, hits: Sequence[FeatureHit], select: Sequence[int] = ()) -> None:
        """Fill the list and select the rows of ``select`` (emits ``selection_changed``)."""
        self.blockSignals(True)
        self.clearSelection()
        self._hits = list(hits)
        self.setRowCount(len(self._hits))
        for r, h in enumerate(self._hits):
            self._fill_row(r, h)
        self.blockSignals(False)
        self.select_units(select)

    def update_hits(self, hits: Sequence[FeatureHit]) -> None:
        """Refresh names/percentiles of the same units without touching the selection."""
        by_unit = {h.unit: h for h in hits}
        for r, h in enumerate(self._hits):
            if h.unit in by_unit:
                self._hits[r] = by_unit[h.unit]
                self._fill_row(r, by_unit[h.unit])

    def hits(self) -> list[FeatureHit]:
        """Rows shown."""
        return list(self._hits)

    def row_of(self, unit: int) -> int:
        """Row of ``unit``, or -1."""
        for r, h in enumerate(self._hits):
            if h.unit == unit:
                return r
        return -1

    def selected_units(self) -> list[int]:
        """Selected units, top row first."""
        rows = sorted({i.row() for i in self.selectionModel().selectedRows()})
        return [self._hits[r].unit for r in rows if r < len(self._hits)]

    def select_units(self, units: Sequence[int]) -> None:
        """Select exactly ``units`` (emits ``selection_changed`` once)."""
        self.blockSignals(True)
        self.clearSelection()
        sm = self.selectionModel()
        for u in units:
            row = self.row_of(u)
            if row >= 0:
                sm.select(self.model().index(row, 0), _SELECT_ROW)
        self.blockSignals(False)
        self._emit_selection()

    def set_swatches(self, colours: dict[int, tuple[int, int, int]]) -> None:
        """Colour swatches of the units whose overlays are shown (others blank)."""
        for r, h in enumerate(self._hits):
            it = self.item(r, 0)
            if it is None:
                continue
            c = colours.get(h.unit)
            it.setBackground(QColor(*c) if c is not None else QColor(0, 0, 0, 0))

    # ---- internals ------------------------------------------------------------------------
    def _fill_row(self, r: int, h: FeatureHit) -> None:
        sw = QTableWidgetItem("")
        sw.setData(UNIT_ROLE, h.unit)
        unit = QTableWidgetItem(str(h.unit))
        unit.setForeground(QColor("#7d8696"))
        unit.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        # the status has its own styling here, so the "(proposed)" suffix is dropped
        text = h.name.rsplit(" (", 1)[0] if h.status in ("proposed", "flagged") else h.name
        if text == f"unnamed #{h.unit}":
            text = "unnamed"  # the # column shows the unit
        name = QTableWidgetItem(text)
        name.setData(UNIT_ROLE, h.unit)
        name.setToolTip(f"{h.name} — unit #{h.unit}" + {
            "proposed": "\nproposed by a namer, not yet reviewed",
            "flagged": "\nflagged by a reviewer", "accepted": "\naccepted by a reviewer",
            "edited": "\nnamed by a reviewer"}.get(h.status, ""))
        if h.status in ("", "rejected") or h.name.startswith("unnamed"):
            name.setForeground(QColor("#7d8696"))
        elif h.status in ("proposed", "flagged"):
            f = QFont(name.font())
            f.setItalic(True)
            name.setFont(f)
            name.setForeground(QColor("#e0a526" if h.status == "flagged" else "#b8c2d0"))
        act = QTableWidgetItem(f"{h.activation:.3g}")
        act.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        pct_text = "—" if h.percentile is None else f"{h.percentile:.1f}%"
        pct = QTableWidgetItem(pct_text)
        pct.setData(PCT_ROLE, math.nan if h.percentile is None else float(h.percentile))
        pct.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        pct.setToolTip("share of the population (embedding cache) with a lower activation"
                       if h.percentile is not None else "no population cache loaded")
        for c, it in enumerate((sw, unit, name, act, pct)):
            self.setItem(r, c, it)

    def _emit_selection(self) -> None:
        self.selection_changed.emit(self.selected_units())
