"""Settings: backend, device, model folders, reviewer name (stored with QSettings).

Scientific configuration never lives here: these are where-are-my-files and how-to-run
preferences only. Saving reloads the current workspace's models.
"""

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop.ui.widgets.qt_path_row import path_row

FIELDS = ("encoder_key", "weights_dir", "backend", "device", "medgemma_dir", "author")


class QtSettingsDialog(QDialog):
    """Edit the app's preferences."""

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        s = settings
        self.encoder_key = QComboBox()
        self.encoder_key.addItems(["demo", "medclip-resnet", "medclip-swin"])
        self.encoder_key.setCurrentText(str(s.value("encoder_key", "demo") or "demo"))
        self.weights_dir = self._path(str(s.value("weights_dir", "") or ""),
                                      "folder with MedCLIP pytorch_model.bin")
        self.backend = QComboBox()
        self.backend.addItems(["torch", "onnx"])
        self.backend.setCurrentText(str(s.value("backend", "torch") or "torch"))
        self.device = QComboBox()
        self.device.setEditable(True)
        self.device.addItems(["cpu", "auto", "cuda", "cuda:0"])
        self.device.setCurrentText(str(s.value("device", "cpu") or "cpu"))
        self.medgemma_dir = self._path(str(s.value("medgemma_dir", "") or ""),
                                       "local MedGemma folder (optional, for naming)")
        self.author = QLineEdit(str(s.value("author", "") or ""))
        self.author.setPlaceholderText("your name, recorded with every review (default: login)")

        form = QFormLayout()
        form.addRow("Encoder", self.encoder_key)
        form.addRow("MedCLIP weights", self.weights_dir[0])
        form.addRow("Backend", self.backend)
        form.addRow("Device", self.device)
        form.addRow("MedGemma folder", self.medgemma_dir[0])
        form.addRow("Reviewer", self.author)
        note = QLabel("Nothing is downloaded: point the folders at local copies of the model "
                      "files (see `medsae models list`). The demo workspace always uses the "
                      "demo encoder.")
        note.setObjectName("muted")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(buttons)

    def _path(self, value: str, placeholder: str) -> tuple[QWidget, QLineEdit]:
        edit = QLineEdit(value)
        edit.setPlaceholderText(placeholder)
        return path_row(edit), edit

    def values(self) -> dict[str, str]:
        """The edited preferences."""
        return {"encoder_key": self.encoder_key.currentText(),
                "weights_dir": self.weights_dir[1].text().strip(),
                "backend": self.backend.currentText(),
                "device": self.device.currentText().strip() or "cpu",
                "medgemma_dir": self.medgemma_dir[1].text().strip(),
                "author": self.author.text().strip()}

    def save(self) -> None:
        """Write to QSettings and close."""
        for k, v in self.values().items():
            self.settings.setValue(k, v)
        self.settings.sync()
        self.accept()
