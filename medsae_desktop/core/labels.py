"""CheXpert-style label CSVs: reading them, matching their rows to images, uncertainty policies.

A CheXpert CSV has a ``Path`` column, optional metadata columns (``Sex``, ``Age``,
``Frontal/Lateral``, ``AP/PA``) and one column per observation with values ``1.0`` (positive),
``0.0`` (negative), ``-1.0`` (uncertain) or blank (not mentioned). This module keeps that
information intact:

* uncertain stays ``-1``, blank becomes ``NaN`` (:func:`read_label_csv`);
* how ``-1`` is turned into a binary label is a separate, explicit step
  (:func:`apply_uncertainty_policy`), chosen by whoever evaluates (the MedSAE code base leaves it
  unspecified; see ``reference/paper.md`` §5);
* blanks stay ``NaN`` through every policy; DESIGN.md §5.3 maps ``NaN`` to 0 at evaluation time.

Which columns are labels. If any of the 14 CheXpert observations (:data:`CHEXPERT_LABELS`)
appear in the header, exactly those columns are the labels, in file order. Otherwise (a custom
data set) every column other than ``Path`` and the known metadata columns is a label. Every
label cell must be blank or a number; anything else is an error naming the file, line and column.

Paths. CheXpert writes paths that start with the data set's folder name
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``) while the CSV lives *inside*
that folder; other CSVs write paths relative to their own folder. :func:`resolve_csv_path`
accepts both, and :meth:`LabelTable.match` finds the row of an image given its path relative to
an image folder under either convention.

No Qt, no printing; errors are :class:`~medsae_desktop.core.errors.MedsaeError`.
"""

import csv
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from medsae_desktop.core.errors import MedsaeError

#: The 14 CheXpert observations, in the order of the CheXpert CSVs and the MedSAE code.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: Non-label columns of the CheXpert CSVs (ignored when looking for label columns).
METADATA_COLUMNS: frozenset[str] = frozenset({"Sex", "Age", "Frontal/Lateral", "AP/PA"})

PATH_COLUMN = "Path"
UNCERTAIN = -1.0

UncertaintyPolicy = Literal["zeros", "ones", "ignore"]


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """The rows of one label CSV.

    Attributes
    ----------
    csv_path
        The CSV file read.
    paths
        The ``Path`` column as written (``/`` separators), one per row.
    names
        Label column names, length C.
    values_nc
        float32 (n, C): 1 positive, 0 negative, −1 uncertain, NaN blank.
    """

    csv_path: Path
    paths: tuple[str, ...]
    names: tuple[str, ...]
    values_nc: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def resolved_paths(self) -> list[Path]:
        """Absolute file of every row (see :func:`resolve_csv_path`)."""
        base_dir = self.csv_path.parent
        return [resolve_csv_path(base_dir, p) for p in self.paths]

    def match(self, image_dir: str | os.PathLike[str]) -> "PathMatcher":
        """A matcher from image paths under ``image_dir`` to rows of this table."""
        return PathMatcher(self, Path(image_dir))


class PathMatcher:
    """Finds the label row of an image in a folder (built by :meth:`LabelTable.match`).

    An image at ``image_dir/rel`` matches a row whose ``Path`` is (after normalising ``./`` and
    ``\\``) any of: ``rel``; ``<name of image_dir>/rel`` (CheXpert's convention); a path that,
    resolved against the CSV's folder, is the same file. When several rows match, the first
    row wins (CheXpert CSVs have unique paths, so this only matters for malformed files).
    """

    def __init__(self, table: LabelTable, image_dir: Path) -> None:
        self._image_dir = Path(os.path.abspath(image_dir))
        self._by_key: dict[str, int] = {}
        base_dir = table.csv_path.parent
        for row, p in enumerate(table.paths):
            self._by_key.setdefault(_norm(p), row)
            self._by_key.setdefault(_abs_key(resolve_csv_path(base_dir, p)), row)

    def row_of(self, rel_path: str) -> int | None:
        """Row of the image ``image_dir/rel_path``, or None when no row names it."""
        rel = _norm(rel_path)
        for key in (rel, _norm(f"{self._image_dir.name}/{rel}"),
                    _abs_key(self._image_dir / rel)):
            row = self._by_key.get(key)
            if row is not None:
                return row
        return None


def _norm(path: str) -> str:
    p = str(path).strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return str(PurePosixPath(p)) if p else p


