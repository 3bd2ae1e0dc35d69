"""Features tab (annotator): every unit in a table; one unit's evidence and its name editor.

Left: search + status filter + the unit table. Right, for the selected unit: a gallery of its
top-activating cache images with its contribution map (click opens the image in the viewer),
its activation histogram over the cache (pyqtgraph), its label correlations, and the name
editor with history.

Keyboard-driven review: J/↓ next unit, K/↑ previous, A accept, R reject, G flag, E edit the
concept (Enter/Ctrl+Enter saves), P propose with the chosen namer. After a decision the
selection advances to the next unit, so hundreds of units can be reviewed without the mouse.
"""

import logging
import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QItemSelectionModel, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop.core import inspection as ins
from medsae_desktop.core.annotations import display_name
from medsae_desktop.ui.tasks import TaskRunner
from medsae_desktop.ui.widgets.qt_annotation_panel import QtAnnotationPanel
from medsae_desktop.ui.widgets.qt_correlation_bars import QtCorrelationBars
from medsae_desktop.ui.widgets.qt_card import make_card
from medsae_desktop.ui.widgets.qt_feature_table import (
    QtFeatureFilter,
    QtFeatureTableModel,
    UnitTable,
    unit_table,
)

logger = logging.getLogger(__name__)

GALLERY_N = 12
STATUS_FILTERS = ("all", "unnamed", "proposed", "accepted", "edited", "flagged", "rejected")


def _propose_labels(table: UnitTable, units: list[int]) -> list[dict[str, Any]]:
    from medsae_desktop.core.naming.label_namer import name_by_labels

    names = name_by_labels(table.corr_kc, list(table.label_names), units)
    return [{"unit": n.unit, "concept": n.concept, "description": n.description,
             "namer": n.namer, "score": None if math.isnan(n.score) else n.score}
            for n in names if n.concept]


def _propose_with_core(namer: str, folder: str, ws: Any, units: list[int]
                       ) -> Any:
    """vocab / medgemma through the core naming job (names a few units; heavy models)."""
    import tempfile

    from medsae_desktop.core.naming.jobs import NameConfig, name_units_job

    kw: dict[str, Any] = {}
    if namer == "medgemma":
        from medsae_desktop.core.naming.medgemma import MedGemmaConfig

        kw["medgemma"] = MedGemmaConfig(model_dir=folder)
        cfg = NameConfig(namer=namer, units=tuple(units), images_root=ws.images_root,
                         min_active=1)
    else:
        cfg = NameConfig(namer=namer, units=tuple(units), medclip_weights=folder)
    with tempfile.TemporaryDirectory() as tmp:
        res = yield from name_units_job(ws.cache_path, f"{tmp}/names.csv", sae_dir=ws.sae_dir,
                                        config=cfg, **kw)
    return [{"unit": n.unit, "concept": n.concept, "description": n.description,
             "namer": n.namer, "score": None if math.isnan(n.score) else n.score}
            for n in res.names if n.concept]


