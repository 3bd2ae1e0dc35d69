"""Label correlations of one unit as a sorted, diverging bar list (one readable row per label).

Bars above the alive threshold (|ρ| > 0.2, DESIGN.md §5.3) are highlighted.
"""

import math

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

ROW_H = 17
ALIVE = 0.2


class QtCorrelationBars(QWidget):
    """Paints ``label  |bar|  ρ`` rows, strongest positive first."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[str, float]] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(120)

    def set_values(self, labels: list[str] | tuple[str, ...], rho_c: np.ndarray | None) -> None:
        """Show ρ per label (None clears)."""
        if rho_c is None or not len(labels):
            self._rows = []
        else:
            vals = [0.0 if math.isnan(float(v)) else float(v) for v in rho_c]
            self._rows = sorted(zip(labels, vals, strict=True), key=lambda r: -r[1])
        self.setMinimumHeight(max(120, self.row_height() * len(self._rows) + 8))
        self.updateGeometry()
        self.update()

    @property
    def rows(self) -> list[tuple[str, float]]:
        """(label, ρ) shown, in order."""
        return list(self._rows)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(300, max(120, self.row_height() * len(self._rows) + 8))

    def row_height(self) -> int:
        """Pixels per label row."""
        return max(ROW_H, self.fontMetrics().height() + 2)

    def paintEvent(self, ev):  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#121418"))
        if not self._rows:
            p.setPen(QPen(QColor("#6b7483")))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no labels in the cache")
            p.end()
            return
        fm = p.fontMetrics()
        label_w = min(max(fm.horizontalAdvance(lab) for lab, _ in self._rows) + 8,
                      int(self.width() * 0.45))
        val_w = fm.horizontalAdvance("-0.000") + 6
        x0 = label_w + 4
        bar_w = max(20, self.width() - x0 - val_w - 6)
        lo = min(-0.1, min(v for _, v in self._rows))
        hi = max(0.5, max(v for _, v in self._rows))
        zero = x0 + bar_w * (-lo) / (hi - lo)
        row_h = max(ROW_H, fm.height() + 2)
        y = 4
        for lab, v in self._rows:
            p.setPen(QPen(QColor("#c4cad4")))
            p.drawText(QRectF(0, y, label_w, row_h), Qt.AlignmentFlag.AlignRight
                       | Qt.AlignmentFlag.AlignVCenter,
                       fm.elidedText(lab, Qt.TextElideMode.ElideRight, label_w - 4))
            x = x0 + bar_w * (v - lo) / (hi - lo)
            colour = "#f26b3a" if v > ALIVE else ("#3fa7d6" if v >= 0 else "#6b7483")
            p.fillRect(QRectF(min(x, zero), y + 3, abs(x - zero), row_h - 6), QColor(colour))
            p.setPen(QPen(QColor("#9aa3b2")))
            p.drawText(QRectF(x0 + bar_w + 4, y, val_w, row_h), Qt.AlignmentFlag.AlignLeft
                       | Qt.AlignmentFlag.AlignVCenter, f"{v:+.3f}")
            y += row_h
        p.setPen(QPen(QColor("#4a5361")))
        p.drawLine(int(zero), 2, int(zero), y)
        thr = x0 + bar_w * (ALIVE - lo) / (hi - lo)
        pen = QPen(QColor("#5c4410"))
        pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.drawLine(int(thr), 2, int(thr), y)
        p.end()
