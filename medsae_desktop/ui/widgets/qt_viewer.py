"""Viewer tab (clinician): a study, its window/level, its top SAE features and their overlays.

Flow: :meth:`QtViewer.open_study` reads the file on a worker ("io" lane) → the image shows at
its default window → once models are loaded, encoder + SAE run on a worker ("model" lane,
:func:`medsae_desktop.core.inspection.inspect_image`) → the top features are listed and the
strongest one is selected → its overlay is computed on a worker ("overlay" lane) and shown.
Every step checks a per-study token so a late result of a previous study is dropped.

Window/level renders on the GUI thread with :func:`medsae_desktop.core.images.apply_window`
(about 10-20 ms for a 2k x 2k radiograph), coalesced so at most one render per event-loop turn.
"""

import datetime as _dt
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QSpinBox,
    QSplitter,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop import __version__
from medsae_desktop.core import inspection as ins
from medsae_desktop.ui.tasks import TaskRunner
from medsae_desktop.ui.theme import icon
from medsae_desktop.ui.widgets.qt_colour_bar import LegendEntry, QtColourBar
from medsae_desktop.ui.widgets.qt_feature_list import QtFeatureList
from medsae_desktop.ui.widgets.qt_header_panel import QtHeaderPanel
from medsae_desktop.ui.widgets.qt_image_view import QtImageView
from medsae_desktop.ui.widgets.qt_card import make_card

logger = logging.getLogger(__name__)

CMAPS = ("inferno", "magma", "viridis", "turbo", "hot", "jet")
#: image file suffixes the study list picks up from a dropped folder
STUDY_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ""}
#: features kept in the ranking (the list shows the first top_n)
RANK_KEEP = 200


def _read_study(path: str) -> Any:
    from medsae_desktop.core.images import read_image

    return read_image(path)


def _inspect(image: Any, encoder: Any, sae: Any, population: Any, names: Any) -> Any:
    return ins.inspect_image(image, encoder, sae, population=population, names=names,
                             top_n=RANK_KEEP)


def _overlay(inspection: Any, image: Any, units: list[int], cmap: str) -> Any:
    return ins.overlay_for(inspection, image, units, cmap=cmap, opacity=1.0)


def _card(title: str, body: QWidget, extra: QWidget | None = None) -> QFrame:
    return make_card(title, body, extra)


