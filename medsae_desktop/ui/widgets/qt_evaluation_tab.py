"""Evaluation tab: run ``medsae eval`` from the app and read a report (summary, units, figures).

The evaluation itself is the core :func:`~medsae_desktop.core.eval.evaluate_job` on a worker
thread (lane ``"eval"``, shared with the Trainer's one-click evaluation so two evaluations never
compete for the two cores). The report is written only after the job completes, so a cancelled
run leaves no half-written report folder. Reports are loaded on a worker too.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontDatabase, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop.core.progress import Progress
from medsae_desktop.ui.state import AppState
from medsae_desktop.ui.tasks import TaskHandle, TaskRunner
from medsae_desktop.ui.widgets.qt_card import make_card
from medsae_desktop.ui.widgets.qt_path_row import path_row

#: (header, Report attribute or None for the unit index)
UNIT_COLUMNS = (("Unit", None), ("Freq.", "frequency_k"), ("Mean", "mean_k"),
                ("Max", "max_k"), ("Best label", "best_label_k"), ("Best ρ", "best_corr_k"),
                ("Entropy", "entropy_k"), ("MS", "ms_k"), ("Alive", "alive_k"))


def evaluate_to_report_job(cache_path: str, sae_dir: str | None, report_dir: str,
                           config: Any, compare_dir: str | None) -> Any:
    """Evaluate and write the report (core job), then load it on the same worker thread;
    returns the :class:`~medsae_desktop.core.eval.report.Report`."""
    from medsae_desktop.core.eval import evaluate_report_job, load_report

    out = yield from evaluate_report_job(cache_path, report_dir, sae_dir=sae_dir, config=config,
                                         compare_dir=compare_dir or None)
    return load_report(out)


def compare_with_job(report: Any, other_dir: str) -> list[str]:
    """Verdict lines of ``report`` against the report folder ``other_dir`` (no re-run)."""
    from medsae_desktop.core.eval import compare_reports, comparison_lines, load_report

    return comparison_lines(compare_reports(report, load_report(other_dir)))


class UnitsModel(QAbstractTableModel):
    """Per-unit statistics of a report; numbers sort numerically (``Qt.UserRole``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._cols: list[np.ndarray] = []

    def set_report(self, report: Any) -> None:
        """Show ``report`` (or nothing for None)."""
        self.beginResetModel()
        self._cols = []
        if report is not None:
            k = report.n_units
            best_corr_k = (report.corr_kc.max(axis=1) if report.label_names
                           else np.full(k, np.nan))
            for _, attr in UNIT_COLUMNS:
                if attr is None:
                    self._cols.append(np.arange(k))
                elif attr == "best_corr_k":
                    self._cols.append(best_corr_k)
                else:
                    self._cols.append(np.asarray(getattr(report, attr)))
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() or not self._cols else len(self._cols[0])

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(UNIT_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return UNIT_COLUMNS[section][0]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        v = self._cols[index.column()][index.row()]
        if role == Qt.ItemDataRole.UserRole:  # sort key
            if isinstance(v, str):
                return v
            f = float(v)
            return -np.inf if np.isnan(f) else f
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(v, (str, np.str_)):
                return str(v)
            if isinstance(v, (bool, np.bool_)):
                return "yes" if v else "no"
            if index.column() == 0:
                return str(int(v))
            return "—" if np.isnan(float(v)) else f"{float(v):.4g}"
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() != 4:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


def summary_lines(report: Any) -> list[str]:
    """Headline numbers of a report, one per line (what the summary card shows)."""
    s = report.summary
    rec = s.get("reconstruction") or {}

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.4f}"

    lines = [(f"{s.get('kind', '?')} units: {s.get('n_units')} on {s.get('n_images')} images, "
              f"{s.get('n_alive')} alive"),
             f"mean best ρ: {f(s.get('mean_best_corr'))}",
             f"mean best-label entropy: {f(s.get('mean_best_entropy'))}",
             f"mean monosemanticity: {f(s.get('mean_ms'))}"]
    if rec:
        lines.append(f"reconstruction: FVU {f(rec.get('fvu'))}, MSE {f(rec.get('mse'))}, "
                     f"L0 {f(rec.get('l0'))}, dead {f(rec.get('dead_fraction'))}")
    return lines


class QtEvaluationTab(QWidget):
    """Run an evaluation on a cache and browse reports.

    Signals
    -------
    failed(str)
        One-line error for the window's message box.
    status(str)
        Short status-bar text.
    """

    failed = Signal(str)
    status = Signal(str)

    def __init__(self, state: AppState, runner: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state, self.runner = state, runner
        self.task: TaskHandle | None = None
        self.report: Any = None
        self._workspace_report = ""

        # ---- inputs ---------------------------------------------------------------------
        self.cache_edit, self.sae_edit = QLineEdit(), QLineEdit()
        self.out_edit, self.compare_edit = QLineEdit(), QLineEdit()
        self.raw_check = QCheckBox("raw embedding dimensions instead of SAE units")
        self.raw_check.toggled.connect(lambda on: self.sae_edit.setEnabled(not on))
        self.uncertain_combo = QComboBox()
        self.uncertain_combo.addItems(["zeros", "ones", "ignore"])  # `medsae eval` default first
        self.balanced_spin = QSpinBox()
        self.balanced_spin.setRange(0, 100_000)
        self.balanced_spin.setSpecialValueText("all images")
        self.f1_check = QCheckBox("precision / recall / F1 of binarised units")
        self.f1_check.setChecked(True)
        form = QFormLayout()
        form.addRow("Cache", path_row(self.cache_edit, caption="HDF5 embedding cache",
                                      file_filter="HDF5 cache (*.h5 *.hdf5)"))
        form.addRow("SAE folder", path_row(self.sae_edit, caption="SAE folder"))
        form.addRow("", self.raw_check)
        form.addRow("Uncertain labels", self.uncertain_combo)
        form.addRow("Balanced subset / label", self.balanced_spin)
        form.addRow("", self.f1_check)
        form.addRow("Report folder", path_row(self.out_edit, caption="Report folder"))
        form.addRow("Compare with", path_row(self.compare_edit, caption="Report to compare with"))
        self.b_run = QPushButton("Run evaluation")
        self.b_run.clicked.connect(self.run_evaluation)
        self.b_cancel = QPushButton("Cancel")
        self.b_cancel.setEnabled(False)
        self.b_cancel.clicked.connect(self.cancel)
        self.b_open = QPushButton("Open report…")
        self.b_open.clicked.connect(self._open_report_dialog)
        self.b_html = QPushButton("Open HTML report")
        self.b_html.setEnabled(False)
        self.b_html.clicked.connect(self.open_html)
        buttons = QHBoxLayout()
        for b in (self.b_run, self.b_cancel, self.b_open, self.b_html):
            buttons.addWidget(b)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        inputs = QWidget()
        lay = QVBoxLayout(inputs)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addStretch(1)

        # ---- report ---------------------------------------------------------------------
        self.summary_label = QLabel("No report loaded.")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.comparison_text = QPlainTextEdit()
        self.comparison_text.setReadOnly(True)
        # comparison_lines is a column-aligned table: keep its alignment
        self.comparison_text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.comparison_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.comparison_text.setPlaceholderText(
            "Compare the shown report with another report folder (or run with “Compare with”).")
        self.b_compare = QPushButton("Compare with…")
        self.b_compare.setEnabled(False)
        self.b_compare.clicked.connect(self._compare_dialog)
        self.units_model = UnitsModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.units_model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.units_view = QTableView()
        self.units_view.setModel(self.proxy)
        self.units_view.setSortingEnabled(True)
        self.units_view.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # unit order by default
        self.units_view.verticalHeader().setVisible(False)
        self.units_view.setWordWrap(False)  # one line per unit: long label names elide
        self.units_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.figures_box = QWidget()
        self.figures_layout = QVBoxLayout(self.figures_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.figures_box)

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(make_card("Evaluate", inputs))
        left.addWidget(make_card("Summary", self.summary_label))
        left.addWidget(make_card("Comparison", self.comparison_text, extra=self.b_compare))
        left.setSizes([360, 170, 170])
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(make_card("Units", self.units_view))
        right.addWidget(make_card("Figures", scroll))
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 2)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.addWidget(split)

        state.models_changed.connect(self._from_workspace)
        self._from_workspace()

    # ---- public ---------------------------------------------------------------------------
    def run_evaluation(self) -> TaskHandle | None:
        """Start evaluating with the form's settings (one evaluation at a time)."""
        from medsae_desktop.core.eval import EvalConfig

        cache, out = self.cache_edit.text().strip(), self.out_edit.text().strip()
        sae = None if self.raw_check.isChecked() else self.sae_edit.text().strip()
        if not cache or not out or sae == "":
            self.failed.emit("choose a cache, an SAE folder (or raw) and a report folder")
            return None
        if self.task is not None and not self.task.is_done:
            return self.task
        config = EvalConfig(uncertain=self.uncertain_combo.currentText(),
                            balanced=self.balanced_spin.value() or None,
                            f1=self.f1_check.isChecked())
        self.b_run.setEnabled(False)
        self.b_cancel.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting")
        self.task = self.runner.submit(
            evaluate_to_report_job, cache, sae, out, config,
            self.compare_edit.text().strip() or None, name="evaluation", lane="eval",
            on_progress=self._on_progress, on_done=self._on_report, on_error=self._on_error,
            on_cancelled=lambda: self._idle("cancelled"))
        return self.task

    def cancel(self) -> None:
        """Cancel the running evaluation (nothing is written)."""
        if self.task is not None:
            self.task.cancel()

    def open_report(self, path: str) -> TaskHandle:
        """Load the report folder ``path`` (on a worker) and show it."""
        from medsae_desktop.core.eval import load_report

        return self.runner.submit(load_report, path, name="loading report", lane="io-report",
                                  on_done=self._on_report, on_error=self.failed.emit)

    def compare_with(self, other_dir: str) -> TaskHandle | None:
        """Show the verdict of the shown report against the report folder ``other_dir``."""
        if self.report is None:
            return None
        return self.runner.submit(
            compare_with_job, self.report, other_dir, name="comparing reports",
            lane="io-report",
            on_done=lambda lines: self.comparison_text.setPlainText("\n".join(lines)),
            on_error=self.failed.emit)

    def open_html(self) -> None:
        """Show ``report.html`` in the system browser (a local file: no network)."""
        if self.report is not None and (Path(self.report.path) / "report.html").is_file():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(self.report.path,
                                                                 "report.html"))))

    # ---- internals ------------------------------------------------------------------------
    def _open_report_dialog(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Evaluation report folder")
        if d:
            self.open_report(d)

    def _compare_dialog(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Report folder to compare with")
        if d:
            self.compare_with(d)

    def _from_workspace(self) -> None:
        ws = self.state.workspace
        if ws is None:
            return
        if ws.cache_path and not self.cache_edit.text():
            self.cache_edit.setText(str(ws.cache_path))
        if ws.sae_dir and not self.sae_edit.text():
            self.sae_edit.setText(str(ws.sae_dir))
            self.out_edit.setText(os.path.join(str(ws.sae_dir), "report-app"))
        # Show the workspace's report when it changes (Models ▸ Open evaluation report, a new
        # workspace), but not on every model reload: a report run here stays on screen.
        rep = self.state.report
        if rep is not None and str(rep.path) != self._workspace_report:
            self._workspace_report = str(rep.path)
            self._on_report(rep)

    def _on_progress(self, p: Progress) -> None:
        if p.total:
            self.progress.setRange(0, int(p.total))
            self.progress.setValue(int(p.done))
        self.progress.setFormat(p.message or "%p%")

    def _on_error(self, message: str) -> None:
        self._idle("failed")
        self.failed.emit(message)

    def _idle(self, text: str) -> None:
        self.b_run.setEnabled(True)
        self.b_cancel.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)

    def _on_report(self, report: Any) -> None:
        self.report = report
        if self.task is not None and self.task.is_done:
            self._idle("done")
        self.summary_label.setText("\n".join([str(report.path), *summary_lines(report)]))
        self.units_model.set_report(report)
        comp = Path(report.path) / "comparison.json"
        lines: list[str] = []
        if comp.is_file():
            from medsae_desktop.core.eval import comparison_lines

            try:
                lines = comparison_lines(json.loads(comp.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                lines = [f"comparison.json unreadable: {exc}"]
        self.comparison_text.setPlainText("\n".join(lines))
        while self.figures_layout.count():
            item = self.figures_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        for png in sorted(Path(report.path).glob("*.png")):
            label = QLabel()
            label.setPixmap(QPixmap(str(png)).scaledToWidth(
                560, Qt.TransformationMode.SmoothTransformation))
            label.setToolTip(png.name)
            self.figures_layout.addWidget(label)
        self.figures_layout.addStretch(1)
        self.b_html.setEnabled((Path(report.path) / "report.html").is_file())
        self.b_compare.setEnabled(True)
        self.status.emit(f"report: {Path(report.path).name}")
