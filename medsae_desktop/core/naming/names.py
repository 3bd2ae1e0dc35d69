"""Feature names and the ``NAMES.csv`` format.

Columns (DESIGN.md §3): ``unit,concept,description,namer,score``.

No Qt, no printing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Iterable
from pathlib import Path

from medsae_desktop.core.errors import MedsaeError

NAMES_COLUMNS = ("unit", "concept", "description", "namer", "score")
#: Concept given when a model's answer could not be parsed (its raw text is kept elsewhere).
UNPARSED = "unparsed"


@dataclasses.dataclass(frozen=True)
class FeatureName:
    """A proposed name of one unit.

    Attributes
    ----------
    unit
        Unit index (SAE latent or raw dimension).
    concept
        Short name ("" when the namer has none).
    description
        Longer description.
    namer
        ``labels``, ``vocab`` or ``medgemma``.
    score
        Namer-specific confidence: ρ (labels), cosine (vocab), NaN (medgemma).
    """

    unit: int
    concept: str
    description: str
    namer: str
    score: float = math.nan


def names_csv_text(names: Iterable[FeatureName]) -> str:
    """The CSV text of ``names`` (header included)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(NAMES_COLUMNS)
    for n in names:
        score = "" if n.score is None or math.isnan(n.score) else f"{n.score:.6g}"
        w.writerow([n.unit, _one_line(n.concept), _one_line(n.description), n.namer, score])
    return buf.getvalue()


def write_names_csv(path: str | os.PathLike[str], names: Iterable[FeatureName]) -> Path:
    """Write ``NAMES.csv`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(names_csv_text(names), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_names_csv(path: str | os.PathLike[str]) -> list[FeatureName]:
    """Read a ``NAMES.csv`` (any column order; ``description``, ``namer``, ``score`` optional).

    Raises
    ------
    MedsaeError
        Missing file, no ``unit``/``concept`` column, a non-integer unit.
    """
    path = Path(path)
    if not path.is_file():
        raise MedsaeError("names CSV not found", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            fields = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedsaeError(f"cannot read names CSV ({' '.join(str(exc).split())[:100]})",
                          path) from exc
    if rows and not {"unit", "concept"} <= set(fields):
        raise MedsaeError("names CSV needs 'unit' and 'concept' columns", path)
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            unit = int(str(r["unit"]).strip())
        except ValueError:
            raise MedsaeError(f"line {i}: unit {r['unit']!r} is not an integer", path) from None
        score_s = (r.get("score") or "").strip()
        try:
            score = float(score_s) if score_s else math.nan
        except ValueError:
            score = math.nan
        out.append(FeatureName(unit, (r.get("concept") or "").strip(),
                               (r.get("description") or "").strip(),
                               (r.get("namer") or "").strip(), score))
    return out


def _one_line(s: str) -> str:
    return " ".join(str(s).split())