def _abs_key(path: Path) -> str:
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def resolve_csv_path(base_dir: str | os.PathLike[str], path: str) -> Path:
    """Absolute file that a CSV ``Path`` value names.

    Tried in order, first existing wins: an absolute path as is; ``base_dir/path``; and, when the
    first component of ``path`` is the name of ``base_dir`` (CheXpert: the CSV sits inside the
    data-set folder whose name starts every path), ``base_dir/<rest of path>``. When none exists
    the first candidate is returned, so the caller reports it as missing.

    Parameters
    ----------
    base_dir
        Folder of the CSV file.
    path
        The ``Path`` cell.
    """
    base = Path(os.path.abspath(base_dir))
    rel = _norm(path)
    if os.path.isabs(rel):
        return Path(rel)
    candidates = [base / rel]
    parts = PurePosixPath(rel).parts
    if len(parts) > 1 and parts[0] == base.name:
        candidates.append(base.joinpath(*parts[1:]))
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def read_label_csv(csv_path: str | os.PathLike[str]) -> LabelTable:
    """Read a CheXpert-style CSV (see the module docstring for the rules).

    Parameters
    ----------
    csv_path
        The CSV file (UTF-8, a BOM is accepted).

    Returns
    -------
    LabelTable
        Paths as written, label names, and float32 values (−1 kept, blank → NaN). A CSV with a
        ``Path`` column but no label columns gives C = 0.

    Raises
    ------
    MedsaeError
        Missing or unreadable file, no ``Path`` column, empty path, non-numeric label cell.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise MedsaeError("labels CSV not found", csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedsaeError(f"cannot read CSV ({' '.join(str(exc).split())[:120]})",
                          csv_path) from exc
    if not rows:
        raise MedsaeError("CSV is empty (expected a header with a Path column)", csv_path)
    header = [h.strip() for h in rows[0]]
    if PATH_COLUMN not in header:
        raise MedsaeError(f"CSV has no '{PATH_COLUMN}' column (header: "
                          f"{', '.join(header[:6])}{' ...' if len(header) > 6 else ''})", csv_path)
    path_col = header.index(PATH_COLUMN)
    label_cols = _label_columns(header)
    names = tuple(header[j] for j in label_cols)

    paths: list[str] = []
    values: list[list[float]] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # trailing blank lines are common in hand-edited files
        cells = row + [""] * (len(header) - len(row))
        path = _norm(cells[path_col])
        if not path:
            raise MedsaeError(f"line {line_no}: empty Path", csv_path)
        paths.append(path)
        values.append([_parse_cell(cells[j], csv_path, line_no, header[j]) for j in label_cols])
    values_nc = np.asarray(values, dtype=np.float32).reshape(len(paths), len(names))
    return LabelTable(csv_path=csv_path, paths=tuple(paths), names=names, values_nc=values_nc)


def _label_columns(header: Sequence[str]) -> list[int]:
    chexpert = [j for j, h in enumerate(header) if h in CHEXPERT_LABELS]
    if chexpert:
        return chexpert
    return [j for j, h in enumerate(header)
            if h and h != PATH_COLUMN and h not in METADATA_COLUMNS]


def _parse_cell(cell: str, csv_path: Path, line_no: int, column: str) -> float:
    s = cell.strip()
    if not s:
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise MedsaeError(f"line {line_no}, column {column!r}: {s[:30]!r} is not a number "
                          "(expected 1, 0, -1 or blank)", csv_path) from None


def apply_uncertainty_policy(labels_nc: np.ndarray, policy: UncertaintyPolicy) -> np.ndarray:
    """Resolve uncertain (−1) labels; returns a new float32 array, the input is not changed.

    Parameters
    ----------
    labels_nc
        Labels as read (1, 0, −1, NaN), shape (n, C).
    policy
        ``"zeros"`` (U-Zeros: uncertain → 0), ``"ones"`` (U-Ones: uncertain → 1) or
        ``"ignore"`` (uncertain → NaN, i.e. treated like a blank and left to the caller's
        NaN handling, e.g. excluded from a per-label metric).

    Returns
    -------
    np.ndarray
        float32 (n, C) without −1. Blanks stay NaN under every policy: whether "not mentioned"
        means negative is the evaluator's decision (DESIGN.md §5.3 uses NaN → 0).
    """
    if policy not in ("zeros", "ones", "ignore"):
        raise ValueError(f"unknown uncertainty policy {policy!r} (zeros, ones or ignore)")
    out_nc = np.array(labels_nc, dtype=np.float32, copy=True)
    fill = {"zeros": 0.0, "ones": 1.0, "ignore": math.nan}[policy]
    out_nc[out_nc == UNCERTAIN] = fill
    return out_nc
