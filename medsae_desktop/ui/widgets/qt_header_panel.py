"""Header panel: technical DICOM/PNG fields; identifying fields only on explicit request.

Identifying fields (names, IDs, dates, institution, UIDs ...) are not put into the widget at
all until the user presses "Reveal identifying fields"; they are hidden again whenever a new
study is opened. Nothing here is logged.
"""

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop.ui.theme import icon


class QtHeaderPanel(QWidget):
    """Table of header fields with a reveal toggle for identifying ones.

    Signals
    -------
    phi_revealed(bool)
        Identifying fields shown (True) or hidden (False).
    """

    phi_revealed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._fields: dict[str, str] = {}
        self._phi: dict[str, str] = {}
        self._warnings: tuple[str, ...] = ()
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Field", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.
                                                           ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.reveal = QPushButton(icon("eye"), "Reveal identifying fields")
        self.reveal.setCheckable(True)
        self.reveal.setToolTip("Identifying fields (names, IDs, dates, institution) are hidden "
                               "by default and never exported")
        self.reveal.toggled.connect(self._on_reveal)
        self.count = QLabel("")
        self.count.setObjectName("muted")
        self.warning = QLabel("")
        self.warning.setObjectName("phiWarning")
        self.warning.setWordWrap(True)
        self.warning.setVisible(False)
        top = QHBoxLayout()
        top.addWidget(self.reveal)
        top.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.count)
        lay.addWidget(self.warning)
        lay.addWidget(self.table, 1)

    def set_header(self, fields: dict[str, str], phi: dict[str, str],
                   warnings: tuple[str, ...] = ()) -> None:
        """Show a new study's header; identifying fields start hidden."""
        self._fields = dict(fields)
        self._phi = dict(phi)
        self._warnings = tuple(warnings)
        self.reveal.blockSignals(True)
        self.reveal.setChecked(False)
        self.reveal.blockSignals(False)
        self.reveal.setEnabled(bool(self._phi))
        self._fill()

    def clear(self) -> None:
        """No study."""
        self.set_header({}, {}, ())

    @property
    def phi_visible(self) -> bool:
        """Whether identifying fields are currently in the table."""
        return self.reveal.isChecked()

    def shown_values(self) -> list[str]:
        """Every value currently in the table (tests check no PHI leaks)."""
        return [self.table.item(r, 1).text() for r in range(self.table.rowCount())]

    def _on_reveal(self, on: bool) -> None:
        self._fill()
        self.phi_revealed.emit(on)

    def _fill(self) -> None:
        rows = list(self._fields.items())
        phi_rows = list(self._phi.items()) if self.reveal.isChecked() else []
        self.table.setRowCount(len(rows) + len(phi_rows))
        for r, (k, v) in enumerate(rows):
            self._set_row(r, k, v, phi=False)
        for j, (k, v) in enumerate(phi_rows):
            self._set_row(len(rows) + j, k, v, phi=True)
        n_phi = len(self._phi)
        self.count.setText(f"{len(rows)} technical fields · {n_phi} identifying fields "
                           f"{'shown' if phi_rows else 'hidden'}")
        msgs = list(self._warnings)
        if phi_rows:
            msgs.insert(0, "Identifying information shown — do not share screenshots.")
        self.warning.setText("\n".join(msgs))
        self.warning.setVisible(bool(msgs))

    def _set_row(self, r: int, key: str, value: str, *, phi: bool) -> None:
        k = QTableWidgetItem(key)
        v = QTableWidgetItem(value)
        v.setToolTip(value)
        if phi:
            for it in (k, v):
                it.setForeground(QColor("#f3c450"))
        k.setFlags(Qt.ItemFlag.ItemIsEnabled)
        v.setFlags(Qt.ItemFlag.ItemIsEnabled)
        self.table.setItem(r, 0, k)
        self.table.setItem(r, 1, v)
