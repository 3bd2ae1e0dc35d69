"""Searchable, sortable table of every SAE unit (the annotator's index).

Columns: unit, name, status, frequency, best label, best ρ, entropy, monosemanticity (MS),
max activation. Statistics come from the evaluation report when one is loaded, else from the
population statistics of the cache (same definitions, DESIGN.md §5.3; MS needs the report).
Names and statuses come from the annotation store and refresh when they change.
"""

import dataclasses
import math
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor

from medsae_desktop.core.annotations import FeatureName, display_name

SORT_ROLE = Qt.ItemDataRole.UserRole + 10
STATUS_COLOURS = {"accepted": "#5cb85c", "edited": "#4fb0c6", "proposed": "#9aa3b2",
                  "flagged": "#e0a526", "rejected": "#d9534f", "": "#5f6775"}


@dataclasses.dataclass(frozen=True)
class UnitTable:
    """Per-unit statistics as arrays (K,), plus per-label correlations (K, C)."""

    frequency_k: np.ndarray
    mean_k: np.ndarray
    max_k: np.ndarray
    best_label_k: tuple[str, ...]
    best_corr_k: np.ndarray
    entropy_k: np.ndarray
    ms_k: np.ndarray
    alive_k: np.ndarray
    label_names: tuple[str, ...]
    corr_kc: np.ndarray
    source: str

    @property
    def n_units(self) -> int:
        """K."""
        return int(self.frequency_k.shape[0])


def unit_table(report: Any, population: Any, d_sae: int) -> UnitTable:
    """Statistics from an evaluation report, else population statistics, else empty."""
    if report is not None and report.n_units == d_sae:
        corr = np.asarray(report.corr_kc, np.float64)
        best_corr = (corr.max(axis=1) if corr.shape[1] else np.full(d_sae, np.nan))
        return UnitTable(report.frequency_k, report.mean_k, report.max_k,
                         tuple(report.best_label_k), best_corr, report.entropy_k, report.ms_k,
                         np.asarray(report.alive_k, bool), tuple(report.label_names), corr,
                         "evaluation report")
    if population is not None and population.d_sae == d_sae:
        from medsae_desktop.core.eval.metrics import unit_entropy

        corr = np.asarray(population.corr_sc, np.float64)
        labels = tuple(population.label_names)
        if corr.shape[1]:
            j = corr.argmax(axis=1)
            best_label = tuple(labels[i] if corr[k, i] > 0 else "" for k, i in enumerate(j))
            best_corr = corr.max(axis=1)
            entropy = unit_entropy(corr)
        else:
            best_label = ("",) * d_sae
            best_corr = entropy = np.full(d_sae, np.nan)
        return UnitTable(population.frequency_s, population.mean_s, population.max_s,
                         best_label, best_corr, entropy, np.full(d_sae, np.nan),
                         population.n_pos_s > 0, labels, corr,
                         f"population of {population.n_images} cache images")
    nan = np.full(d_sae, np.nan)
    return UnitTable(nan, nan, nan, ("",) * d_sae, nan, nan, nan, np.ones(d_sae, bool), (),
                     np.zeros((d_sae, 0)), "no statistics (load a cache or report)")


