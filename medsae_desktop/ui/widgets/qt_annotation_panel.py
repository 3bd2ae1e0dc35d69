"""Name editor of one SAE unit: propose, accept, edit, flag, reject, with full history.

Writes go straight to the :class:`~medsae_desktop.core.annotations.AnnotationStore` (a few
milliseconds of SQLite on the GUI thread); proposing with a namer runs on a worker. Every
change is followed by ``AppState.notify_names`` so the viewer and the table update.
"""

import logging
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medsae_desktop.core.errors import MedsaeError
from medsae_desktop.ui.widgets.qt_feature_table import STATUS_COLOURS

logger = logging.getLogger(__name__)

NAMERS = ("labels", "vocab", "medgemma")


class QtAnnotationPanel(QWidget):
    """Editor for the name of the selected unit.

    Signals
    -------
    decided(str)
        The user accepted/edited/flagged/rejected the name (the action); the tab may
        advance to the next unit.
    propose_requested(str)
        Propose a name with this namer (the tab runs it in the background).
    failed(str)
        One-line error.
    """

    decided = Signal(str)
    propose_requested = Signal(str)
    failed = Signal(str)

    def __init__(self, state: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.unit: int | None = None
        self.concept = QLineEdit()
        self.concept.setPlaceholderText("concept, e.g. “pleural effusion”")
        self.concept.returnPressed.connect(self.save_edit)
        self.description = QPlainTextEdit()
        self.description.setPlaceholderText("description (optional)")
        self.description.setFixedHeight(54)
        self.status_label = QLabel("—")
        self.source_label = QLabel("")
        self.source_label.setObjectName("muted")
        self.source_label.setWordWrap(True)

        self.btn_accept = QPushButton("Accept  (A)")
        self.btn_accept.setObjectName("accept")
        self.btn_edit = QPushButton("Save edit  (Ctrl+↵)")
        self.btn_flag = QPushButton("Flag  (G)")
        self.btn_flag.setObjectName("flag")
        self.btn_reject = QPushButton("Reject  (R)")
        self.btn_reject.setObjectName("reject")
        self.btn_accept.clicked.connect(self.accept)
        self.btn_edit.clicked.connect(self.save_edit)
        self.btn_flag.clicked.connect(self.flag)
        self.btn_reject.clicked.connect(self.reject)
        self.namer = QComboBox()
        self.namer.addItems(list(NAMERS))
        self.namer.setToolTip("labels: highest-correlated label · vocab: MedCLIP text "
                              "vocabulary · medgemma: local MedGemma (configure in Settings)")
        self.btn_propose = QPushButton("Propose  (P)")
        self.btn_propose.setToolTip("Propose a name for this unit with the chosen namer "
                                    "(runs in the background)")
        self.btn_propose.clicked.connect(lambda: self.propose_requested.emit(
            self.namer.currentText()))

        self.history = QTreeWidget()
        self.history.setHeaderLabels(["When (UTC)", "Action", "Concept", "Status", "Author"])
        self.history.setRootIsDecorated(False)
        self.history.setAlternatingRowColors(True)
        self.history.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.history.header().setStretchLastSection(True)

        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.addRow("Concept", self.concept)
        form.addRow("Description", self.description)
        st = QHBoxLayout()
        st.addWidget(self.status_label)
        st.addWidget(self.source_label, 1)
        form.addRow("Status", st)
        buttons = QGridLayout()
        buttons.addWidget(self.btn_accept, 0, 0)
        buttons.addWidget(self.btn_edit, 0, 1)
        buttons.addWidget(self.btn_flag, 1, 0)
        buttons.addWidget(self.btn_reject, 1, 1)
        prop = QHBoxLayout()
        prop.addWidget(QLabel("Namer"))
        prop.addWidget(self.namer)
        prop.addWidget(self.btn_propose)
        prop.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addLayout(prop)
        hl = QLabel("History")
        hl.setObjectName("muted")
        lay.addWidget(hl)
        lay.addWidget(self.history, 1)
        save = QShortcut(QKeySequence("Ctrl+Return"), self)
        save.activated.connect(self.save_edit)
        self.set_unit(None)

    # ---- content --------------------------------------------------------------------------
    def set_unit(self, unit: int | None) -> None:
        """Show the name and history of ``unit``."""
        self.unit = unit
        on = unit is not None and self.state.sae is not None
        for w in (self.concept, self.description, self.btn_accept, self.btn_edit,
                  self.btn_flag, self.btn_reject, self.btn_propose, self.namer):
            w.setEnabled(on)
        self.refresh()

    def refresh(self) -> None:
        """Reload from the store."""
        self.history.clear()
        if self.unit is None or self.state.sae is None:
            self.concept.clear()
            self.description.clear()
            self.status_label.setText("—")
            self.source_label.setText("")
            return
        sid = self.state.sae.sae_id
        name = self.state.store.get_name(sid, self.unit)
        self.concept.setText("" if name is None else name.concept)
        self.description.setPlainText("" if name is None else name.description)
        status = "unnamed" if name is None else name.status
        colour = STATUS_COLOURS.get("" if name is None else name.status, "#9aa3b2")
        self.status_label.setText(f"<b style='color:{colour}'>{status}</b>")
        if name is not None:
            score = "" if name.score is None else f", score {name.score:.3g}"
            self.source_label.setText(f"source: {name.namer or 'manual'}{score} · last by "
                                      f"{name.author} at {name.updated_utc[:19]}")
        else:
            self.source_label.setText("no name yet — propose one (P) or type it and save")
        self.btn_accept.setEnabled(name is not None and bool(name.concept))
        for h in reversed(self.state.store.history(sid, self.unit)):
            it = QTreeWidgetItem([h.time_utc[:19].replace("T", " "), h.action, h.concept,
                                  h.status, h.author])
            it.setForeground(3, QColor(STATUS_COLOURS.get(h.status, "#9aa3b2")))
            it.setToolTip(2, h.description)
            self.history.addTopLevelItem(it)

    # ---- actions --------------------------------------------------------------------------
    def _do(self, action: str, fn: Any) -> None:
        if self.unit is None or self.state.sae is None:
            return
        try:
            fn(self.state.sae.sae_id, self.unit)
        except MedsaeError as exc:
            self.failed.emit(str(exc))
            return
        self.state.notify_names([self.unit])
        self.refresh()
        self.decided.emit(action)

    def accept(self) -> None:
        """Accept the current name (typed changes are saved as an edit first)."""
        if self._typed_changes():
            self.save_edit()
            return
        self._do("accept", lambda s, u: self.state.store.accept(s, u))

    def save_edit(self) -> None:
        """Save the typed concept/description (status ``edited``)."""
        concept = self.concept.text()
        desc = self.description.toPlainText()
        self._do("edit", lambda s, u: self.state.store.edit(s, u, concept, desc))

    def flag(self) -> None:
        """Flag for a second look."""
        self._do("flag", lambda s, u: self.state.store.flag(s, u))

    def reject(self) -> None:
        """Reject the name."""
        self._do("reject", lambda s, u: self.state.store.reject(s, u))

    def _typed_changes(self) -> bool:
        if self.unit is None or self.state.sae is None:
            return False
        name = self.state.store.get_name(self.state.sae.sae_id, self.unit)
        cur_c = "" if name is None else name.concept
        cur_d = "" if name is None else name.description
        return (self.concept.text().strip() != cur_c
                or self.description.toPlainText().strip() != cur_d) and \
            bool(self.concept.text().strip())