def rgb_to_qimage(rgb_hw3: np.ndarray) -> QImage:
    """uint8 (h, w, 3) → QImage (copied, owns its memory)."""
    a = np.ascontiguousarray(rgb_hw3, dtype=np.uint8)
    h, w, _ = a.shape
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class QtFeaturesTab(QWidget):
    """The Features tab.

    Signals
    -------
    open_image(str)
        Open this image in the viewer (gallery click).
    unit_selected(int)
        The unit shown on the right changed (-1: none).
    gallery_ready(int)
        Thumbnails of this unit are shown.
    failed(str), status(str)
        Messages for the main window.
    """

    open_image = Signal(str)
    unit_selected = Signal(int)
    gallery_ready = Signal(int)
    failed = Signal(str)
    status = Signal(str)

    def __init__(self, state: Any, runner: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.table_data: UnitTable | None = None
        self.unit: int | None = None
        self._gallery_token = 0

        # ---- left: search + table ----
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search units: name, label or #unit   (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.status_filter = QComboBox()
        self.status_filter.addItems(list(STATUS_FILTERS))
        self.hide_dead = QCheckBox("hide inactive")
        self.hide_dead.setChecked(True)
        self.model = QtFeatureTableModel(self)
        self.proxy = QtFeatureFilter(self)
        self.proxy.setSourceModel(self.model)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(3, Qt.SortOrder.DescendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(26)
        self.view.setAlternatingRowColors(True)
        self.view.setShowGrid(False)
        hh = self.view.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.search.textChanged.connect(self.proxy.set_text)
        self.status_filter.currentTextChanged.connect(self.proxy.set_status)
        self.hide_dead.toggled.connect(self.proxy.set_hide_dead)
        self.view.selectionModel().currentRowChanged.connect(self._on_current)
        self.summary = QLabel("")
        self.summary.setObjectName("muted")
        self.btn_propose_all = QPushButton("Propose names for unnamed units")
        self.btn_propose_all.setToolTip("Run the labels namer on every unit without a name "
                                        "(reviewed names are never overwritten)")
        self.btn_propose_all.clicked.connect(self.propose_all)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(8, 8, 4, 8)
        row = QHBoxLayout()
        row.addWidget(self.search, 1)
        row.addWidget(self.status_filter)
        row.addWidget(self.hide_dead)
        ll.addLayout(row)
        ll.addWidget(self.view, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.btn_propose_all)
        ll.addLayout(bottom)

        # ---- right: detail ----
        self.title = QLabel("Select a unit")
        self.title.setObjectName("sectionTitle")
        self.subtitle = QLabel("")
        self.subtitle.setObjectName("muted")
        self.subtitle.setWordWrap(True)
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.ViewMode.IconMode)
        self.gallery.setIconSize(QSize(132, 132))
        self.gallery.setGridSize(QSize(142, 160))
        self.gallery.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.gallery.setMovement(QListWidget.Movement.Static)
        self.gallery.setWrapping(True)
        self.gallery.setMinimumHeight(200)
        self.gallery.setToolTip("Top-activating cache images with this unit's contribution map; "
                                "click to open in the viewer")
        self.gallery.itemClicked.connect(self._on_thumb)
        self.gallery_note = QLabel("")
        self.gallery_note.setObjectName("muted")

        self.hist = pg.PlotWidget(background="#121418")
        self.hist.setMinimumHeight(150)
        self.hist.setLabel("bottom", "activation")
        self.hist.setLabel("left", "images")
        self.hist.showGrid(x=True, y=True, alpha=0.15)
        self.hist.setMouseEnabled(x=False, y=False)
        self.hist.hideButtons()
        self.hist_note = QLabel("")
        self.hist_note.setObjectName("muted")
        self.corr = QtCorrelationBars()
        self.corr.setToolTip("Pearson ρ of the unit's activation with each label over the "
                             "cache; orange: above the 0.2 alive threshold (dashed)")

        self.annot = QtAnnotationPanel(state)
        self.annot.decided.connect(self._on_decided)
        self.annot.propose_requested.connect(self.propose_unit)
        self.annot.failed.connect(self.failed.emit)
        self.advance = QCheckBox("advance to next unit after a decision")
        self.advance.setChecked(True)

        middle = QWidget()
        ml = QVBoxLayout(middle)
        ml.setContentsMargins(4, 8, 4, 8)
        ml.addWidget(self.title)
        ml.addWidget(self.subtitle)
        ml.addWidget(_card("Top-activating images", self.gallery, self.gallery_note), 5)
        ml.addWidget(_card("Activation over the cache", self.hist, self.hist_note), 2)
        corr_scroll = QScrollArea()
        corr_scroll.setWidgetResizable(True)
        corr_scroll.setFrameShape(QFrame.Shape.NoFrame)
        corr_scroll.setWidget(self.corr)
        ml.addWidget(_card("Label correlations (Pearson ρ)", corr_scroll), 3)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(4, 8, 8, 8)
        annot_box = QWidget()
        al = QVBoxLayout(annot_box)
        al.setContentsMargins(0, 0, 0, 0)
        al.addWidget(self.annot, 1)
        al.addWidget(self.advance)
        rl.addWidget(_card("Name", annot_box), 1)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(middle)
        split.addWidget(right)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 5)
        split.setStretchFactor(2, 3)
        split.setSizes([560, 560, 380])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)

        self._make_shortcuts()
        state.models_changed.connect(self.reload)
        state.names_changed.connect(self._on_names_changed)
        self.reload()

    # ---- keyboard -------------------------------------------------------------------------
    def _make_shortcuts(self) -> None:
        ctx = Qt.ShortcutContext.WidgetWithChildrenShortcut

        def sc(key: str, fn: Any) -> None:
            s = QShortcut(QKeySequence(key), self)
            s.setContext(ctx)
            s.activated.connect(fn)

        sc("J", self.next_unit)
        sc("K", self.previous_unit)
        sc("A", self.annot.accept)
        sc("R", self.annot.reject)
        sc("G", self.annot.flag)
        sc("P", lambda: self.propose_unit(self.annot.namer.currentText()))
        sc("E", self._focus_edit)
        sc("Ctrl+F", lambda: (self.search.setFocus(), self.search.selectAll()))
        sc("Escape", lambda: self.view.setFocus())

    def _focus_edit(self) -> None:
        self.annot.concept.setFocus()
        self.annot.concept.selectAll()

    def next_unit(self) -> None:
        """Select the next row of the (filtered, sorted) table."""
        self._step(+1)

    def previous_unit(self) -> None:
        """Select the previous row."""
        self._step(-1)

    def _step(self, d: int) -> None:
        n = self.proxy.rowCount()
        if n == 0:
            return
        cur = self.view.currentIndex()
        r = 0 if not cur.isValid() else min(max(cur.row() + d, 0), n - 1)
        self.select_row(r)

    def select_row(self, r: int) -> None:
        """Select row ``r`` of the visible table."""
        idx = self.proxy.index(r, 0)
        self.view.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows)
        self.view.scrollTo(idx)
        self.view.setFocus()

    def select_unit(self, unit: int) -> bool:
        """Select ``unit`` if it is visible in the table."""
        for r in range(self.proxy.rowCount()):
            if int(self.proxy.index(r, 0).data(Qt.ItemDataRole.DisplayRole)) == unit:
                self.select_row(r)
                return True
        return False

    def _on_decided(self, action: str) -> None:
        self.status.emit(f"unit #{self.unit}: {action}")
        if self.advance.isChecked() and action in ("accept", "reject", "flag", "edit"):
            self.next_unit()

    # ---- content --------------------------------------------------------------------------
    def reload(self) -> None:
        """Rebuild the table after new models."""
        st = self.state
        if st.sae is None:
            self.table_data = None
            self.model.set_table(None, {})
            self.summary.setText("No SAE loaded.")
            self._show_unit(None)
            return
        self.table_data = unit_table(st.report, st.population, st.sae.d_sae)
        self.model.set_table(self.table_data, st.names())
        self._update_summary()
        if self.unit is None and self.proxy.rowCount():
            self.select_row(0)
        elif self.unit is not None:
            self._show_unit(self.unit)

    def _update_summary(self) -> None:
        st = self.state
        if st.sae is None or self.table_data is None:
            return
        counts = st.store.count_by_status(st.sae.sae_id)
        named = sum(counts.values())
        self.summary.setText(
            f"{st.sae.d_sae} units · {self.proxy.rowCount()} shown · {named} named "
            f"({counts['accepted']} accepted, {counts['edited']} edited, {counts['flagged']} "
            f"flagged, {counts['rejected']} rejected) · stats: {self.table_data.source}")

    def _on_names_changed(self, units: object) -> None:
        self.model.set_names(self.state.names(), units if isinstance(units, list) else None)
        self._update_summary()
        if self.unit is not None and (units is None or self.unit in units):
            self.annot.refresh()
            self._update_title()

    def _on_current(self, current: Any, previous: Any) -> None:
        if not current.isValid():
            return
        unit = int(self.proxy.index(current.row(), 0).data(Qt.ItemDataRole.DisplayRole))
        self._show_unit(unit)

    def _update_title(self) -> None:
        if self.unit is None:
            self.title.setText("Select a unit")
            self.subtitle.setText("")
            return
        k = self.unit
        t = self.table_data
        self.title.setText(f"#{k} · {display_name(self.state.names().get(k), k)}")
        if t is not None and not math.isnan(float(t.frequency_k[k])):
            self.subtitle.setText(
                f"active on {100 * t.frequency_k[k]:.1f}% of images · mean {t.mean_k[k]:.3g} · "
                f"max {t.max_k[k]:.3g} · best label {t.best_label_k[k] or '—'} "
                f"(ρ {t.best_corr_k[k]:.3f}) · entropy {t.entropy_k[k]:.3f}"
                + ("" if math.isnan(float(t.ms_k[k])) else f" · MS {t.ms_k[k]:.3f}"))
        else:
            self.subtitle.setText("no statistics (load an embedding cache)")

    def _show_unit(self, unit: int | None) -> None:
        self.unit = unit
        self.annot.set_unit(unit)
        self._update_title()
        self._plot_hist(unit)
        self._plot_corr(unit)
        self._load_gallery(unit)
        self.unit_selected.emit(-1 if unit is None else unit)

    def _plot_hist(self, unit: int | None) -> None:
        self.hist.clear()
        pop = self.state.population
        if unit is None or pop is None:
            self.hist_note.setText("")
            return
        edges, counts, n_zero = pop.histogram(unit, bins=40)
        if counts.sum() > 0:
            bars = pg.BarGraphItem(x0=edges[:-1], x1=edges[1:], height=counts,
                                   brush=pg.mkBrush("#3fa7d6"), pen=pg.mkPen("#2f86b0"))
            self.hist.addItem(bars)
        self.hist_note.setText(f"inactive on {n_zero} of {pop.n_images}")

    def _plot_corr(self, unit: int | None) -> None:
        t = self.table_data
        if unit is None or t is None or not t.label_names:
            self.corr.set_values((), None)
            return
        self.corr.set_values(t.label_names, np.asarray(t.corr_kc[unit], float))

    # ---- gallery --------------------------------------------------------------------------
    def _load_gallery(self, unit: int | None) -> None:
        self._gallery_token += 1
        token = self._gallery_token
        self.gallery.clear()
        st = self.state
        pop = st.population
        ws = st.workspace
        if unit is None or pop is None or ws is None or not ws.cache_path:
            self.gallery_note.setText("needs an embedding cache")
            return
        rows = pop.top_rows_sm[unit]
        vals = pop.top_vals_sm[unit]
        keep = rows >= 0
        rows, vals = rows[keep][:GALLERY_N], vals[keep][:GALLERY_N]
        if rows.size == 0:
            self.gallery_note.setText("never active on the cache")
            return
        self.gallery_note.setText("loading …")
        self.runner.cancel_lane("gallery")
        self.runner.submit(ins.gallery_job, ws.cache_path, ws.images_root, st.sae, unit,
                           rows.tolist(), vals.tolist(), name=f"gallery #{unit}",
                           lane="gallery",
                           on_done=lambda items: self._show_gallery(token, unit, items),
                           on_error=self.failed.emit)

    def _show_gallery(self, token: int, unit: int, items: list[ins.GalleryItem]) -> None:
        if token != self._gallery_token:
            return
        self.gallery.clear()
        notes = set()
        for it in items:
            li = QListWidgetItem(f"{it.activation:.3g}")
            if it.rgb_hw3 is not None:
                li.setIcon(QIcon(QPixmap.fromImage(rgb_to_qimage(it.rgb_hw3))))
            li.setData(Qt.ItemDataRole.UserRole, it.path)
            li.setToolTip(f"{it.path}\nactivation {it.activation:.4g} (cache row {it.row})"
                          + (f"\n{it.note}" if it.note else ""))
            if it.note:
                notes.add(it.note)
            self.gallery.addItem(li)
        self.gallery_note.setText("; ".join(sorted(notes))[:160] if notes else
                                  f"{len(items)} strongest")
        self.gallery_ready.emit(unit)

    def _on_thumb(self, item: QListWidgetItem) -> None:
        path = item.data(Qt.ItemDataRole.UserRole)
        if path:
            self.open_image.emit(str(path))

    # ---- naming ---------------------------------------------------------------------------
    def propose_unit(self, namer: str) -> None:
        """Propose a name for the selected unit with ``namer`` (background)."""
        if self.unit is None:
            return
        self._propose(namer, [self.unit])

    def propose_all(self) -> None:
        """Labels namer over every unit that has no name yet."""
        st = self.state
        if st.sae is None:
            return
        named = st.names()
        units = [k for k in range(st.sae.d_sae) if k not in named]
        self._propose("labels", units)

    def _propose(self, namer: str, units: list[int]) -> None:
        st = self.state
        t = self.table_data
        if namer == "labels":
            if t is None or not t.label_names:
                self.failed.emit("the labels namer needs label correlations: load a cache "
                                 "with labels or an evaluation report")
                return
            job, args = _propose_labels, (t, units)
        else:
            ws = st.workspace
            folder = str(st.settings.value("medgemma_dir" if namer == "medgemma"
                                           else "weights_dir", "") or "")
            if not folder or ws is None or not ws.cache_path or not ws.sae_dir:
                self.failed.emit(f"the {namer} namer is not configured: set the "
                                 f"{'MedGemma' if namer == 'medgemma' else 'MedCLIP weights'} "
                                 "folder in Models ▸ Settings and use an embedding cache "
                                 "(the labels namer needs no model)")
                return
            job, args = _propose_with_core, (namer, folder, ws, units)
        sid = st.sae.sae_id

        def done(rows: list[dict[str, Any]]) -> None:
            n = st.store.propose_many(sid, rows)
            st.notify_names([int(r["unit"]) for r in rows])
            self.status.emit(f"{namer} namer: {n} name(s) proposed"
                             + ("" if rows else " (no positive correlation)"))

        self.runner.submit(job, *args, name=f"{namer} namer", lane="name", on_done=done,
                           on_error=self.failed.emit)


def _card(title: str, body: QWidget, extra: QWidget | None = None) -> QFrame:
    # Smaller, tinted titles than the viewer's: the features tab stacks many cards.
    return make_card(title, body, extra,
                     "font-weight: 600; color: #8fb8cf; background: transparent;")
