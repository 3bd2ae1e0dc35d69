"""SQLite store of feature names and per-image reviews, keyed by SAE id (DESIGN.md §4.3).

One file (``annotations.sqlite``) holds the names of many SAEs; every row carries the
``sae_id`` (sha256 of the SAE's ``sae.safetensors``), so a name stays attached to exactly the
weights it describes. The database runs in WAL mode so the GUI can read while a worker writes.

Tables (schema 1)
-----------------
``meta``            key/value: ``schema_version``, ``created_by``.
``feature_name``    current name of one unit: concept, description, namer (source), score,
                    status (proposed/accepted/edited/flagged/rejected), note, author, time.
``name_history``    every change to ``feature_name`` (append-only), with the action taken.
``image_review``    one verdict (pos/neg/unsure) per (sae_id, unit, image_key), with a note.

Rules: one SQLite connection per thread (``sqlite3`` connections must not cross threads), every
write in one transaction, migrations are numbered SQL scripts applied in order. No Qt here.
"""

import csv
import dataclasses
import datetime as _dt
import getpass
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medsae_desktop import __version__
from medsae_desktop.core.errors import MedsaeError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("proposed", "accepted", "edited", "flagged", "rejected")
VERDICTS = ("pos", "neg", "unsure")
#: statuses a human set; an automatic proposal never overwrites them
REVIEWED = frozenset({"accepted", "edited", "flagged", "rejected"})

#: migrations[i] takes the store from version i to i + 1 (each applied in one transaction)
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE feature_name (
        sae_id      TEXT    NOT NULL,
        unit        INTEGER NOT NULL,
        concept     TEXT    NOT NULL DEFAULT '',
        description TEXT    NOT NULL DEFAULT '',
        namer       TEXT    NOT NULL DEFAULT '',
        score       REAL,
        status      TEXT    NOT NULL CHECK (status IN
                        ('proposed','accepted','edited','flagged','rejected')),
        note        TEXT    NOT NULL DEFAULT '',
        author      TEXT    NOT NULL DEFAULT '',
        updated_utc TEXT    NOT NULL,
        PRIMARY KEY (sae_id, unit)
    );
    CREATE TABLE name_history (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        sae_id      TEXT    NOT NULL,
        unit        INTEGER NOT NULL,
        action      TEXT    NOT NULL,
        concept     TEXT    NOT NULL,
        description TEXT    NOT NULL,
        namer       TEXT    NOT NULL,
        score       REAL,
        status      TEXT    NOT NULL,
        note        TEXT    NOT NULL,
        author      TEXT    NOT NULL,
        time_utc    TEXT    NOT NULL
    );
    CREATE INDEX name_history_unit ON name_history (sae_id, unit, id);
    CREATE TABLE image_review (
        sae_id      TEXT    NOT NULL,
        unit        INTEGER NOT NULL,
        image_key   TEXT    NOT NULL,
        verdict     TEXT    NOT NULL CHECK (verdict IN ('pos','neg','unsure')),
        note        TEXT    NOT NULL DEFAULT '',
        author      TEXT    NOT NULL DEFAULT '',
        created_utc TEXT    NOT NULL,
        PRIMARY KEY (sae_id, unit, image_key)
    );
    """,
]

_NAME_COLS = ("unit", "concept", "description", "namer", "score", "status", "note", "author",
              "updated_utc")


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureName:
    """The current name of one SAE unit."""

    sae_id: str
    unit: int
    concept: str
    description: str
    namer: str
    score: float | None
    status: str
    note: str
    author: str
    updated_utc: str

    @property
    def is_reviewed(self) -> bool:
        """Whether a person has accepted, edited, flagged or rejected the name."""
        return self.status in REVIEWED


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change to a unit's name."""

    action: str
    concept: str
    description: str
    namer: str
    score: float | None
    status: str
    note: str
    author: str
    time_utc: str


@dataclasses.dataclass(frozen=True, slots=True)
class ImageReview:
    """A reviewer's verdict on whether one image shows one unit's concept."""

    sae_id: str
    unit: int
    image_key: str
    verdict: str
    note: str
    author: str
    created_utc: str


