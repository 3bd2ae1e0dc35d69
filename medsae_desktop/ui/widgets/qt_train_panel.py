"""Trainer tab (researcher): cache → SAE training with live curves → evaluate → load.

- Cache: choose an HDF5 embedding cache, or build one from a folder of images (embed job with
  the encoder from Settings, optional labels CSV, per-location embeddings for heat maps).
- Form: architecture and hyper-parameters with the paper's defaults (DESIGN.md §5.2).
- Start / Cancel / Resume: the core trainer runs on the "train" lane; cancelling closes its
  generator, which checkpoints so Resume continues exactly.
- Live pyqtgraph curves of loss, FVU, L0 and dead fraction; samples/s.
- When done: Evaluate (report written next to the SAE) and Load in viewer, one click each.

torch is imported only by the core trainer, inside the worker thread.
"""

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop.core.progress import Progress
from medsae_desktop.core.sae.config import DEFAULT_K, DEFAULT_L1, TrainConfig
from medsae_desktop.core.sae.runtime import ARCHS
from medsae_desktop.ui.state import Workspace
from medsae_desktop.ui.tasks import TaskHandle, TaskRunner
from medsae_desktop.ui.theme import CURVE_COLOURS

logger = logging.getLogger(__name__)


_TC = TrainConfig()
#: the paper's configuration (DESIGN.md §5.2; core/sae/config.py); epochs 0 = automatic
PAPER_DEFAULTS: dict[str, Any] = {"arch": _TC.arch, "expansion": _TC.expansion,
                                  "l1": DEFAULT_L1, "k": DEFAULT_K, "epochs": 0,
                                  "batch_size": _TC.batch_size, "lr": _TC.lr, "seed": _TC.seed}
CURVES = (("loss", "loss"), ("fvu", "FVU"), ("l0", "L0"), ("dead", "dead %"))


# ---- jobs (run on workers) -------------------------------------------------------------------
def cache_summary(path: str) -> dict[str, Any]:
    """Small description of a cache (worker: h5py)."""
    from medsae_desktop.core.cache import EmbeddingCache

    with EmbeddingCache(path) as c:
        return {"n": len(c), "d": c.embedding_dim, "labels": c.label_names,
                "patches": c.has_patches, "encoder": c.encoder}


def build_cache_job(folder: str, cache_path: str, ws: Workspace, labels_csv: str | None,
                    patches: bool) -> Any:
    """Embed ``folder`` into ``cache_path`` with the configured encoder (loads it here)."""
    from medsae_desktop.core.encoders import make_encoder
    from medsae_desktop.core.pipeline import embed_job

    yield Progress(0, None, f"loading encoder {ws.encoder_key}")
    enc = make_encoder(ws.encoder_key, weights_dir=ws.weights_dir, backend=ws.backend,
                       device=ws.device)
    try:
        return (yield from embed_job(folder, cache_path, enc, labels_csv=labels_csv or None,
                                     patches=patches))
    finally:
        enc.close()


def train_sae_job(cache_path: str, out_dir: str, values: dict[str, Any], resume: bool) -> Any:
    """Build the core TrainConfig from the form and run the core trainer."""
    from medsae_desktop.core.sae.train import train_job

    cfg = TrainConfig.from_dict(values)
    return (yield from train_job(cache_path, out_dir, cfg, resume=resume))


def evaluate_and_report_job(cache_path: str, sae_dir: str, report_dir: str) -> Any:
    """Evaluate the SAE on the cache and write the report folder; returns the report dir."""
    from medsae_desktop.core.eval.report import evaluate_report_job

    return str((yield from evaluate_report_job(cache_path, report_dir, sae_dir=sae_dir)))


def _metric(m: Any, *names: str) -> float | None:
    for n in names:
        if n in m and m[n] is not None:
            try:
                return float(m[n])
            except (TypeError, ValueError):
                return None
    return None