class QtViewer(QWidget):
    """The Viewer tab.

    Signals
    -------
    study_opened(str)
        A study is displayed (path).
    features_listed(object)
        The :class:`~medsae_desktop.core.inspection.Inspection` of the study is listed.
    overlay_shown(list)
        Overlays of these units are displayed (empty list: none).
    failed(str)
        One-line error for the main window to show.
    status(str)
        Short status line.
    """

    study_opened = Signal(str)
    features_listed = Signal(object)
    overlay_shown = Signal(list)
    failed = Signal(str)
    status = Signal(str)

    def __init__(self, state: Any, runner: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.image: Any = None
        self.window: Any = None
        self.inspection: ins.Inspection | None = None
        self.layers: list[ins.OverlayLayer] = []
        self.merged_rgba: np.ndarray | None = None
        self.shown_units: list[int] = []
        self.study_path: str | None = None
        self.open_to_overlay_s: float | None = None
        self._token = 0
        self._t_open = 0.0
        self._auto_select = True
        self._render_pending = False
        self._drag_t = 0.0
        self._presets: list[Any] = []

        self.view = QtImageView()
        self.view.window_dragged.connect(self._on_window_drag)
        self.view.hovered.connect(self._on_hover)
        self.view.view_changed.connect(self._update_corners)
        self.view.files_dropped.connect(self.open_paths)
        self.legend = QtColourBar()

        self.features = QtFeatureList()
        self.features.selection_changed.connect(self._on_selection)
        self.features_note = QLabel("")
        self.features_note.setObjectName("muted")
        self.features_note.setWordWrap(True)
        self.header = QtHeaderPanel()

        self.study_list = QListWidget()
        self.study_list.setVisible(False)
        self.study_list.setMaximumWidth(220)
        self.study_list.itemActivated.connect(lambda it: self.open_study(it.data(
            Qt.ItemDataRole.UserRole)))
        self.study_list.itemClicked.connect(lambda it: self.open_study(it.data(
            Qt.ItemDataRole.UserRole)))

        self.toolbar = self._make_toolbar()

        feats_body = QWidget()
        fl = QVBoxLayout(feats_body)
        fl.setContentsMargins(0, 0, 0, 0)
        fl.addWidget(self.features, 1)
        fl.addWidget(self.features_note)
        self.top_n = QSpinBox()
        self.top_n.setRange(1, 50)
        self.top_n.setValue(10)
        self.top_n.setPrefix("top ")
        self.top_n.setToolTip("How many of the strongest features to list")
        self.top_n.valueChanged.connect(self._rerank)

        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(_card("Features on this study", feats_body, self.top_n))
        side.addWidget(_card("Header", self.header))
        side.setStretchFactor(0, 3)
        side.setStretchFactor(1, 2)
        side.setMinimumWidth(340)

        centre = QWidget()
        cl = QVBoxLayout(centre)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        cl.addWidget(self.view, 1)
        cl.addWidget(self.legend)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.study_list)
        split.addWidget(centre)
        split.addWidget(side)
        split.setStretchFactor(1, 1)
        split.setSizes([0, 900, 420])
        self.splitter = split

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.toolbar)
        lay.addWidget(split, 1)

        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(0)
        self._render_timer.timeout.connect(self._render_window)

        state.models_changed.connect(self._on_models_changed)
        state.names_changed.connect(self._on_names_changed)
        state.model_state_changed.connect(lambda s: self._update_features_note())
        self._update_features_note()
        self._set_controls_enabled(False)

    # ---- toolbar --------------------------------------------------------------------------
    def _make_toolbar(self) -> QToolBar:
        tb = QToolBar()
        tb.setMovable(False)
        self.act_fit = tb.addAction(icon("fit"), "Fit", self.view.fit)
        self.act_fit.setToolTip("Fit image to view (F)")
        self.act_one = tb.addAction(icon("one-to-one"), "1:1", self.view.one_to_one)
        self.act_one.setToolTip("One image pixel per screen pixel (1)")
        self.act_zin = tb.addAction(icon("zoom-in"), "Zoom in", lambda: self.view.zoom_by(1.25))
        self.act_zin.setToolTip("Zoom in (+ or mouse wheel)")
        self.act_zout = tb.addAction(icon("zoom-out"), "Zoom out",
                                     lambda: self.view.zoom_by(0.8))
        self.act_zout.setToolTip("Zoom out (- or mouse wheel)")
        tb.addSeparator()
        tb.addWidget(QLabel(" Window "))
        self.preset = QComboBox()
        self.preset.setMinimumWidth(210)
        self.preset.setToolTip("Window presets stored in the file; right-drag on the image "
                               "adjusts window/level")
        self.preset.activated.connect(self._on_preset)
        tb.addWidget(self.preset)
        self.wc = QDoubleSpinBox()
        self.ww = QDoubleSpinBox()
        for sb, tip in ((self.wc, "Window centre (level)"), (self.ww, "Window width")):
            sb.setDecimals(1)
            sb.setRange(-1e7, 1e7)
            sb.setKeyboardTracking(False)
            sb.setToolTip(tip)
            sb.setMinimumWidth(86)
            sb.valueChanged.connect(self._on_spin_window)
        self.ww.setRange(1e-3, 1e7)
        tb.addWidget(QLabel(" C "))
        tb.addWidget(self.wc)
        tb.addWidget(QLabel(" W "))
        tb.addWidget(self.ww)
        self.act_reset_window = tb.addAction(icon("window"), "Reset window",
                                             self.reset_window)
        self.act_reset_window.setToolTip("Back to the file's default window (W)")
        tb.addSeparator()
        self.overlay_btn = QToolButton()
        self.overlay_btn.setIcon(icon("overlay"))
        self.overlay_btn.setText("Overlays")
        self.overlay_btn.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.overlay_btn.setCheckable(True)
        self.overlay_btn.setChecked(True)
        self.overlay_btn.setToolTip("Show or hide the heat-map overlays (O)")
        self.overlay_btn.toggled.connect(self.set_overlay_visible)
        tb.addWidget(self.overlay_btn)
        self.cmap = QComboBox()
        self.cmap.addItems(list(CMAPS))
        self.cmap.setToolTip("Colour map of a single overlay (several overlays get one colour "
                             "each)")
        self.cmap.currentTextChanged.connect(lambda _: self._request_overlay())
        tb.addWidget(self.cmap)
        tb.addWidget(QLabel(" Opacity "))
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(ins.DEFAULT_OPACITY * 100))
        self.opacity.setFixedWidth(110)
        self.opacity.setToolTip("Overlay opacity")
        self.opacity.valueChanged.connect(self._on_opacity)
        tb.addWidget(self.opacity)
        return tb

    def _set_controls_enabled(self, on: bool) -> None:
        for w in (self.preset, self.wc, self.ww, self.act_fit, self.act_one, self.act_zin,
                  self.act_zout, self.act_reset_window):
            w.setEnabled(on)

    # ---- opening --------------------------------------------------------------------------
    def open_paths(self, paths: list[str]) -> None:
        """Open dropped/selected paths: a folder fills the study list, a file opens."""
        files: list[str] = []
        for p in paths:
            if os.path.isdir(p):
                files.extend(self.set_study_folder(p))
            else:
                files.append(p)
        if files:
            self.open_study(files[0])

    def set_study_folder(self, folder: str) -> list[str]:
        """List the images of ``folder`` (recursive) in the study list; returns them."""
        from medsae_desktop.core.images import is_probably_image

        found: list[str] = []
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for n in sorted(names):
                p = os.path.join(root, n)
                if Path(n).suffix.lower() in STUDY_SUFFIXES and is_probably_image(p):
                    found.append(p)
            if len(found) > 5000:
                break
        self.study_list.clear()
        for p in found:
            it = QListWidgetItem(os.path.relpath(p, folder))
            it.setData(Qt.ItemDataRole.UserRole, p)
            it.setToolTip(p)
            self.study_list.addItem(it)
        self.study_list.setVisible(bool(found))
        if found:
            self.splitter.setSizes([200, 780, 420])
        else:
            self.failed.emit(f"{folder}: no DICOM/PNG/JPEG images found in this folder")
        return found

    def open_study(self, path: str) -> None:
        """Read ``path`` on a worker and show it; features follow when models are ready."""
        path = str(path)
        self._token += 1
        token = self._token
        self._t_open = time.perf_counter()
        self.open_to_overlay_s = None
        self._auto_select = True
        self.runner.cancel_lane("io")
        self.status.emit(f"opening {Path(path).name} …")
        self.runner.submit(_read_study, path, name=f"open {Path(path).name}", lane="io",
                           on_done=lambda img: self._on_study_read(token, path, img),
                           on_error=lambda msg: self._on_study_failed(token, msg))

    def _on_study_failed(self, token: int, msg: str) -> None:
        if token != self._token:
            return
        self.status.emit("could not open the study")
        self.failed.emit(msg)

    def _on_study_read(self, token: int, path: str, image: Any) -> None:
        if token != self._token:
            return
        self.image = image
        self.study_path = path
        self.window = None  # default render (VOI LUT or first window)
        self.inspection = None
        self.layers, self.merged_rgba, self.shown_units = [], None, []
        self.view.set_image(image.render_hw)
        self.legend.set_entries([])
        self.features.set_hits([])
        h = image.header
        self.header.set_header(h.fields, h.phi, tuple(dict.fromkeys(
            (*image.warnings, *h.warnings))))
        self._fill_presets()
        self._set_controls_enabled(True)
        self._update_corners()
        self.study_opened.emit(path)
        self.status.emit(f"{Path(path).name}: {image.render_hw.shape[1]}×"
                         f"{image.render_hw.shape[0]} {image.kind.upper()}")
        self._start_inspection()

    # ---- features -------------------------------------------------------------------------
    def _on_models_changed(self) -> None:
        self._update_features_note()
        if self.image is not None:
            self._start_inspection()

    def _start_inspection(self) -> None:
        st = self.state
        if self.image is None or not st.is_ready:
            self._update_features_note()
            return
        token = self._token
        self.features_note.setText("computing features …")
        self.runner.cancel_lane("model")
        self.runner.submit(
            _inspect, self.image, st.encoder, st.sae, st.population, dict(st.names()),
            name="features", lane="model",
            on_done=lambda res: self._on_inspected(token, res),
            on_error=lambda msg: self._on_inspect_failed(token, msg))

    def _on_inspect_failed(self, token: int, msg: str) -> None:
        if token != self._token:
            return
        self.features_note.setText("features could not be computed")
        self.failed.emit(msg)

    def _on_inspected(self, token: int, res: ins.Inspection) -> None:
        if token != self._token:
            return
        self.inspection = res
        hits = self._hits()
        select = ins.default_overlay_units(hits) if self._auto_select else []
        self.features.set_hits(hits, select=select)
        self._update_features_note()
        self.features_listed.emit(res)

    def _hits(self) -> list[ins.FeatureHit]:
        if self.inspection is None:
            return []
        return list(ins.top_hits(self.inspection.acts_s, self.top_n.value(),
                                 population=self.state.population, names=self.state.names()))

    def _rerank(self) -> None:
        if self.inspection is None:
            return
        keep = self.features.selected_units()
        self.features.set_hits(self._hits(), select=keep)

    def _on_names_changed(self, units: object) -> None:
        if self.inspection is None:
            return
        self.features.update_hits(self._hits())
        self._update_legend()

    def _update_features_note(self) -> None:
        st = self.state
        if st.model_state == "loading":
            text = "Models are loading — features will appear when they are ready."
        elif st.model_state == "error":
            text = f"Models not loaded: {st.model_error}"
        elif not st.is_ready:
            text = "No SAE loaded (Models ▸ Open SAE…)."
        elif self.image is None:
            text = "Open a study to see which features fire on it."
        elif self.inspection is None:
            text = "computing features …"
        else:
            n = int((self.inspection.acts_s > 0).sum())
            pop = st.population
            text = (f"{n} of {self.inspection.acts_s.shape[0]} features active; italic = "
                    "proposed name, not yet reviewed. Maps show where each feature's evidence "
                    "comes from (contribution map)")
            text += (f"; percentiles against {pop.n_images} cache images." if pop is not None
                     else "; no population cache, so no percentiles.")
        self.features_note.setText(text)

    # ---- overlays -------------------------------------------------------------------------
    def _on_selection(self, units: list[int]) -> None:
        self._request_overlay(units)

    def show_units(self, units: list[int]) -> None:
        """Show overlays of ``units`` (selecting them in the list when listed)."""
        self.features.select_units(units)

    def _request_overlay(self, units: list[int] | None = None) -> None:
        if units is None:
            units = self.features.selected_units()
        if self.inspection is None or self.image is None:
            return
        token = self._token
        if not units:
            self.runner.cancel_lane("overlay")
            self._set_overlay(token, [], ([], None))
            return
        self.runner.cancel_lane("overlay")
        self.runner.submit(_overlay, self.inspection, self.image, list(units),
                           self.cmap.currentText(), name="overlay", lane="overlay",
                           on_done=lambda res, u=list(units): self._set_overlay(token, u, res),
                           on_error=self.failed.emit)

    def _set_overlay(self, token: int, units: list[int], res: Any) -> None:
        if token != self._token:
            return
        layers, merged = res
        self.layers = list(layers)
        self.merged_rgba = merged
        self.shown_units = list(units)
        self.view.set_overlay(merged, ins.overlay_step(self.image.render_hw.shape))
        self.view.set_overlay_opacity(self.opacity.value() / 100)
        self._update_legend()
        if len(layers) > 1:
            colours = {lay.unit: tuple(int(x) for x in lay.lut[255]) for lay in layers}
        else:
            colours = {lay.unit: tuple(int(x) for x in lay.lut[200]) for lay in layers}
        self.features.set_swatches(colours)
        if units and self.open_to_overlay_s is None:
            self.open_to_overlay_s = time.perf_counter() - self._t_open
            self.status.emit(f"study to overlay in {self.open_to_overlay_s:.2f} s")
        self.overlay_shown.emit(list(units))

    def _update_legend(self) -> None:
        entries = [LegendEntry(self.state.display_name(lay.unit), lay.lut, lay.vmax, lay.vmin)
                   for lay in self.layers]
        self.legend.set_entries(entries, self.opacity.value() / 100)

    def _on_opacity(self, value: int) -> None:
        self.view.set_overlay_opacity(value / 100)
        self.legend.set_opacity(value / 100)

    def set_overlay_visible(self, on: bool) -> None:
        """Show/hide all overlays (keeps the selection)."""
        self.overlay_btn.blockSignals(True)
        self.overlay_btn.setChecked(on)
        self.overlay_btn.blockSignals(False)
        self.view.set_overlay_visible(on)
        self.legend.setVisible(on and bool(self.layers))

    def toggle_overlays(self) -> None:
        """Keyboard O."""
        self.set_overlay_visible(not self.overlay_btn.isChecked())

    # ---- window / level -------------------------------------------------------------------
    def _fill_presets(self) -> None:
        from medsae_desktop.core.images import Window

        img = self.image
        self.preset.blockSignals(True)
        self.preset.clear()
        label = "Default (VOI LUT)" if img.voi_lut is not None else \
            f"Default — {img.default_window.explanation or 'file'}"
        # presets live in a Python list, not in item data (see qt_feature_list: PySide6
        # mishandles None item data)
        self._presets: list[Any] = [None]
        self.preset.addItem(label)
        for w in img.windows:
            self.preset.addItem(f"{w.explanation or 'window'}  C {w.center:g} W {w.width:g}")
            self._presets.append(w)
        lo, hi = img.value_range
        if hi > lo:
            self.preset.addItem("Full range")
            self._presets.append(Window((lo + hi) / 2, hi - lo, "full range"))
        self.preset.addItem("Custom")
        self._presets.append("custom")
        self.preset.setCurrentIndex(0)
        self.preset.blockSignals(False)
        self._sync_spins()

    def effective_window(self) -> Any:
        """The window in use (the default one when the file's VOI LUT renders)."""
        return self.window if self.window is not None else self.image.default_window

    def window_label(self) -> str:
        """Window as text for corners and provenance."""
        if self.image is None:
            return ""
        if self.window is None and self.image.voi_lut is not None:
            return "VOI LUT (file)"
        w = self.effective_window()
        return f"C {w.center:.6g} W {w.width:.6g}"

    def _sync_spins(self) -> None:
        w = self.effective_window()
        for sb, v in ((self.wc, w.center), (self.ww, w.width)):
            sb.blockSignals(True)
            sb.setValue(float(v))
            sb.blockSignals(False)
        lo, hi = self.image.value_range
        step = max((hi - lo) / 200, 1e-3)
        self.wc.setSingleStep(step)
        self.ww.setSingleStep(step)

    def set_window(self, window: Any) -> None:
        """Apply a window (None = the file's default render)."""
        if self.image is None:
            return
        self.window = window
        self._sync_spins()
        self._schedule_render()

    def reset_window(self) -> None:
        """Back to the default render."""
        if self.image is None:
            return
        self.preset.setCurrentIndex(0)
        self.set_window(None)

    def _on_preset(self, index: int) -> None:
        data = self._presets[index] if 0 <= index < len(self._presets) else "custom"
        if data == "custom":
            return
        self.set_window(data)

    def _on_spin_window(self) -> None:
        from medsae_desktop.core.images import Window

        if self.image is None:
            return
        self._to_custom()
        self.window = Window(self.wc.value(), max(self.ww.value(), 1e-3), "custom")
        self._schedule_render()

    def _to_custom(self) -> None:
        self.preset.blockSignals(True)
        self.preset.setCurrentIndex(self.preset.count() - 1)
        self.preset.blockSignals(False)

    def _on_window_drag(self, dx: float, dy: float) -> None:
        from medsae_desktop.core.images import Window

        if self.image is None:
            return
        lo, hi = self.image.value_range
        span = max(hi - lo, 1.0)
        w = self.effective_window()
        sens = span / 600.0  # one screen pixel of drag = 1/600 of the value range
        width = max(w.width + dx * sens, span / 1000)
        centre = w.center + dy * sens
        self._to_custom()
        self.window = Window(centre, width, "custom")
        self._sync_spins()
        self._schedule_render()

    def _schedule_render(self) -> None:
        if not self._render_timer.isActive():
            self._render_timer.start()

    def _render_window(self) -> None:
        from medsae_desktop.core.errors import MedsaeError
        from medsae_desktop.core.images import apply_window

        if self.image is None:
            return
        try:
            gray = apply_window(self.image, self.window)
        except MedsaeError as exc:
            self.failed.emit(str(exc))
            return
        self.view.update_pixels(gray)
        self._update_corners()

    def current_render(self) -> np.ndarray:
        """The 8-bit image at the current window (what the canvas shows)."""
        from medsae_desktop.core.images import apply_window

        return apply_window(self.image, self.window)

    # ---- corners / hover ------------------------------------------------------------------
    def _update_corners(self) -> None:
        if self.image is None:
            return
        h, w = self.image.render_hw.shape
        self.view.set_corner_text(
            top_left=f"{Path(self.study_path or '').name}\n{w}×{h} {self.image.kind.upper()}",
            bottom_left=f"{self.window_label()}\nZoom {self.view.zoom_percent():.0f}%",
            top_right="RESEARCH USE ONLY")

    def _on_hover(self, r: int, c: int) -> None:
        if self.image is None:
            return
        if r < 0:
            self.view.set_corner_text(bottom_right="")
            return
        v = float(self.image.display_hw[r, c])
        text = f"x {c}  y {r}  value {v:.6g}"
        if self.inspection is not None and self.shown_units:
            from medsae_desktop.core.encoders.preprocessing import letterbox_geometry

            h, w = self.image.render_hw.shape
            side, off_x, off_y = letterbox_geometry(h, w)
            gy, gx = self.inspection.grid
            cy = int(np.clip((r + off_y) * gy // side, 0, gy - 1))
            cx = int(np.clip((c + off_x) * gx // side, 0, gx - 1))
            val = float(self.inspection.map_77(self.shown_units[0])[cy, cx])
            text += f"\ncell ({cy},{cx}) contribution {val:.3g}"
        self.view.set_corner_text(bottom_right=text)

    # ---- export inputs --------------------------------------------------------------------
    def provenance(self) -> dict[str, str]:
        """What produced the current view (for export footers)."""
        st = self.state
        enc = st.encoder.info if st.encoder is not None else None
        ws = st.workspace
        out = {
            "app": f"medsae-desktop {__version__}",
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "window": self.window_label(),
            "study": Path(self.study_path or "").name,
        }
        if enc is not None:
            out["encoder"] = f"{enc.key} ({enc.label}; {enc.backend}, {enc.precision})"
            out["weights"] = f"sha256 {enc.weights_sha256[:16]}"
        if st.sae is not None:
            out["sae"] = f"{st.sae.sae_id[:16]} ({st.sae.arch}, {st.sae.d_sae} units)"
        if st.population is not None:
            out["population"] = f"{st.population.n_images} cache images"
        if ws is not None and ws.is_demo:
            out["demo"] = ("DEMONSTRATION: untrained demo encoder weights; SAE trained on "
                           "synthetic phantoms")
        return out

    def export_state(self) -> dict[str, Any]:
        """Everything an export needs, as plain data."""
        return {
            "gray": self.current_render(),
            "overlay": ins.scale_alpha(self.merged_rgba, self.opacity.value() / 100)
            if self.overlay_btn.isChecked() else None,
            "legend": [LegendEntry(self.state.display_name(lay.unit), lay.lut, lay.vmax, lay.vmin)
                       for lay in self.layers] if self.overlay_btn.isChecked() else [],
            "opacity": self.opacity.value() / 100,
            "rect": self.view.visible_rect(),
            "provenance": self.provenance(),
            "hits": self.features.hits(),
            "shown_units": list(self.shown_units),
        }
