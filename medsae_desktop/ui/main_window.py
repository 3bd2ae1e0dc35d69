"""Main window: tabs (Viewer, Features, Trainer), menus, status bar, banners, settings.

The window owns the :class:`~medsae_desktop.ui.state.AppState` and the
:class:`~medsae_desktop.ui.tasks.TaskRunner`. It loads models in the background (status bar
shows the state), keeps user preferences in ``QSettings`` (recent files, backend, device,
model folders, geometry) and shows a permanent "research use only" notice.
"""

import logging
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop import __version__
from medsae_desktop.core.progress import Progress
from medsae_desktop.ui.state import AppState, LoadedModels, Workspace, load_models_job
from medsae_desktop.ui.tasks import TaskHandle, TaskRunner
from medsae_desktop.ui.theme import icon
from medsae_desktop.ui.widgets.qt_viewer import QtViewer

logger = logging.getLogger(__name__)

MAX_RECENT = 10
#: lanes whose jobs are not shown in the status bar
QUIET_LANES = ("overlay", "gallery", "io-cache")
RESEARCH_NOTICE = ("RESEARCH USE ONLY — NOT FOR DIAGNOSIS.  SAE features and heat maps "
                   "describe a model's internals, not findings; do not use for clinical "
                   "decisions.")
STUDY_FILTER = "Images (*.dcm *.dicom *.png *.jpg *.jpeg);;All files (*)"