class QtTrainPanel(QWidget):
    """The Trainer tab.

    Signals
    -------
    load_requested(object)
        Load this :class:`~medsae_desktop.ui.state.Workspace` (the new SAE) in the viewer.
    curves_updated(int)
        Number of points on the curves after an update.
    training_ended(str)
        ``"finished"``, ``"cancelled"`` or ``"failed"``.
    evaluated(str)
        Report folder written.
    failed(str), status(str)
        Messages for the main window.
    """

    load_requested = Signal(object)
    curves_updated = Signal(int)
    training_ended = Signal(str)
    evaluated = Signal(str)
    cache_built = Signal(str)
    failed = Signal(str)
    status = Signal(str)

    def __init__(self, state: Any, runner: TaskRunner, settings: QSettings,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.settings = settings
        self.task: TaskHandle | None = None
        self.report_dir: str | None = None
        self.points: dict[str, list[tuple[float, float]]] = {k: [] for k, _ in CURVES}
        self._t0 = 0.0

        # ---- cache ----
        self.cache_edit = QLineEdit(str(settings.value("train_cache", "") or ""))
        self.cache_edit.setPlaceholderText("embedding cache (.h5)")
        self.cache_edit.editingFinished.connect(self._on_cache_changed)
        b_browse = QPushButton("Choose…")
        b_browse.clicked.connect(self._browse_cache)
        self.b_build = QPushButton("Build from folder…")
        self.b_build.setToolTip("Embed a folder of DICOM/PNG/JPEG images with the encoder from "
                                "Settings into a new or existing cache")
        self.b_build.clicked.connect(self._build_dialog)
        self.labels_edit = QLineEdit()
        self.labels_edit.setPlaceholderText("optional labels CSV (CheXpert style) for building")
        self.patches = QCheckBox("store per-location embeddings (heat maps, galleries)")
        self.patches.setChecked(True)
        self.cache_info = QLabel("")
        self.cache_info.setObjectName("muted")
        self.cache_info.setWordWrap(True)

        # ---- form ----
        d = PAPER_DEFAULTS
        self.arch = QComboBox()
        self.arch.addItems(list(ARCHS))
        self.arch.currentTextChanged.connect(self._on_arch)
        self.expansion = QSpinBox()
        self.expansion.setRange(1, 256)
        self.expansion.setValue(d["expansion"])
        self.expansion.setToolTip("d_sae = expansion × embedding width (paper: 16 → 8192)")
        self.l1 = QDoubleSpinBox()
        self.l1.setDecimals(6)
        self.l1.setRange(0, 10)
        self.l1.setSingleStep(1e-4)
        self.l1.setValue(d["l1"])
        self.k = QSpinBox()
        self.k.setRange(1, 4096)
        self.k.setValue(d["k"])
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 100000)
        self.epochs.setSpecialValueText("auto (paper: 200, ≥ 1000 steps)")
        self.epochs.setValue(d["epochs"])
        #: explicit step count (tests/benchmarks); None = from epochs
        self.steps: int | None = None
        self.batch = QSpinBox()
        self.batch.setRange(1, 1 << 20)
        self.batch.setValue(d["batch_size"])
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-7, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(d["lr"])
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(d["seed"])
        self.out_edit = QLineEdit(str(settings.value("train_out", "") or ""))
        self.out_edit.setPlaceholderText("output SAE folder")
        b_out = QPushButton("Choose…")
        b_out.clicked.connect(self._browse_out)
        b_defaults = QPushButton("Paper defaults")
        b_defaults.clicked.connect(self.reset_defaults)

        self.b_start = QPushButton("Start training")
        self.b_start.setObjectName("primary")
        self.b_start.clicked.connect(lambda: self.start(resume=False))
        self.b_cancel = QPushButton("Cancel")
        self.b_cancel.clicked.connect(self.cancel)
        self.b_resume = QPushButton("Resume")
        self.b_resume.setToolTip("Continue an interrupted run in the output folder exactly")
        self.b_resume.clicked.connect(lambda: self.start(resume=True))
        self.b_eval = QPushButton("Evaluate")
        self.b_eval.setToolTip("Correlation, entropy, monosemanticity report of the new SAE")
        self.b_eval.clicked.connect(self.evaluate)
        self.b_load = QPushButton("Load in viewer")
        self.b_load.setToolTip("Use the new SAE (with this cache) in the Viewer and Features tabs")
        self.b_load.clicked.connect(self.load_in_viewer)

        # ---- curves ----
        self.plots: dict[str, pg.PlotWidget] = {}
        self.curves: dict[str, Any] = {}
        grid = QGridLayout()
        for i, (key, title) in enumerate(CURVES):
            pw = pg.PlotWidget(background="#121418", title=title)
            pw.showGrid(x=True, y=True, alpha=0.15)
            pw.setLabel("bottom", "step")
            pw.setClipToView(True)
            pw.setDownsampling(auto=True, mode="peak")
            pw.hideButtons()
            # fixed axis width: tick labels changing width must not re-layout the window on
            # every update (measured: the main cost of live curves on the GUI thread)
            pw.getAxis("left").setWidth(52)
            self.curves[key] = pw.plot(pen=pg.mkPen(CURVE_COLOURS[key], width=2),
                                       skipFiniteCheck=True)
            self.plots[key] = pw
            grid.addWidget(pw, i // 2, i % 2)
        # Curves are redrawn one plot per timer turn (round robin, ~3 full refreshes a
        # second): repainting a pyqtgraph plot costs tens of ms on a busy 2-core machine, and
        # four at once made the longest event-loop stalls while training (bench_ui.py).
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(80)
        self._redraw_timer.timeout.connect(self._redraw_next)
        self._dirty: set[str] = set()
        self.rate = QLabel("samples/s —")
        self.rate.setObjectName("sectionTitle")
        self.progress_label = QLabel("")
        self.progress_label.setObjectName("muted")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setFixedHeight(110)

        # ---- layout ----
        cache_box = QFrame()
        cache_box.setObjectName("card")
        cl = QFormLayout(cache_box)
        row = QHBoxLayout()
        row.addWidget(self.cache_edit, 1)
        row.addWidget(b_browse)
        cl.addRow(_title("1  Embedding cache"))
        cl.addRow("Cache", row)
        cl.addRow("", self.cache_info)
        row2 = QHBoxLayout()
        row2.addWidget(self.b_build)
        row2.addWidget(self.labels_edit, 1)
        cl.addRow("Build", row2)
        cl.addRow("", self.patches)

        form_box = QFrame()
        form_box.setObjectName("card")
        fl = QFormLayout(form_box)
        fl.addRow(_title("2  SAE and training"))
        fl.addRow("Architecture", self.arch)
        fl.addRow("Expansion", self.expansion)
        fl.addRow("L1 coefficient λ", self.l1)
        fl.addRow("k (TopK family)", self.k)
        fl.addRow("Epochs", self.epochs)
        fl.addRow("Batch size", self.batch)
        fl.addRow("Learning rate", self.lr)
        fl.addRow("Seed", self.seed)
        row3 = QHBoxLayout()
        row3.addWidget(self.out_edit, 1)
        row3.addWidget(b_out)
        fl.addRow("Output folder", row3)
        fl.addRow("", b_defaults)

        run_box = QFrame()
        run_box.setObjectName("card")
        rl = QVBoxLayout(run_box)
        rl.addWidget(_title("3  Run"))
        brow = QHBoxLayout()
        for b in (self.b_start, self.b_cancel, self.b_resume):
            brow.addWidget(b)
        rl.addLayout(brow)
        brow2 = QHBoxLayout()
        brow2.addWidget(self.b_eval)
        brow2.addWidget(self.b_load)
        rl.addLayout(brow2)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(8, 8, 4, 8)
        ll.addWidget(cache_box)
        ll.addWidget(form_box)
        ll.addWidget(run_box)
        ll.addStretch(1)

        right = QWidget()
        rr = QVBoxLayout(right)
        rr.setContentsMargins(4, 8, 8, 8)
        top = QHBoxLayout()
        top.addWidget(self.rate)
        top.addStretch(1)
        top.addWidget(self.progress_label)
        rr.addLayout(top)
        rr.addLayout(grid, 1)
        rr.addWidget(self.log)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([430, 1000])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        self._on_arch(self.arch.currentText())
        self._set_running(False)
        if self.cache_edit.text():
            self._on_cache_changed()

    # ---- form -----------------------------------------------------------------------------
    def reset_defaults(self) -> None:
        """The paper's configuration."""
        d = PAPER_DEFAULTS
        self.arch.setCurrentText(d["arch"])
        self.expansion.setValue(d["expansion"])
        self.l1.setValue(d["l1"])
        self.k.setValue(d["k"])
        self.epochs.setValue(d["epochs"])
        self.batch.setValue(d["batch_size"])
        self.lr.setValue(d["lr"])
        self.seed.setValue(d["seed"])

    def _on_arch(self, arch: str) -> None:
        self.l1.setEnabled(arch in ("relu", "jumprelu"))
        self.k.setEnabled(arch in ("topk", "batchtopk", "matryoshka"))

    def values(self) -> dict[str, Any]:
        """The form as TrainConfig keyword arguments (only the fields the arch uses)."""
        arch = self.arch.currentText()
        out: dict[str, Any] = {"arch": arch, "expansion": self.expansion.value(),
                               "batch_size": self.batch.value(), "lr": self.lr.value(),
                               "seed": self.seed.value(),
                               "device": str(self.settings.value("device", "cpu") or "cpu")}
        if out["device"] == "auto":
            out["device"] = "cpu"
        if arch in ("relu", "jumprelu"):
            out["l1"] = self.l1.value()
        else:
            out["k"] = self.k.value()
        if self.epochs.value() > 0:
            out["epochs"] = self.epochs.value()
        if self.steps is not None:
            out["steps"] = self.steps
        return out

    def set_cache_path(self, path: str) -> None:
        """Use ``path`` as the training cache."""
        self.cache_edit.setText(path)
        self._on_cache_changed()

    def _browse_cache(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Embedding cache", self.cache_edit.text(),
                                              "HDF5 cache (*.h5 *.hdf5)")
        if path:
            self.set_cache_path(path)

    def _browse_out(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Output SAE folder", self.out_edit.text())
        if d:
            self.out_edit.setText(d)

    def _on_cache_changed(self) -> None:
        path = self.cache_edit.text().strip()
        self.settings.setValue("train_cache", path)
        if not path:
            self.cache_info.setText("")
            return
        if not self.out_edit.text():
            self.out_edit.setText(str(Path(path).with_suffix("")) + "-sae")
        self.cache_info.setText("reading …")
        self.runner.submit(cache_summary, path, name="cache info", lane="io-cache",
                           on_done=self._show_cache_info,
                           on_error=lambda m: self.cache_info.setText(m))

    def _show_cache_info(self, info: dict[str, Any]) -> None:
        enc = info["encoder"]
        self.cache_info.setText(
            f"{info['n']} images · {info['d']}-d · encoder {enc.get('key', '?')} "
            f"(weights {str(enc.get('weights_sha256', ''))[:8]}) · "
            f"{len(info['labels'])} labels · "
            f"{'with' if info['patches'] else 'no'} per-location embeddings")

    def _build_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images to embed")
        if not folder:
            return
        out = self.cache_edit.text().strip() or os.path.join(folder, "cache.h5")
        self.build_cache(folder, out)

    def build_cache(self, folder: str, cache_path: str) -> TaskHandle:
        """Embed ``folder`` into ``cache_path`` in the background."""
        s = self.settings
        base = self.state.workspace or Workspace()
        ws = base.replace(encoder_key=str(s.value("encoder_key", base.encoder_key)
                                          or base.encoder_key),
                          weights_dir=str(s.value("weights_dir", "") or "") or base.weights_dir,
                          backend=str(s.value("backend", base.backend) or base.backend),
                          device=str(s.value("device", base.device) or base.device))
        self.cache_edit.setText(cache_path)
        self._log(f"building {cache_path} from {folder} with encoder {ws.encoder_key}")

        def done(res: Any) -> None:
            self._log(f"cache built: {getattr(res, 'n_new', '?')} new images")
            self._on_cache_changed()
            self.cache_built.emit(cache_path)

        return self.runner.submit(
            build_cache_job, folder, cache_path, ws, self.labels_edit.text().strip(),
            self.patches.isChecked(), name="building cache", lane="build",
            on_progress=lambda p: self.progress_label.setText(p.message), on_done=done,
            on_error=self._fail)

    # ---- training -------------------------------------------------------------------------
    def _set_running(self, running: bool) -> None:
        self.b_start.setEnabled(not running)
        self.b_resume.setEnabled(not running)
        self.b_cancel.setEnabled(running)
        have_sae = os.path.isfile(os.path.join(self.out_edit.text(), "cfg.json"))
        self.b_eval.setEnabled(not running and have_sae)
        self.b_load.setEnabled(not running and have_sae)

    def start(self, *, resume: bool = False) -> TaskHandle | None:
        """Start (or resume) training in the background."""
        cache = self.cache_edit.text().strip()
        out = self.out_edit.text().strip()
        if not cache or not out:
            self._fail("choose an embedding cache and an output folder first")
            return None
        self.settings.setValue("train_out", out)
        if not resume:
            self.points = {k: [] for k, _ in CURVES}
            self._redraw()
        self._t0 = time.perf_counter()
        self._log(("resuming" if resume else "training") + f" {self.values()} → {out}")
        self.task = self.runner.submit(
            train_sae_job, cache, out, self.values(), resume, name="training SAE",
            lane="train", on_progress=self._on_progress, on_done=self._on_done,
            on_error=self._fail, on_cancelled=self._on_cancelled)
        self._set_running(True)
        return self.task

    def cancel(self) -> None:
        """Cancel the running training (it checkpoints; Resume continues)."""
        if self.task is not None and not self.task.is_done:
            self._log("cancelling …")
            self.task.cancel()

    def _on_progress(self, p: Progress) -> None:
        m = p.metrics or {}
        step = _metric(m, "step")
        x = float(step if step is not None else p.done)
        for key, names in (("loss", ("loss",)), ("fvu", ("fvu",)), ("l0", ("l0",)),
                           ("dead", ("dead_frac", "dead"))):
            v = _metric(m, *names)
            if v is not None and math.isfinite(v):
                self.points[key].append((x, 100 * v if key == "dead" else v))
        rate = _metric(m, "samples_per_s")
        if rate is not None:
            self.rate.setText(f"samples/s {rate:,.0f}")
        total = f"/{p.total}" if p.total else ""
        self.progress_label.setText(f"{p.message}  ({p.done}{total})")
        self._dirty.update(self.curves)
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def _redraw_next(self) -> None:
        if not self._dirty:
            self._redraw_timer.stop()
            return
        key = next(k for k, _ in CURVES if k in self._dirty)
        self._dirty.discard(key)
        self._set_curve(key)
        self.curves_updated.emit(max(len(v) for v in self.points.values()))

    def _set_curve(self, key: str) -> None:
        pts = self.points[key]
        if pts:
            a = np.asarray(pts, float)
            self.curves[key].setData(a[:, 0], a[:, 1])
        else:
            self.curves[key].setData([], [])

    def _redraw(self) -> None:
        """Redraw every curve now (start, end of a run)."""
        self._dirty.clear()
        for key in self.curves:
            self._set_curve(key)
        self.curves_updated.emit(max(len(v) for v in self.points.values()))

    def _on_done(self, result: Any) -> None:
        self._redraw()
        self._set_running(False)
        dt = time.perf_counter() - self._t0
        self._log(f"training finished in {dt:.1f} s → {self.out_edit.text()}")
        self.status.emit("training finished")
        self.training_ended.emit("finished")

    def _on_cancelled(self) -> None:
        self._redraw()
        self._set_running(False)
        self._log("training cancelled (checkpoint kept; Resume continues)")
        self.training_ended.emit("cancelled")

    def _fail(self, msg: str) -> None:
        self._set_running(False)
        self._log(f"error: {msg}")
        self.failed.emit(msg)
        if self.task is not None and self.task.state == "failed":
            self.training_ended.emit("failed")

    def _log(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    # ---- after training -------------------------------------------------------------------
    def evaluate(self) -> TaskHandle | None:
        """Evaluate the trained SAE on the cache; the report lands in ``SAE_DIR/report``."""
        cache, out = self.cache_edit.text().strip(), self.out_edit.text().strip()
        if not os.path.isfile(os.path.join(out, "cfg.json")):
            self._fail("no trained SAE in the output folder yet")
            return None
        report = os.path.join(out, "report")
        self._log(f"evaluating → {report}")

        def done(path: str) -> None:
            self.report_dir = path
            self._log(f"report written: {path}")
            self.evaluated.emit(path)
            self._show_report(path)

        return self.runner.submit(evaluate_and_report_job, cache, out, report,
                                  name="evaluating SAE", lane="eval",
                                  on_progress=lambda p: self.progress_label.setText(p.message),
                                  on_done=done, on_error=self._fail)

    def _show_report(self, path: str) -> None:
        import json

        try:
            s = json.loads(Path(path, "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        keys = ("mean_best_corr", "mean_best_entropy", "fvu", "l0", "dead_fraction")
        flat = {**s, **(s.get("reconstruction") or {})}
        parts = [f"{k} {flat[k]:.4g}" for k in keys if isinstance(flat.get(k), (int, float))]
        self._log("report: " + (", ".join(parts) or "written"))
        self.status.emit("evaluation report ready")

    def load_in_viewer(self) -> None:
        """Load the new SAE with this cache (and its report) in the viewer."""
        out, cache = self.out_edit.text().strip(), self.cache_edit.text().strip()
        if not os.path.isfile(os.path.join(out, "cfg.json")):
            self._fail("no trained SAE in the output folder yet")
            return
        import json

        enc = {}
        try:
            enc = json.loads(Path(out, "cfg.json").read_text(encoding="utf-8")).get(
                "encoder") or {}
        except (OSError, ValueError):
            pass
        base = self.state.workspace or Workspace()
        key = str(enc.get("key") or base.encoder_key)
        report = self.report_dir or (os.path.join(out, "report")
                                     if os.path.isdir(os.path.join(out, "report")) else None)
        ws = base.replace(sae_dir=out, cache_path=cache or None, report_dir=report,
                          encoder_key=key, names_csv=None, is_demo=False, study_path=None,
                          label=f"trained SAE {Path(out).name}")
        self.load_requested.emit(ws)

    def shutdown(self) -> None:
        """Cancel training at exit (the trainer checkpoints)."""
        self.cancel()


def _title(text: str) -> QLabel:
    t = QLabel(text)
    t.setStyleSheet("font-weight: 600; color: #8fb8cf; background: transparent;")
    return t
