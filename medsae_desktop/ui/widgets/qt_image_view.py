"""The radiograph canvas: 8-bit image, heat-map overlay layer, zoom/pan and window/level drag.

Composition of pyqtgraph items (no ``ImageView`` subclass): one ``ViewBox`` (aspect locked,
y down) holding the grayscale ``ImageItem`` and, above it, an RGBA overlay ``ImageItem``.
Both live in image-pixel coordinates, so the overlay follows zoom and pan exactly, and window
changes replace only the grayscale pixels, never the overlay (the failure OHIF users
reported: heat maps painted into the canvas vanishing on every W/L or zoom change).

Mouse: wheel = zoom at the cursor, left drag = pan, right drag = window/level (horizontal:
width, vertical: centre). Corner labels show the window, the zoom and the cursor pixel.
"""

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QLabel, QStackedLayout, QVBoxLayout, QWidget

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


class _WindowingViewBox(pg.ViewBox):
    """ViewBox whose right-button drag reports window/level changes instead of zooming."""

    def __init__(self, owner: "QtImageView") -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._owner = owner

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - pyqtgraph API
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            if ev.isStart():
                self._owner.window_drag_started.emit()
            d = ev.screenPos() - ev.lastScreenPos()
            self._owner.window_dragged.emit(float(d.x()), float(d.y()))
            if ev.isFinish():
                self._owner.window_drag_finished.emit()
            return
        super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev):  # noqa: N802 - pyqtgraph API
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()  # no context menu: right button is window/level
            return
        super().mouseClickEvent(ev)