def display_name(name: FeatureName | None, unit: int) -> str:
    """Name shown to users: annotated name, else proposed name, else ``unnamed #k``.

    Accepted and edited names are shown as they are; proposed and flagged ones get a
    marker so that nobody mistakes a machine guess for a reviewed label. Rejected names are
    not shown.
    """
    if name is None or not name.concept or name.status == "rejected":
        return f"unnamed #{unit}"
    if name.status in ("accepted", "edited"):
        return name.concept
    if name.status == "flagged":
        return f"{name.concept} (flagged)"
    return f"{name.concept} (proposed)"


def default_author() -> str:
    """The login name of the current user (author of edits by default)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers: fall back to a neutral author
        return "unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AnnotationStore:
    """Feature names and reviews in one SQLite file.

    Parameters
    ----------
    path
        The database file; created (with parents) when missing.
    author
        Author recorded for changes when a call gives none (default: login name).

    Notes
    -----
    Safe to share between threads: each thread lazily opens its own connection.
    """

    def __init__(self, path: str | os.PathLike[str], author: str | None = None) -> None:
        self.path = Path(path)
        self.author = author or default_author()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate(self._conn())

    # ---- connections ----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is not None:
            return con
        try:
            con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: commits survive an application crash; only a power loss can drop
            # the last transactions, and a commit costs no fsync (fast interactive review)
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA busy_timeout=10000")
        except sqlite3.DatabaseError as exc:
            raise MedsaeError(f"not a readable annotation store ({exc})", self.path) from exc
        self._local.con = con
        with self._lock:
            self._all.append(con)
        return con

    def close(self) -> None:
        """Close every connection this store opened (call from the owning thread at exit)."""
        with self._lock:
            for con in self._all:
                try:
                    con.close()
                except sqlite3.ProgrammingError:
                    # opened on another thread: sqlite3 refuses to close it from here; it is
                    # released when that thread's objects are collected
                    pass
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- schema ---------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The schema version recorded in the file (0 for a new, empty file)."""
        return _read_version(self._conn())

    def _migrate(self, con: sqlite3.Connection) -> None:
        try:
            version = _read_version(con)
        except sqlite3.DatabaseError as exc:
            raise MedsaeError(f"not a readable annotation store ({exc})", self.path) from exc
        if version > len(MIGRATIONS):
            raise MedsaeError(
                f"annotation store schema_version {version} is newer than this program "
                f"supports ({len(MIGRATIONS)}); upgrade medsae-desktop", self.path)
        for v in range(version, len(MIGRATIONS)):
            logger.info("migrating annotation store %s from v%d to v%d", self.path, v, v + 1)
            con.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(MIGRATIONS[v]):
                    con.execute(statement)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                            (str(v + 1),))
                con.execute("INSERT OR REPLACE INTO meta VALUES ('created_by', ?)",
                            (f"medsae-desktop {__version__}",))
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    # ---- names: reading -------------------------------------------------------------------
    def get_name(self, sae_id: str, unit: int) -> FeatureName | None:
        """Current name of ``unit``, or None."""
        row = self._conn().execute(
            f"SELECT sae_id, {', '.join(_NAME_COLS)} FROM feature_name "
            "WHERE sae_id = ? AND unit = ?", (sae_id, int(unit))).fetchone()
        return None if row is None else FeatureName(*row)

    def names(self, sae_id: str) -> dict[int, FeatureName]:
        """All current names of one SAE, by unit."""
        rows = self._conn().execute(
            f"SELECT sae_id, {', '.join(_NAME_COLS)} FROM feature_name WHERE sae_id = ? "
            "ORDER BY unit", (sae_id,)).fetchall()
        return {int(r[1]): FeatureName(*r) for r in rows}

    def history(self, sae_id: str, unit: int) -> list[HistoryEntry]:
        """Every change to ``unit``'s name, oldest first."""
        rows = self._conn().execute(
            "SELECT action, concept, description, namer, score, status, note, author, time_utc "
            "FROM name_history WHERE sae_id = ? AND unit = ? ORDER BY id",
            (sae_id, int(unit))).fetchall()
        return [HistoryEntry(*r) for r in rows]

    def count_by_status(self, sae_id: str) -> dict[str, int]:
        """How many units of one SAE are in each status."""
        rows = self._conn().execute(
            "SELECT status, COUNT(*) FROM feature_name WHERE sae_id = ? GROUP BY status",
            (sae_id,)).fetchall()
        out = dict.fromkeys(STATUSES, 0)
        out.update({s: int(n) for s, n in rows})
        return out

    # ---- names: writing -------------------------------------------------------------------
    def propose(
        self,
        sae_id: str,
        unit: int,
        concept: str,
        description: str = "",
        *,
        namer: str,
        score: float | None = None,
        author: str | None = None,
        overwrite_reviewed: bool = False,
    ) -> FeatureName:
        """Record a machine-proposed name (status ``proposed``).

        A name a person already reviewed is kept (and returned) unless
        ``overwrite_reviewed``; the proposal still enters the history so it is not lost.
        """
        with self._tx() as con:
            cur = self._get(con, sae_id, unit)
            if cur is not None and cur.is_reviewed and not overwrite_reviewed:
                self._log(con, sae_id, unit, "proposed (kept reviewed name)", concept,
                          description, namer, score, "proposed", "", author)
                return cur
            return self._put(con, sae_id, unit, "propose", concept=concept,
                             description=description, namer=namer, score=score,
                             status="proposed", note="", author=author)

    def propose_many(
        self,
        sae_id: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        namer: str | None = None,
        author: str | None = None,
        overwrite_reviewed: bool = False,
    ) -> int:
        """Propose names from rows with keys ``unit, concept[, description, namer, score]``.

        This is how a namer's ``NAMES.csv`` (``unit,concept,description,namer,score``) enters
        the store. Returns the number of units whose current name changed.
        """
        changed = 0
        with self._tx() as con:
            for r in rows:
                unit = int(r["unit"])
                row_namer = str(r.get("namer") or namer or "")
                score = _opt_float(r.get("score"))
                concept = str(r.get("concept") or "")
                desc = str(r.get("description") or "")
                cur = self._get(con, sae_id, unit)
                if cur is not None and cur.is_reviewed and not overwrite_reviewed:
                    self._log(con, sae_id, unit, "proposed (kept reviewed name)", concept,
                              desc, row_namer, score, "proposed", "", author)
                    continue
                if (cur is not None and cur.concept == concept and cur.description == desc
                        and cur.namer == row_namer and cur.status == "proposed"):
                    continue
                self._put(con, sae_id, unit, "propose", concept=concept, description=desc,
                          namer=row_namer, score=score, status="proposed", note="",
                          author=author)
                changed += 1
        return changed

    def accept(self, sae_id: str, unit: int, *, author: str | None = None) -> FeatureName:
        """Accept the current name as it is."""
        return self._set_status(sae_id, unit, "accepted", "accept", "", author)

    def reject(self, sae_id: str, unit: int, *, note: str = "",
               author: str | None = None) -> FeatureName:
        """Reject the current name (the unit is then shown as unnamed)."""
        return self._set_status(sae_id, unit, "rejected", "reject", note, author)

    def flag(self, sae_id: str, unit: int, *, note: str = "",
             author: str | None = None) -> FeatureName:
        """Flag the current name for a second look."""
        return self._set_status(sae_id, unit, "flagged", "flag", note, author)

    def edit(self, sae_id: str, unit: int, concept: str, description: str = "", *,
             note: str = "", author: str | None = None) -> FeatureName:
        """Replace the name with a person's own (status ``edited``; the source namer is kept)."""
        concept = concept.strip()
        if not concept:
            raise MedsaeError(f"unit {unit}: an edited name needs a concept")
        with self._tx() as con:
            cur = self._get(con, sae_id, unit)
            return self._put(con, sae_id, unit, "edit", concept=concept,
                             description=description.strip(),
                             namer=cur.namer if cur else "", score=cur.score if cur else None,
                             status="edited", note=note, author=author)

    def _set_status(self, sae_id: str, unit: int, status: str, action: str, note: str,
                    author: str | None) -> FeatureName:
        with self._tx() as con:
            cur = self._get(con, sae_id, unit)
            if cur is None:
                if status == "accepted":
                    raise MedsaeError(f"unit {unit} has no name to accept")
                cur = FeatureName(sae_id, int(unit), "", "", "", None, "proposed", "", "", "")
            return self._put(con, sae_id, unit, action, concept=cur.concept,
                             description=cur.description, namer=cur.namer, score=cur.score,
                             status=status, note=note or cur.note, author=author)

    # ---- reviews --------------------------------------------------------------------------
    def add_review(self, sae_id: str, unit: int, image_key: str, verdict: str, *,
                   note: str = "", author: str | None = None) -> ImageReview:
        """Record (or replace) a verdict on whether ``image_key`` shows ``unit``'s concept."""
        if verdict not in VERDICTS:
            raise MedsaeError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        rv = ImageReview(sae_id, int(unit), str(image_key), verdict, note,
                         author or self.author, _now())
        with self._tx() as con:
            con.execute("INSERT OR REPLACE INTO image_review VALUES (?,?,?,?,?,?,?)",
                        dataclasses.astuple(rv))
        return rv

    def reviews(self, sae_id: str, *, unit: int | None = None,
                image_key: str | None = None) -> list[ImageReview]:
        """Reviews of one SAE, optionally for one unit and/or one image."""
        sql = "SELECT * FROM image_review WHERE sae_id = ?"
        args: list[Any] = [sae_id]
        if unit is not None:
            sql += " AND unit = ?"
            args.append(int(unit))
        if image_key is not None:
            sql += " AND image_key = ?"
            args.append(image_key)
        rows = self._conn().execute(sql + " ORDER BY unit, image_key", args).fetchall()
        return [ImageReview(*r) for r in rows]

    # ---- export / import ------------------------------------------------------------------
    def export_csv(self, sae_id: str, path: str | os.PathLike[str]) -> Path:
        """Write the current names of one SAE as CSV (header ``sae_id,unit,concept,...``)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(("sae_id", *_NAME_COLS))
            for n in self.names(sae_id).values():
                w.writerow((n.sae_id, n.unit, n.concept, n.description, n.namer,
                            "" if n.score is None else repr(float(n.score)), n.status, n.note,
                            n.author, n.updated_utc))
        os.replace(tmp, path)
        return path

    def export_json(self, sae_id: str, path: str | os.PathLike[str]) -> Path:
        """Write names, full history and reviews of one SAE as JSON."""
        path = Path(path)
        con = self._conn()
        hist = con.execute(
            "SELECT unit, action, concept, description, namer, score, status, note, author, "
            "time_utc FROM name_history WHERE sae_id = ? ORDER BY id", (sae_id,)).fetchall()
        doc = {
            "schema_version": SCHEMA_VERSION,
            "kind": "medsae-annotations",
            "sae_id": sae_id,
            "exported_utc": _now(),
            "created_by": f"medsae-desktop {__version__}",
            "names": [_name_dict(n) for n in self.names(sae_id).values()],
            "history": [dict(zip(("unit", *_HIST_FIELDS), h, strict=True))
                        for h in hist],
            "reviews": [dataclasses.asdict(r) for r in self.reviews(sae_id)],
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def import_file(self, path: str | os.PathLike[str], sae_id: str | None = None, *,
                    author: str | None = None) -> int:
        """Import names (and for JSON, reviews) from a CSV or JSON export, or a namer CSV.

        Parameters
        ----------
        path
            ``.json`` from :meth:`export_json`; or a CSV with at least ``unit,concept`` (our
            export, or a namer's ``unit,concept,description,namer,score``).
        sae_id
            Target SAE. Rows whose own ``sae_id`` differs are refused, so names are never
            attached to the wrong weights; a namer CSV (no ``sae_id`` column) needs it.

        Returns
        -------
        Number of names written.
        """
        path = Path(path)
        if not path.is_file():
            raise MedsaeError("file not found", path)
        if path.suffix.lower() == ".json":
            return self._import_json(path, sae_id, author)
        return self._import_csv(path, sae_id, author)

    def _import_csv(self, path: Path, sae_id: str | None, author: str | None) -> int:
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise MedsaeError(f"not a readable CSV ({exc})", path) from exc
        if not rows:
            return 0
        missing = {"unit", "concept"} - set(rows[0])
        if missing:
            raise MedsaeError(f"CSV lacks column(s) {', '.join(sorted(missing))}", path)
        return self._import_rows(path, rows, sae_id, author)

    def _import_json(self, path: Path, sae_id: str | None, author: str | None) -> int:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MedsaeError(f"not a readable JSON file ({exc})", path) from exc
        if not isinstance(doc, dict) or doc.get("kind") != "medsae-annotations":
            raise MedsaeError("not a medsae annotation export", path)
        if int(doc.get("schema_version", 0)) > SCHEMA_VERSION:
            raise MedsaeError(f"export schema_version {doc.get('schema_version')} is newer "
                              "than this program supports", path)
        target = sae_id or doc.get("sae_id")
        if sae_id and doc.get("sae_id") and doc["sae_id"] != sae_id:
            raise MedsaeError(f"names belong to SAE {str(doc['sae_id'])[:12]}, "
                              f"not {sae_id[:12]}", path)
        rows = [dict(r, sae_id=target) for r in doc.get("names", [])]
        n = self._import_rows(path, rows, target, author)
        with self._tx() as con:
            for r in doc.get("reviews", []):
                if r.get("verdict") not in VERDICTS:
                    raise MedsaeError(f"bad review verdict {r.get('verdict')!r}", path)
                con.execute("INSERT OR REPLACE INTO image_review VALUES (?,?,?,?,?,?,?)",
                            (target, int(r["unit"]), str(r["image_key"]), r["verdict"],
                             str(r.get("note", "")), str(r.get("author", "")),
                             str(r.get("created_utc") or _now())))
        return n

    def _import_rows(self, path: Path, rows: list[dict[str, Any]], sae_id: str | None,
                     author: str | None) -> int:
        n = 0
        with self._tx() as con:
            for i, r in enumerate(rows):
                row_sae = (r.get("sae_id") or "").strip() or None
                if row_sae and sae_id and row_sae != sae_id:
                    raise MedsaeError(f"row {i + 2}: names belong to SAE {row_sae[:12]}, "
                                      f"not {sae_id[:12]}", path)
                target = sae_id or row_sae
                if not target:
                    raise MedsaeError("no sae_id column: choose the SAE to import into", path)
                try:
                    unit = int(r["unit"])
                except (TypeError, ValueError) as exc:
                    raise MedsaeError(f"row {i + 2}: bad unit {r.get('unit')!r}", path) from exc
                status = (r.get("status") or "proposed").strip()
                if status not in STATUSES:
                    raise MedsaeError(f"row {i + 2}: unknown status {status!r}", path)
                self._put(con, target, unit, f"import {path.name}",
                          concept=str(r.get("concept") or ""),
                          description=str(r.get("description") or ""),
                          namer=str(r.get("namer") or ""), score=_opt_float(r.get("score")),
                          status=status, note=str(r.get("note") or ""),
                          author=str(r.get("author") or "") or author)
                n += 1
        return n

    # ---- internals ------------------------------------------------------------------------
    def _tx(self) -> "_Transaction":
        return _Transaction(self._conn())

    def _get(self, con: sqlite3.Connection, sae_id: str, unit: int) -> FeatureName | None:
        row = con.execute(
            f"SELECT sae_id, {', '.join(_NAME_COLS)} FROM feature_name "
            "WHERE sae_id = ? AND unit = ?", (sae_id, int(unit))).fetchone()
        return None if row is None else FeatureName(*row)

    def _put(self, con: sqlite3.Connection, sae_id: str, unit: int, action: str, *,
             concept: str, description: str, namer: str, score: float | None, status: str,
             note: str, author: str | None) -> FeatureName:
        assert status in STATUSES, f"bad status {status!r}"
        name = FeatureName(sae_id, int(unit), concept, description, namer, score, status, note,
                           author or self.author, _now())
        con.execute("INSERT OR REPLACE INTO feature_name VALUES (?,?,?,?,?,?,?,?,?,?)",
                    dataclasses.astuple(name))
        self._log(con, sae_id, unit, action, concept, description, namer, score, status, note,
                  name.author)
        return name

    def _log(self, con: sqlite3.Connection, sae_id: str, unit: int, action: str, concept: str,
             description: str, namer: str, score: float | None, status: str, note: str,
             author: str | None) -> None:
        con.execute(
            "INSERT INTO name_history (sae_id, unit, action, concept, description, namer, "
            "score, status, note, author, time_utc) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (sae_id, int(unit), action, concept, description, namer, score, status, note,
             author or self.author, _now()))


class _Transaction:
    """``with`` block running one IMMEDIATE transaction (commit, or rollback on error)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.con.execute("ROLLBACK" if exc_type is not None else "COMMIT")


_HIST_FIELDS = tuple(f.name for f in dataclasses.fields(HistoryEntry))


def _read_version(con: sqlite3.Connection) -> int:
    has_meta = con.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return 0
    row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _opt_float(v: object) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _name_dict(n: FeatureName) -> dict[str, Any]:
    d = dataclasses.asdict(n)
    d.pop("sae_id")
    return d
