"""Look of the application: dark palette, stylesheet and SVG icons from ``resources/``.

A dark, low-luminance theme suits radiology reading rooms. Colours used from Python (plots,
swatches) are defined here once; the stylesheet ``resources/style.qss`` uses the same values.
"""

import functools
import logging
from pathlib import Path

from PySide6.QtGui import QColor, QFont, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from medsae_desktop.paths import bundled_dir

logger = logging.getLogger(__name__)

BACKGROUND = "#16191e"
PANEL = "#1c2027"
BORDER = "#262b33"
TEXT = "#d5dae3"
MUTED = "#7d8696"
ACCENT = "#3fa7d6"
WARNING = "#f3c450"
#: plot pens of the trainer curves
CURVE_COLOURS = {"loss": "#3fa7d6", "fvu": "#f26b3a", "l0": "#7bd88f", "dead": "#e0a526"}


def resources_dir() -> Path:
    """The ``resources/`` folder (checkout or installed package; see ``paths.bundled_dir``)."""
    return bundled_dir("resources")


@functools.lru_cache(maxsize=64)
def icon(name: str) -> QIcon:
    """Icon ``resources/icons/<name>.svg`` (an empty icon when missing)."""
    path = resources_dir() / "icons" / f"{name}.svg"
    if not path.is_file():
        logger.debug("icon %s not found", path)
        return QIcon()
    return QIcon(str(path))


def apply_theme(app: QApplication) -> None:
    """Set the Fusion style, the dark palette and the stylesheet on ``app``."""
    app.setStyle("Fusion")
    pal = QPalette()
    c = QColor
    pal.setColor(QPalette.ColorRole.Window, c(BACKGROUND))
    pal.setColor(QPalette.ColorRole.WindowText, c(TEXT))
    pal.setColor(QPalette.ColorRole.Base, c("#121418"))
    pal.setColor(QPalette.ColorRole.AlternateBase, c("#171a20"))
    pal.setColor(QPalette.ColorRole.ToolTipBase, c("#262b33"))
    pal.setColor(QPalette.ColorRole.ToolTipText, c("#e8ecf2"))
    pal.setColor(QPalette.ColorRole.Text, c(TEXT))
    pal.setColor(QPalette.ColorRole.Button, c("#232830"))
    pal.setColor(QPalette.ColorRole.ButtonText, c(TEXT))
    pal.setColor(QPalette.ColorRole.Highlight, c("#24536b"))
    pal.setColor(QPalette.ColorRole.HighlightedText, c("#f2f6fa"))
    pal.setColor(QPalette.ColorRole.Link, c(ACCENT))
    pal.setColor(QPalette.ColorRole.PlaceholderText, c("#5f6775"))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText,
                 QPalette.ColorRole.WindowText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, c("#5f6775"))
    app.setPalette(pal)
    qss = resources_dir() / "style.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    else:
        logger.warning("stylesheet %s not found; using the plain dark palette", qss)
    f = QFont(app.font())
    f.setPointSizeF(max(f.pointSizeF(), 9.5))
    app.setFont(f)
    app.setWindowIcon(icon("app"))