class QtImageView(QWidget):
    """Canvas for one 8-bit radiograph and an optional RGBA overlay.

    Signals
    -------
    window_dragged(float, float)
        Right-drag motion in screen pixels (dx, dy).
    window_drag_started(), window_drag_finished()
        Start and end of a right drag.
    hovered(int, int)
        Image pixel (row, column) under the cursor, or (-1, -1) outside the image.
    view_changed()
        Zoom or pan changed.
    files_dropped(list)
        Local paths dropped on the canvas.
    """

    window_dragged = Signal(float, float)
    window_drag_started = Signal()
    window_drag_finished = Signal()
    hovered = Signal(int, int)
    view_changed = Signal()
    files_dropped = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self._shape: tuple[int, int] | None = None
        self.graphics = pg.GraphicsView(background="#000000")
        self.graphics.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.graphics.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.vb = _WindowingViewBox(self)
        self.vb.setDefaultPadding(0.02)
        self.graphics.setCentralItem(self.vb)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(10)
        self.vb.addItem(self.image_item)
        self.vb.addItem(self.overlay_item)
        self.vb.sigRangeChanged.connect(self._on_range)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse)
        self._overlay_opacity = 0.6
        self._overlay_visible = True

        self.placeholder = QLabel(
            "Open a study — File ▸ Open (Ctrl+O) — or drop a DICOM / PNG file or a folder here")
        self.placeholder.setObjectName("placeholder")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)

        self._stack = QStackedLayout()
        self._stack.addWidget(self.placeholder)
        self._stack.addWidget(self.graphics)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self._stack)

        # radiology-style corner annotations (never identifying data)
        self.corner_tl = self._corner()
        self.corner_bl = self._corner()
        self.corner_br = self._corner()
        self.corner_tr = self._corner()

    def _corner(self) -> QLabel:
        lab = QLabel(self.graphics)
        # a translucent dark plate keeps the text legible over bright radiographs
        lab.setStyleSheet("color: #e6d9a8; background: rgba(0, 0, 0, 150); font-size: 9pt;"
                          "padding: 1px 4px; border-radius: 2px;")
        lab.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        return lab

    # ---- image ----------------------------------------------------------------------------
    @property
    def has_image(self) -> bool:
        """Whether an image is shown."""
        return self._shape is not None

    def set_image(self, gray_hw: np.ndarray, *, keep_view: bool = False) -> None:
        """Show an 8-bit image; a new size resets the view to fit."""
        gray_hw = np.ascontiguousarray(gray_hw, dtype=np.uint8)
        new_shape = gray_hw.shape[:2]
        self.image_item.setImage(gray_hw, autoLevels=False, levels=(0, 255))
        if self._shape != new_shape or not keep_view:
            self._shape = (int(new_shape[0]), int(new_shape[1]))
            self.clear_overlay()
            self.fit()
        self._stack.setCurrentWidget(self.graphics)
        self._place_corners()

    def update_pixels(self, gray_hw: np.ndarray) -> None:
        """Replace the grayscale pixels (new window), keeping view and overlay."""
        assert self._shape == gray_hw.shape[:2], "update_pixels needs the same image size"
        self.image_item.updateImage(np.ascontiguousarray(gray_hw, dtype=np.uint8))

    def clear(self) -> None:
        """Remove image and overlay; show the placeholder."""
        self.image_item.clear()
        self.clear_overlay()
        self._shape = None
        self._stack.setCurrentWidget(self.placeholder)

    # ---- overlay --------------------------------------------------------------------------
    def set_overlay(self, rgba_hw4: np.ndarray | None, step: int = 1) -> None:
        """Show an RGBA overlay (None removes it).

        ``rgba_hw4`` covers the image with one pixel per ``step x step`` block (the overlay
        grid of :func:`medsae_desktop.core.inspection.overlay_step`); it is placed so that
        each pixel lies exactly on its block.
        """
        if rgba_hw4 is None:
            self.clear_overlay()
            return
        assert self._shape is not None, "no image"
        h, w = self._shape
        oh, ow = rgba_hw4.shape[:2]
        assert (oh, ow) == (-(-h // step), -(-w // step)), (
            f"overlay {rgba_hw4.shape} does not match the image {self._shape} at step {step}")
        self.overlay_item.setImage(np.ascontiguousarray(rgba_hw4), autoLevels=False,
                                   levels=None)
        self.overlay_item.setRect(QRectF(0, 0, ow * step, oh * step))
        self.overlay_item.setOpacity(self._overlay_opacity)
        self.overlay_item.setVisible(self._overlay_visible)

    def clear_overlay(self) -> None:
        """Remove the overlay."""
        self.overlay_item.clear()

    @property
    def has_overlay(self) -> bool:
        """Whether an overlay image is set."""
        return self.overlay_item.image is not None

    def set_overlay_opacity(self, opacity: float) -> None:
        """Opacity of the whole overlay layer (0..1)."""
        self._overlay_opacity = float(np.clip(opacity, 0.0, 1.0))
        self.overlay_item.setOpacity(self._overlay_opacity)

    def set_overlay_visible(self, visible: bool) -> None:
        """Show or hide the overlay layer without dropping it."""
        self._overlay_visible = bool(visible)
        self.overlay_item.setVisible(self._overlay_visible)

    # ---- view -----------------------------------------------------------------------------
    def fit(self) -> None:
        """Fit the whole image in the view."""
        if self._shape is None:
            return
        h, w = self._shape
        self.vb.setRange(QRectF(0, 0, w, h), padding=0.02)

    def zoom_by(self, factor: float) -> None:
        """Zoom about the view centre (factor > 1 zooms in)."""
        self.vb.scaleBy((1 / factor, 1 / factor))

    def one_to_one(self) -> None:
        """One image pixel per screen pixel, centred on the current view."""
        if self._shape is None:
            return
        r = self.vb.viewRect()
        c = r.center()
        size = self.vb.size()
        w, h = size.width(), size.height()
        self.vb.setRange(QRectF(c.x() - w / 2, c.y() - h / 2, w, h), padding=0)

    def zoom_percent(self) -> float:
        """Screen pixels per image pixel x 100."""
        r = self.vb.viewRect()
        if r.width() <= 0:
            return 100.0
        return 100.0 * self.vb.width() / r.width()

    def visible_rect(self) -> tuple[int, int, int, int] | None:
        """Visible part of the image as (row0, col0, row1, col1), end-exclusive."""
        if self._shape is None:
            return None
        h, w = self._shape
        r = self.vb.viewRect()
        c0 = int(np.clip(np.floor(r.left()), 0, w))
        c1 = int(np.clip(np.ceil(r.right()), 0, w))
        r0 = int(np.clip(np.floor(r.top()), 0, h))
        r1 = int(np.clip(np.ceil(r.bottom()), 0, h))
        if r1 <= r0 or c1 <= c0:
            return 0, 0, h, w
        return r0, c0, r1, c1

    def set_corner_text(self, *, top_left: str | None = None, bottom_left: str | None = None,
                        bottom_right: str | None = None, top_right: str | None = None) -> None:
        """Corner annotations (never identifying data)."""
        for lab, text in ((self.corner_tl, top_left), (self.corner_bl, bottom_left),
                          (self.corner_br, bottom_right), (self.corner_tr, top_right)):
            if text is not None:
                lab.setText(text)
                lab.adjustSize()
                lab.setVisible(bool(text))
        self._place_corners()

    # ---- events ---------------------------------------------------------------------------
    def _place_corners(self) -> None:
        g = self.graphics.rect()
        m = 8
        self.corner_tl.move(m, m)
        self.corner_tr.move(g.width() - self.corner_tr.width() - m, m)
        self.corner_bl.move(m, g.height() - self.corner_bl.height() - m)
        self.corner_br.move(g.width() - self.corner_br.width() - m,
                            g.height() - self.corner_br.height() - m)

    def resizeEvent(self, ev):  # noqa: N802 - Qt API
        super().resizeEvent(ev)
        self._place_corners()

    def _on_range(self, *args: object) -> None:
        self.view_changed.emit()

    def _on_mouse(self, pos: QPointF) -> None:
        if self._shape is None:
            return
        p = self.vb.mapSceneToView(pos)
        r, c = int(np.floor(p.y())), int(np.floor(p.x()))
        h, w = self._shape
        if 0 <= r < h and 0 <= c < w:
            self.hovered.emit(r, c)
        else:
            self.hovered.emit(-1, -1)

    def dragEnterEvent(self, ev):  # noqa: N802 - Qt API
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):  # noqa: N802 - Qt API
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.files_dropped.emit(paths)
