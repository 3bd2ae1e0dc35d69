"""Colour bar / legend of the heat-map overlays.

One entry per shown feature: its name and a horizontal ramp from "no contribution"
(transparent, i.e. the radiograph) to the top of its colour table, labelled with the value
range in SAE pre-activation units. One feature uses the chosen colour map; several features get
one colour each (see :func:`medsae_desktop.core.inspection.feature_luts`).
"""

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QImage, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


@dataclass(frozen=True)
class LegendEntry:
    """One overlay shown: display name, colour table (256, 3) uint8 and its value range."""

    name: str
    lut: np.ndarray
    vmax: float
    vmin: float = 0.0


def ramp_image(lut: np.ndarray, opacity: float, width: int = 256, height: int = 1) -> QImage:
    """The overlay colours over a mid-grey background, as the overlay would look on a radiograph.

    Uses the same alpha rule as the overlay (:func:`medsae_desktop.core.inspection.alpha_ramp`).
    """
    from medsae_desktop.core.inspection import alpha_ramp

    t = np.linspace(0, 1, width)
    idx = (t * 255 + 0.5).astype(int)
    alpha = alpha_ramp(t) * opacity
    base = np.full((width, 3), 90.0)
    rgb = lut[idx].astype(float) * alpha[:, None] + base * (1 - alpha[:, None])
    row = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    arr = np.ascontiguousarray(np.repeat(row[None], height, axis=0))
    img = QImage(arr.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return img.copy()


class QtColourBar(QWidget):
    """Legend of the overlays currently shown (paints itself; no child widgets)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: list[LegendEntry] = []
        self._opacity = 0.6
        self._title = "Contribution map (SAE pre-activation per location)"
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setVisible(False)

    def set_entries(self, entries: list[LegendEntry], opacity: float | None = None) -> None:
        """Replace the legend (empty hides it)."""
        self._entries = list(entries)
        if opacity is not None:
            self._opacity = float(opacity)
        self.setVisible(bool(self._entries))
        self.updateGeometry()
        self.update()

    def set_opacity(self, opacity: float) -> None:
        """Match the overlay opacity."""
        self._opacity = float(opacity)
        self.update()

    @property
    def entries(self) -> list[LegendEntry]:
        """Entries shown."""
        return list(self._entries)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(320, 26 + 34 * max(1, len(self._entries)))

    def paintEvent(self, ev):  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#121418"))
        paint_legend(p, QRectF(self.rect()).adjusted(8, 4, -8, -4), self._entries,
                     self._opacity, self._title)
        p.end()


def paint_legend(p: QPainter, rect: QRectF, entries: list[LegendEntry], opacity: float,
                 title: str, text_colour: str = "#d5dae3", muted: str = "#8a93a3") -> None:
    """Paint a legend into ``rect`` (also used by the PNG/PDF exports)."""
    f = QFont(p.font())
    f.setPointSizeF(8.5)
    p.setFont(f)
    fm = p.fontMetrics()
    line = fm.height()
    p.setPen(QPen(QColor(muted)))
    p.drawText(QRectF(rect.left(), rect.top(), rect.width(), line),
               Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
    y = rect.top() + line + 4
    row_h = max(30.0, (rect.height() - line - 4) / max(1, len(entries)))
    name_w = min(rect.width() * 0.42, 190.0)
    for e in entries:
        p.setPen(QPen(QColor(text_colour)))
        name = fm.elidedText(e.name, Qt.TextElideMode.ElideRight, int(name_w) - 6)
        p.drawText(QRectF(rect.left(), y, name_w, 14), Qt.AlignmentFlag.AlignLeft |
                   Qt.AlignmentFlag.AlignVCenter, name)
        bar = QRectF(rect.left() + name_w, y + 1, rect.width() - name_w, 11)
        p.drawImage(bar, ramp_image(e.lut, opacity))
        p.setPen(QPen(QColor("#3a414d")))
        p.drawRect(bar)
        p.setPen(QPen(QColor(muted)))
        mid = (e.vmin + e.vmax) / 2
        for frac, text in ((0.0, _fmt(e.vmin)), (0.5, _fmt(mid)), (1.0, _fmt(e.vmax))):
            x = bar.left() + frac * bar.width()
            p.drawLine(int(x), int(bar.bottom()), int(x), int(bar.bottom() + 3))
            tw = fm.horizontalAdvance(text)
            tx = min(max(x - tw / 2, bar.left()), bar.right() - tw)
            p.drawText(int(tx), int(bar.bottom() + 3 + fm.ascent()), text)
        y += row_h


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def gradient_for(lut: np.ndarray) -> QLinearGradient:
    """A QLinearGradient of a colour table (0..1 along x)."""
    g = QLinearGradient(0, 0, 1, 0)
    for i in range(0, 256, 32):
        r, gg, b = (int(x) for x in lut[i])
        g.setColorAt(i / 255, QColor(r, gg, b))
    return g
