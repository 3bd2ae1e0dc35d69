"""First-start dialog: builds (or reuses) the demo workspace in the background.

The dialog appears only when there is something to build (a valid existing build is reused
silently). It shows the stage, a progress bar and the elapsed time, and can be cancelled (the
partial build is removed; the next start builds again).
"""

import json
import logging
import time
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop.core.progress import Progress
from medsae_desktop.ui.state import Workspace
from medsae_desktop.ui.tasks import TaskHandle, TaskRunner
from medsae_desktop.ui.theme import resources_dir

logger = logging.getLogger(__name__)


def demo_config() -> Any:
    """The recipe from ``resources/demo_manifest.json`` (defaults when absent)."""
    from medsae_desktop.core.demo import DemoConfig

    p = resources_dir() / "demo_manifest.json"
    try:
        return DemoConfig.from_json(json.loads(p.read_text(encoding="utf-8"))["recipe"])
    except (OSError, ValueError, KeyError, TypeError):
        return DemoConfig()


def _build(rebuild: bool, root: str | None) -> Any:
    from medsae_desktop.core.demo import build_demo_job

    return (yield from build_demo_job(root, demo_config(), rebuild=rebuild))


def workspace_of(demo: Any) -> Workspace:
    """The :class:`Workspace` of a built demo."""
    return Workspace(encoder_key="demo", backend="torch", device="cpu",
                     sae_dir=str(demo.sae_dir), cache_path=str(demo.cache_path),
                     report_dir=str(demo.report_dir), images_root=str(demo.images_root),
                     names_csv=str(demo.names_csv), study_path=str(demo.study_path),
                     is_demo=True, label="Demo workspace (untrained demo encoder)")


class QtDemoDialog(QDialog):
    """Progress dialog of the demo build.

    Signals
    -------
    built(object)
        The demo :class:`Workspace` is ready.
    failed(str)
        The build failed (one line).
    """

    built = Signal(object)
    failed = Signal(str)

    def __init__(self, runner: TaskRunner, *, rebuild: bool = False, root: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.rebuild = rebuild
        self.root = root
        self.task: TaskHandle | None = None
        self._t0 = 0.0
        self.setWindowTitle("Preparing the demo workspace")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(520)
        title = QLabel("Building the demonstration workspace")
        title.setObjectName("sectionTitle")
        expl = QLabel(
            "First start: the app draws synthetic chest phantoms, embeds them with the demo "
            "encoder (untrained, seeded weights — not MedCLIP), trains a small sparse "
            "autoencoder and names its features from the phantoms' planted labels. This takes "
            "a few minutes once; later starts reuse it.")
        expl.setWordWrap(True)
        expl.setObjectName("muted")
        self.stage = QLabel("starting …")
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.elapsed = QLabel("")
        self.elapsed.setObjectName("muted")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        lay = QVBoxLayout(self)
        lay.addWidget(title)
        lay.addWidget(expl)
        lay.addSpacing(8)
        lay.addWidget(self.stage)
        lay.addWidget(self.bar)
        row = QHBoxLayout()
        row.addWidget(self.elapsed, 1)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self._tick = QTimer(self)
        self._tick.setInterval(500)
        self._tick.timeout.connect(self._update_elapsed)

    def start(self) -> TaskHandle:
        """Start the build (the dialog shows itself if work is needed)."""
        self._t0 = time.perf_counter()
        self._tick.start()
        self.task = self.runner.submit(_build, self.rebuild, self.root, name="demo workspace",
                                       lane="demo", on_progress=self._on_progress,
                                       on_done=self._on_done, on_error=self._on_error,
                                       on_cancelled=self._on_cancelled)
        return self.task

    def cancel(self) -> None:
        """Stop building."""
        if self.task is not None:
            self.stage.setText("cancelling …")
            self.task.cancel()

    def _on_progress(self, p: Progress) -> None:
        if p.done < 100 and not self.isVisible():
            self.show()
        self.stage.setText(p.message)
        self.bar.setValue(int(p.done))

    def _update_elapsed(self) -> None:
        self.elapsed.setText(f"elapsed {time.perf_counter() - self._t0:.0f} s")

    def _finish(self) -> None:
        self._tick.stop()
        self.hide()

    def _on_done(self, demo: Any) -> None:
        self._finish()
        logger.info("demo workspace ready in %.1f s", time.perf_counter() - self._t0)
        self.built.emit(workspace_of(demo))

    def _on_error(self, msg: str) -> None:
        self._finish()
        self.failed.emit(f"demo workspace could not be built: {msg}")

    def _on_cancelled(self) -> None:
        self._finish()
        self.failed.emit("demo build cancelled; load it again from Models ▸ Load demo "
                         "workspace")

    def reject(self) -> None:  # Esc / close button = cancel
        self.cancel()