class MainWindow(QMainWindow):
    """The application window.

    Parameters
    ----------
    settings
        Where preferences live (tests pass an ini file).
    store_path
        Annotation store file (default: per-user data folder).
    encoder_factory
        Replaces :func:`~medsae_desktop.core.encoders.make_encoder` (tests).

    Signals
    -------
    models_loaded()
        A workspace's models are loaded and installed.
    error_shown(str)
        An error message was shown to the user.
    """

    models_loaded = Signal()
    error_shown = Signal(str)

    def __init__(self, settings: QSettings | None = None, store_path: str | None = None,
                 encoder_factory: Any = None) -> None:
        super().__init__()
        self.settings = settings or QSettings("medsae-desktop", "medsae-desktop")
        self.runner = TaskRunner(self)
        self.state = AppState(self.settings, store_path=store_path,
                              encoder_factory=encoder_factory, parent=self)
        self.setWindowTitle("MedSAE Desktop")
        self.setWindowIcon(icon("app"))
        self.setAcceptDrops(True)
        self.resize(1440, 900)
        self._model_task: TaskHandle | None = None
        self._error_boxes: list[QMessageBox] = []
        self.last_error = ""

        self.viewer = QtViewer(self.state, self.runner)
        self.viewer.failed.connect(self.show_error)
        self.viewer.status.connect(self.show_status)
        self.viewer.study_opened.connect(self._add_recent)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.viewer, "Viewer")
        self.features_tab = self._make_features_tab()
        if self.features_tab is not None:
            self.tabs.addTab(self.features_tab, "Features")
        self.trainer_tab = self._make_trainer_tab()
        if self.trainer_tab is not None:
            self.tabs.addTab(self.trainer_tab, "Trainer")
        self.evaluation_tab = self._make_evaluation_tab()
        self.tabs.addTab(self.evaluation_tab, "Evaluation")

        self.research_banner = QLabel(RESEARCH_NOTICE)
        self.research_banner.setObjectName("researchBanner")
        self.research_banner.setToolTip("This notice cannot be hidden.")
        self.demo_banner = QLabel("")
        self.demo_banner.setObjectName("demoBanner")
        self.demo_banner.setWordWrap(True)
        self.demo_banner.setVisible(False)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.research_banner)
        lay.addWidget(self.demo_banner)
        lay.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self._make_status_bar()
        self._make_menus()
        self._make_shortcuts()
        self.runner.task_started.connect(self._on_task_started)
        self.runner.busy_changed.connect(self._on_busy)
        self.state.model_state_changed.connect(self._update_model_status)
        self.state.models_changed.connect(self._update_model_status)
        self._update_model_status()
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)

    # ---- optional tabs (imported lazily so the viewer works alone) --------------------------
    def _make_features_tab(self) -> QWidget | None:
        from medsae_desktop.ui.widgets.qt_features_tab import QtFeaturesTab

        tab = QtFeaturesTab(self.state, self.runner)
        tab.open_image.connect(self.open_study_from_features)
        tab.failed.connect(self.show_error)
        tab.status.connect(self.show_status)
        return tab

    def _make_trainer_tab(self) -> QWidget | None:
        from medsae_desktop.ui.widgets.qt_train_panel import QtTrainPanel

        tab = QtTrainPanel(self.state, self.runner, self.settings)
        tab.failed.connect(self.show_error)
        tab.status.connect(self.show_status)
        tab.load_requested.connect(self.load_workspace)
        return tab

    def _make_evaluation_tab(self) -> QWidget:
        from medsae_desktop.ui.widgets.qt_evaluation_tab import QtEvaluationTab

        tab = QtEvaluationTab(self.state, self.runner)
        tab.failed.connect(self.show_error)
        tab.status.connect(self.show_status)
        return tab

    # ---- status bar -----------------------------------------------------------------------
    def _make_status_bar(self) -> None:
        sb = self.statusBar()
        sb.setSizeGripEnabled(True)
        self.model_label = QLabel("")
        self.model_label.setTextFormat(Qt.TextFormat.RichText)
        self.task_label = QLabel("")
        self.task_progress = QProgressBar()
        self.task_progress.setFixedWidth(160)
        self.task_progress.setFixedHeight(14)
        self.task_progress.setVisible(False)
        self.task_cancel = QToolButton()
        self.task_cancel.setText("Cancel")
        self.task_cancel.setVisible(False)
        self.task_cancel.clicked.connect(self._cancel_current_task)
        sb.addPermanentWidget(self.task_label)
        sb.addPermanentWidget(self.task_progress)
        sb.addPermanentWidget(self.task_cancel)
        sb.addPermanentWidget(self.model_label)
        self._current_task: TaskHandle | None = None

    def show_status(self, text: str) -> None:
        """Transient status message."""
        self.statusBar().showMessage(text, 8000)

    def _update_model_status(self, *args: object) -> None:
        st = self.state
        ws = st.workspace
        if st.model_state == "loading":
            text = "<span style='color:#e0a526'>●</span> loading models…"
        elif st.model_state == "error":
            text = "<span style='color:#d9534f'>●</span> models not loaded"
        elif st.is_ready:
            enc = st.encoder.info
            demo = " · DEMO" if ws is not None and ws.is_demo else ""
            text = (f"<span style='color:#5cb85c'>●</span> encoder <b>{enc.key}</b> "
                    f"({enc.backend}/{getattr(ws, 'device', 'cpu')}, weights "
                    f"{enc.weights_sha256[:8]}) · SAE <b>{st.sae.sae_id[:10]}</b> "
                    f"({st.sae.d_sae} units){demo}")
        else:
            text = "<span style='color:#7d8696'>●</span> no models"
        self.model_label.setText(text)
        if ws is not None and ws.is_demo:
            self.demo_banner.setText(
                "Demonstration workspace — the encoder has untrained, seeded demo weights "
                "(not MedCLIP) and the SAE was trained on synthetic phantoms; feature names "
                "come from the phantoms' planted labels. Configure real models in "
                "Models ▸ Settings.")
            self.demo_banner.setVisible(True)
        else:
            self.demo_banner.setVisible(False)

    def _on_task_started(self, handle: TaskHandle) -> None:
        if handle.lane in QUIET_LANES:
            return  # sub-second or background detail: would only flicker
        self._current_task = handle
        self.task_label.setText(handle.name)
        self.task_progress.setRange(0, 0)
        self.task_progress.setVisible(True)
        self.task_cancel.setVisible(handle.lane in ("train", "build", "models", "name",
                                                    "eval"))
        handle.progressed.connect(lambda p, h=handle: self._on_task_progress(h, p))
        handle.ended.connect(lambda h=handle: self._on_task_ended(h))

    def _on_task_progress(self, h: TaskHandle, p: Progress) -> None:
        if h is not self._current_task:
            return
        if p.total:
            self.task_progress.setRange(0, int(p.total))
            self.task_progress.setValue(int(p.done))
        self.task_label.setText(p.message or h.name)

    def _on_task_ended(self, h: TaskHandle) -> None:
        if h is not self._current_task:
            return
        self._current_task = None
        running = [t for t in self.runner.running() if t.lane not in QUIET_LANES]
        if running:
            self._on_task_started(running[0])
            return
        self.task_label.setText("")
        self.task_progress.setVisible(False)
        self.task_cancel.setVisible(False)

    def _on_busy(self, busy: bool) -> None:
        if not busy:
            self.task_progress.setVisible(False)
            self.task_cancel.setVisible(False)
            self.task_label.setText("")

    def _cancel_current_task(self) -> None:
        if self._current_task is not None:
            self._current_task.cancel()

    # ---- errors ---------------------------------------------------------------------------
    def show_error(self, message: str) -> None:
        """Show a one-line error without blocking (window-modal box + status bar)."""
        logger.info("error shown: %s", message)
        self.last_error = message
        self.statusBar().showMessage(message, 15000)
        box = QMessageBox(QMessageBox.Icon.Warning, "MedSAE Desktop", message,
                          QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.finished.connect(lambda _=0, b=box: self._error_boxes.remove(b)
                             if b in self._error_boxes else None)
        self._error_boxes.append(box)
        box.open()
        self.error_shown.emit(message)

    # ---- menus ----------------------------------------------------------------------------
    def _make_menus(self) -> None:
        mb = self.menuBar()
        m_file = mb.addMenu("&File")
        self.act_open = self._action(m_file, "&Open study…", self.open_study_dialog,
                                     QKeySequence.StandardKey.Open, "open")
        self._action(m_file, "Open &folder…", self.open_folder_dialog, "Ctrl+Shift+O", "folder")
        self.recent_menu = m_file.addMenu("Open &recent")
        self._fill_recent()
        m_file.addSeparator()
        self.act_export_png = self._action(m_file, "&Export view as PNG…",
                                           self.export_png_dialog, "Ctrl+E", "export")
        self.act_export_pdf = self._action(m_file, "Export study &summary (PDF)…",
                                           self.export_pdf_dialog, "Ctrl+Shift+E", "pdf")
        m_file.addSeparator()
        self._action(m_file, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        m_view = mb.addMenu("&View")
        self._action(m_view, "&Fit image", self.viewer.view.fit, "F")
        self._action(m_view, "&1:1 pixels", self.viewer.view.one_to_one, "1")
        self._action(m_view, "Zoom &in", lambda: self.viewer.view.zoom_by(1.25), "+")
        self._action(m_view, "Zoom &out", lambda: self.viewer.view.zoom_by(0.8), "-")
        self._action(m_view, "Reset &window", self.viewer.reset_window, "W")
        self._action(m_view, "Toggle &overlays", self.viewer.toggle_overlays, "O")
        m_view.addSeparator()
        for i, name in enumerate(["&Viewer", "F&eatures", "&Trainer", "E&valuation"]):
            if i < self.tabs.count():
                self._action(m_view, name, lambda i=i: self.tabs.setCurrentIndex(i),
                             f"Ctrl+{i + 1}")

        m_models = mb.addMenu("&Models")
        self._action(m_models, "Open &SAE…", self.open_sae_dialog, None)
        self._action(m_models, "Use embedding &cache…", self.open_cache_dialog, None)
        self._action(m_models, "Open evaluation &report…", self.open_report_dialog, None)
        self._action(m_models, "&Reload models", self.reload_models, "Ctrl+R")
        m_models.addSeparator()
        self._action(m_models, "Load &demo workspace", self.start_demo, None)
        m_models.addSeparator()
        self._action(m_models, "Se&ttings…", self.open_settings, "Ctrl+,", "settings")

        m_feat = mb.addMenu("Fea&tures")
        self._action(m_feat, "&Import names (CSV/JSON)…", self.import_names_dialog, None)
        self._action(m_feat, "Export names as &CSV…", lambda: self.export_names_dialog("csv"),
                     None)
        self._action(m_feat, "Export names as &JSON…",
                     lambda: self.export_names_dialog("json"), None)

        m_help = mb.addMenu("&Help")
        self._action(m_help, "&Keyboard shortcuts", self.show_shortcuts, "F1")
        self._action(m_help, "&About", self.show_about, None)

    def _action(self, menu: Any, text: str, slot: Any, shortcut: Any = None,
                icon_name: str | None = None) -> QAction:
        act = QAction(text, self)
        if icon_name:
            act.setIcon(icon(icon_name))
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
            # single-key shortcuts must not steal typing from text fields: application-wide
            # shortcuts are overridden by focused editors (ShortcutOverride), as wanted
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        act.triggered.connect(lambda checked=False: slot())
        menu.addAction(act)
        return act

    def _make_shortcuts(self) -> None:
        QShortcut(QKeySequence("Ctrl+Tab"), self,
                  lambda: self.tabs.setCurrentIndex((self.tabs.currentIndex() + 1)
                                                    % self.tabs.count()))

    # ---- recent files ---------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        """Recently opened studies, newest first."""
        v = self.settings.value("recent_files", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def _add_recent(self, path: str) -> None:
        items = [p for p in self.recent_files() if p != path]
        items.insert(0, path)
        self.settings.setValue("recent_files", items[:MAX_RECENT])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        for p in files:
            act = self.recent_menu.addAction(Path(p).name)
            act.setToolTip(p)
            act.triggered.connect(lambda checked=False, p=p: self.open_study(p))
        self.recent_menu.setEnabled(bool(files))

    # ---- studies --------------------------------------------------------------------------
    def open_study(self, path: str) -> None:
        """Open a study in the viewer (and switch to it)."""
        self.tabs.setCurrentWidget(self.viewer)
        self.viewer.open_study(path)

    def open_study_from_features(self, path: str) -> None:
        """Thumbnail click in the Features tab."""
        self.open_study(path)

    def open_study_dialog(self) -> None:
        """File ▸ Open."""
        start = str(self.settings.value("last_dir", "") or "")
        path, _ = QFileDialog.getOpenFileName(self, "Open study", start, STUDY_FILTER)
        if path:
            self.settings.setValue("last_dir", os.path.dirname(path))
            self.open_study(path)

    def open_folder_dialog(self) -> None:
        """File ▸ Open folder: list its images, open the first."""
        start = str(self.settings.value("last_dir", "") or "")
        folder = QFileDialog.getExistingDirectory(self, "Open folder of studies", start)
        if folder:
            self.settings.setValue("last_dir", folder)
            self.tabs.setCurrentWidget(self.viewer)
            self.viewer.open_paths([folder])

    def dragEnterEvent(self, ev):  # noqa: N802 - Qt API
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):  # noqa: N802 - Qt API
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if not paths:
            return
        ev.acceptProposedAction()
        self.handle_dropped(paths)

    def handle_dropped(self, paths: list[str]) -> None:
        """Dropped files/folders: .h5 → trainer cache; SAE folder → load SAE; else studies."""
        first = paths[0]
        if first.lower().endswith((".h5", ".hdf5")) and self.trainer_tab is not None:
            self.tabs.setCurrentWidget(self.trainer_tab)
            self.trainer_tab.set_cache_path(first)
            return
        if os.path.isdir(first) and os.path.isfile(os.path.join(first, "cfg.json")):
            self.load_sae_dir(first)
            return
        self.tabs.setCurrentWidget(self.viewer)
        self.viewer.open_paths(paths)

    # ---- models ---------------------------------------------------------------------------
    def load_workspace(self, ws: Workspace, *, open_study: bool = True) -> TaskHandle:
        """Load a workspace's models in the background; opens its study when it has one."""
        self.state.set_workspace(ws)
        if self._model_task is not None and not self._model_task.is_done:
            self._model_task.cancel()
        self.state.set_model_state("loading")
        handle = self.runner.submit(
            load_models_job, ws, self.state.store, self.state.encoder_factory,
            name="loading models", lane="models",
            on_done=self._on_models_loaded,
            on_error=self._on_models_failed,
            on_cancelled=lambda: None)
        self._model_task = handle
        if open_study and ws.study_path:
            self.viewer.open_study(ws.study_path)
        self.settings.setValue("workspace", ws.to_json())
        return handle

    def _on_models_loaded(self, models: LoadedModels) -> None:
        self.state.set_models(models)
        for note in models.notes:
            self.show_status(note)
        self.models_loaded.emit()

    def _on_models_failed(self, message: str) -> None:
        self.state.set_model_state("error", message)
        self.show_error(message)

    def reload_models(self) -> None:
        """Reload the current workspace with the current settings."""
        ws = self.state.workspace
        if ws is None:
            self.show_error("no workspace to reload: open an SAE (Models ▸ Open SAE…) or load "
                            "the demo")
            return
        self.load_workspace(self._apply_settings(ws), open_study=False)

    def _apply_settings(self, ws: Workspace) -> Workspace:
        s = self.settings
        backend = str(s.value("backend", ws.backend) or ws.backend)
        device = str(s.value("device", ws.device) or ws.device)
        if ws.is_demo:
            return ws.replace(backend=backend, device=device)
        key = str(s.value("encoder_key", ws.encoder_key) or ws.encoder_key)
        weights = str(s.value("weights_dir", "") or "") or ws.weights_dir
        return ws.replace(encoder_key=key, weights_dir=weights, backend=backend, device=device)

    def load_sae_dir(self, sae_dir: str) -> None:
        """Use another SAE with the current (or configured) encoder."""
        base = self.state.workspace or Workspace()
        ws = base.replace(sae_dir=sae_dir, report_dir=None, names_csv=None, is_demo=False,
                          study_path=None, label=f"SAE {Path(sae_dir).name}")
        ws = self._apply_settings(ws)
        self.settings.setValue("sae_dir", sae_dir)
        self.load_workspace(ws, open_study=False)

    def open_sae_dialog(self) -> None:
        """Models ▸ Open SAE."""
        d = QFileDialog.getExistingDirectory(self, "Open SAE checkpoint folder",
                                             str(self.settings.value("sae_dir", "") or ""))
        if d:
            self.load_sae_dir(d)

    def open_cache_dialog(self) -> None:
        """Models ▸ Use embedding cache (population percentiles and galleries)."""
        path, _ = QFileDialog.getOpenFileName(self, "Embedding cache", "",
                                              "HDF5 cache (*.h5 *.hdf5)")
        if path:
            base = self.state.workspace or Workspace()
            self.load_workspace(base.replace(cache_path=path), open_study=False)

    def open_report_dialog(self) -> None:
        """Models ▸ Open evaluation report."""
        d = QFileDialog.getExistingDirectory(self, "Evaluation report folder")
        if d:
            base = self.state.workspace or Workspace()
            self.load_workspace(base.replace(report_dir=d), open_study=False)

    def start_demo(self, *, rebuild: bool = False, study: str | None = None) -> None:
        """Build (first time) or reuse the demo workspace, then load it.

        ``study`` replaces the demo study (``medsae-desktop --demo FILE``).
        """
        from medsae_desktop.ui.dialogs.qt_demo_dialog import QtDemoDialog

        dlg = QtDemoDialog(self.runner, rebuild=rebuild, parent=self)
        dlg.built.connect(lambda ws: self.load_workspace(
            ws.replace(study_path=study) if study else ws))
        dlg.failed.connect(self.show_error)
        self.demo_dialog = dlg
        dlg.start()

    def open_settings(self) -> None:
        """Models ▸ Settings."""
        from medsae_desktop.ui.dialogs.qt_settings_dialog import QtSettingsDialog

        dlg = QtSettingsDialog(self.settings, self)
        dlg.accepted.connect(self._on_settings_saved)
        self.settings_dialog = dlg
        dlg.open()

    def _on_settings_saved(self) -> None:
        self.state.store.author = str(self.settings.value("author", "") or "") or \
            self.state.store.author
        if self.state.workspace is not None:
            self.reload_models()

    # ---- names import/export --------------------------------------------------------------
    def import_names_dialog(self) -> None:
        """Features ▸ Import names."""
        if self.state.sae is None:
            self.show_error("load an SAE first: names are stored against its weights")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import feature names", "",
                                              "Names (*.csv *.json)")
        if path:
            self.import_names(path)

    def import_names(self, path: str) -> int:
        """Import a names CSV/JSON into the store for the loaded SAE."""
        from medsae_desktop.core.errors import MedsaeError

        try:
            n = self.state.store.import_file(path, sae_id=self.state.sae.sae_id)
        except MedsaeError as exc:
            self.show_error(str(exc))
            return 0
        self.state.notify_names(None)
        self.show_status(f"imported {n} names from {Path(path).name}")
        return n

    def export_names_dialog(self, fmt: str) -> None:
        """Features ▸ Export names."""
        if self.state.sae is None:
            self.show_error("no SAE loaded")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Export feature names", f"names-{self.state.sae.sae_id[:12]}.{fmt}",
            "CSV (*.csv)" if fmt == "csv" else "JSON (*.json)")
        if path:
            self.export_names(path, fmt)

    def export_names(self, path: str, fmt: str) -> Path:
        """Write the loaded SAE's names as CSV or JSON."""
        sid = self.state.sae.sae_id
        out = (self.state.store.export_csv(sid, path) if fmt == "csv"
               else self.state.store.export_json(sid, path))
        self.show_status(f"names exported to {out}")
        return out

    # ---- exports --------------------------------------------------------------------------
    def export_png_dialog(self) -> None:
        """File ▸ Export view as PNG."""
        if self.viewer.image is None:
            self.show_error("open a study first")
            return
        stem = Path(self.viewer.study_path or "view").stem
        path, _ = QFileDialog.getSaveFileName(self, "Export view", f"{stem}-features.png",
                                              "PNG (*.png)")
        if path:
            self.export_png(path)

    def export_png(self, path: str) -> Path:
        """Current view + overlays + legend + provenance footer as PNG."""
        from medsae_desktop.ui.exports import export_view_png

        out = export_view_png(self.viewer.export_state(), path)
        self.show_status(f"view exported to {out}")
        return out

    def export_pdf_dialog(self) -> None:
        """File ▸ Export study summary (PDF)."""
        if self.viewer.inspection is None:
            self.show_error("open a study and wait for its features first")
            return
        stem = Path(self.viewer.study_path or "study").stem
        path, _ = QFileDialog.getSaveFileName(self, "Export summary", f"{stem}-summary.pdf",
                                              "PDF (*.pdf)")
        if path:
            self.export_pdf(path)

    def export_pdf(self, path: str) -> Path:
        """One-page PDF summary of the study's top features."""
        from medsae_desktop.ui.exports import export_summary_pdf

        out = export_summary_pdf(self.viewer, path)
        self.show_status(f"summary exported to {out}")
        return out

    # ---- help -----------------------------------------------------------------------------
    def show_shortcuts(self) -> None:
        """Help ▸ Keyboard shortcuts."""
        text = (
            "<b>Viewer</b><br>Ctrl+O open · F fit · 1 one-to-one · +/- zoom · W reset window · "
            "O overlays on/off · right-drag window/level · wheel zoom · left-drag pan · "
            "↑/↓ feature list · Ctrl+E export PNG · Ctrl+Shift+E export PDF<br><br>"
            "<b>Features (review)</b><br>J / ↓ next unit · K / ↑ previous unit · A accept · "
            "R reject · G flag · E edit name (Ctrl+Enter saves) · P propose with namer · "
            "Ctrl+F search<br><br>"
            "<b>General</b><br>Ctrl+1/2/3 tabs · Ctrl+R reload models · Ctrl+, settings · "
            "F1 this help")
        box = QMessageBox(QMessageBox.Icon.Information, "Keyboard shortcuts", text,
                          QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        self._shortcuts_box = box
        box.open()

    def show_about(self) -> None:
        """Help ▸ About."""
        box = QMessageBox(QMessageBox.Icon.Information, "About MedSAE Desktop",
                          f"MedSAE Desktop {__version__}\n\nSparse-autoencoder features of "
                          "chest-radiograph models, offline.\n\n" + RESEARCH_NOTICE,
                          QMessageBox.StandardButton.Ok, self)
        self._about_box = box
        box.open()

    # ---- lifecycle ------------------------------------------------------------------------
    def closeEvent(self, ev):  # noqa: N802 - Qt API
        self.settings.setValue("geometry", self.saveGeometry())
        if self.trainer_tab is not None and hasattr(self.trainer_tab, "shutdown"):
            self.trainer_tab.shutdown()
        self.runner.shutdown(10000)
        self.state.close()
        super().closeEvent(ev)

    def start_up(self, study: str | None = None, *, demo: bool = False) -> None:
        """What happens after the window is shown: demo or saved workspace, then study."""
        saved = self.settings.value("workspace")
        if demo or saved is None:
            self.start_demo(study=study)
            return
        try:
            ws = Workspace.from_json(str(saved))
        except (ValueError, TypeError):
            self.start_demo()
            return
        if ws.is_demo:
            self.start_demo(study=study)
            return
        else:
            self.load_workspace(self._apply_settings(ws), open_study=study is None)
        if study:
            self.viewer.open_study(study)