class QtFeatureTableModel(QAbstractTableModel):
    """Qt model over a :class:`UnitTable` and the current names."""

    COLUMNS = ("Unit", "Name", "Status", "Freq.", "Best label", "Best ρ", "Entropy", "MS",
               "Max")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.table: UnitTable | None = None
        self.names: dict[int, FeatureName] = {}

    def set_table(self, table: UnitTable | None, names: dict[int, FeatureName]) -> None:
        """Replace everything."""
        self.beginResetModel()
        self.table = table
        self.names = dict(names)
        self.endResetModel()

    def set_names(self, names: dict[int, FeatureName], units: list[int] | None = None) -> None:
        """Refresh names (all, or only ``units``)."""
        self.names = dict(names)
        if self.table is None:
            return
        if units is None:
            self.dataChanged.emit(self.index(0, 1), self.index(self.rowCount() - 1, 2))
            return
        for u in units:
            if 0 <= u < self.rowCount():
                self.dataChanged.emit(self.index(u, 1), self.index(u, 2))

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if self.table is None or parent.isValid() else self.table.n_units

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return {
                "Freq.": "fraction of cache images on which the unit is active",
                "Best ρ": "largest Pearson correlation with a label",
                "Entropy": "entropy of |ρ| over labels (low = specific)",
                "MS": "monosemanticity score (evaluation report)",
            }.get(self.COLUMNS[section])
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or self.table is None:
            return None
        k, col = index.row(), index.column()
        t = self.table
        name = self.names.get(k)
        status = "" if name is None else name.status
        if role == SORT_ROLE:
            return (k, display_name(name, k).lower(), status, _num(t.frequency_k[k]),
                    t.best_label_k[k], _num(t.best_corr_k[k]), _num(t.entropy_k[k]),
                    _num(t.ms_k[k]), _num(t.max_k[k]))[col]
        if role == Qt.ItemDataRole.DisplayRole:
            return (str(k), _table_name(name, k), status or "—", _pct(t.frequency_k[k]),
                    t.best_label_k[k], _f(t.best_corr_k[k]), _f(t.entropy_k[k]),
                    _f(t.ms_k[k]), _f(t.max_k[k]))[col]
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 2:
                return QColor(STATUS_COLOURS.get(status, "#9aa3b2"))
            if not t.alive_k[k]:
                return QColor("#5f6775")
            if col == 1 and (name is None or status == "rejected"):
                return QColor("#7d8696")
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (0, 3, 5, 6, 7, 8):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and col == 1 and name is not None:
            return f"{name.concept}\n{name.description}\n{name.namer} · {name.status}"
        return None


def _table_name(name: FeatureName | None, unit: int) -> str:
    """The name without the status suffix (the table has a status column)."""
    if name is None or not name.concept or name.status == "rejected":
        return f"unnamed #{unit}"
    return name.concept


def _num(v: float) -> float:
    v = float(v)
    return -math.inf if math.isnan(v) else v


def _f(v: float) -> str:
    v = float(v)
    return "—" if math.isnan(v) else f"{v:.3f}"


def _pct(v: float) -> str:
    v = float(v)
    return "—" if math.isnan(v) else f"{100 * v:.1f}%"


class QtFeatureFilter(QSortFilterProxyModel):
    """Text search (unit, name, best label) + status filter + hide dead units."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.text = ""
        self.status = "all"
        self.hide_dead = True
        self.setSortRole(SORT_ROLE)

    def _refilter(self, change: Any) -> None:
        self.beginFilterChange()
        change()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_text(self, text: str) -> None:
        """Search text: ``12`` or ``#12`` finds unit 12; other text is a case-insensitive
        substring of the name, description or best label."""
        self._refilter(lambda: setattr(self, "text", text.strip().lower()))

    def set_status(self, status: str) -> None:
        """``all``, ``unnamed`` or one of the statuses."""
        self._refilter(lambda: setattr(self, "status", status))

    def set_hide_dead(self, on: bool) -> None:
        """Hide units never active on the cache."""
        self._refilter(lambda: setattr(self, "hide_dead", on))

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:  # noqa: N802
        m: QtFeatureTableModel = self.sourceModel()
        t = m.table
        if t is None:
            return False
        if self.hide_dead and not (t.frequency_k[row] > 0) and not np.isnan(t.frequency_k[row]):
            return False
        name = m.names.get(row)
        status = "" if name is None else name.status
        if self.status == "unnamed" and name is not None and status != "rejected":
            return False
        if self.status not in ("all", "unnamed") and status != self.status:
            return False
        if not self.text:
            return True
        q = self.text.lstrip("#").strip()
        if q.isdigit():
            return int(q) == row
        hay = f"{display_name(name, row)} {t.best_label_k[row]}".lower()
        if name is not None:
            hay += " " + name.description.lower()
        return q in hay

    def lessThan(self, left: QModelIndex, right: QModelIndex) -> bool:  # noqa: N802
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)
